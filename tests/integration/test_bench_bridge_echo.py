"""`imgstream bench bridge` against the real stack: the echo job runs on Flink, answers every
request, and the report has its shape. Never a timing assertion."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streaming.cli.bench import bench_app


def test_the_echo_job_answers_every_request_and_the_cpu_is_split(prepared, tmp_path):
    path = tmp_path / "bridge.json"
    result = CliRunner().invoke(bench_app, ["bridge", "--operators", "stats", "--times", "10", "--rate", "20",
                                            "--seconds", "5", "--burst", "300", "--json", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    (row,) = report["rows"]
    assert "skipped" not in row, row.get("skipped")
    assert row["variant"] == "stats, 10 ms bundles" and row["results"] == 100  # the async echo with classify's gauges
    assert row["burst_per_s"] > 0
    assert row["ms_per_s"]["python_worker"] > 0  # process mode: the Beam harness in a worker process
    parts = sum(row["ms_per_s"][k] for k in ("taskmanager_jvm", "python_worker", "jobmanager"))
    assert row["ms_per_s"]["job"] == pytest.approx(parts, abs=0.01)
    assert "| stats, 10 ms bundles |" in result.output
