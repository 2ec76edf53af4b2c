"""`imgstream bench e2e --smoke` against the real stack: every phase runs (the work alone, the naive
consumer with its own Triton, one pipeline job), and the table, JSON and PNG have their shape.

Never a timing assertion: a seconds-long run on a shared machine measures nothing.
"""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streaming.bench import naive
from streaming.cli.bench import bench_app
from streaming.stack import process


@pytest.fixture(scope="module")
def smoke(prepared, layout, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    result = CliRunner().invoke(bench_app, ["e2e", "--smoke", "--out", str(out), "--json", str(out / "e2e.json")])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "e2e.json").read_text()), out


def test_every_phase_ran_and_the_json_has_its_shape(smoke, layout):
    _, report, out = smoke
    assert report["benchmark"] == "e2e" and report["mode"] == "smoke"
    assert report["command"].startswith("imgstream bench e2e")
    pre, inference = report["alone"]["preprocess"], report["alone"]["inference"]
    assert pre["cpu_s_per_image"] > 0 and pre["images_per_core_s"] > 0
    assert inference[report["config"]["model_name"]]["triton_cpu_s_per_image"] > 0
    assert report["alone"]["ideal_images_per_s"][report["config"]["model_name"]] > 0
    first = report["naive"]["1"]
    assert first["results"] == first["requests"] and first["errors"] == 0
    main = report["runs"]["main"]
    assert "skipped" not in main, main.get("skipped")
    for row in (main["peak"], *main["curve"], main["memory"]):
        assert row["results"] == row["requests"] and row["errors"] == 0
        assert set(row["stages_ms"]) == {"queue", "fetch", "decode", "resize", "infer", "operator_other", "outside"}
        assert row["cpu_s"]["python_workers"] > 0 and row["cpu_s"]["triton"] > 0
    assert [row["fraction"] for row in main["curve"]] == [0.5, 1.0]
    assert set(main["memory"]["rss_growth"]) == {"taskmanager_jvm", "python_workers", "triton"}
    assert all(s["taskmanager_jvm"] > 0 and s["triton"] > 0 for s in main["memory"]["rss_mib"])
    assert {"pipeline_vs_ideal", "pipeline_vs_naive", "parallelism_2_vs_1"} <= set(report["ratios"])
    assert all(set(t) == {"target", "value", "met"} for t in report["targets"])
    assert [s["scenario"] for s in report["estimate"]["scenarios"]] == ["10M images/day", "1,000 images/s sustained"]
    assert (out / report["plot"].split("/")[-1]).read_bytes()[:4] == b"\x89PNG"


def test_table_and_targets_are_printed(smoke):
    result, _, _ = smoke
    assert "| pipeline, parallelism 1, efficientnet_lite0, at-least-once: burst (peak) |" in result.stdout
    assert "pipeline ÷ naive (1 consumer)" in result.stdout and "pipeline ÷ ideal" in result.stdout
    assert "10M images/day" in result.stdout
    assert sum(line.startswith(("met ", "MISSED ")) for line in result.stdout.splitlines()) == 7


def test_nothing_is_left_running(smoke, layout):
    from streaming.ops import jobs

    assert process.running_pid(layout.run_dir, naive.SERVICE_NAME) is None
    assert not [j for j in jobs.list_jobs(layout) if j.name.startswith("bench-e2e-") and j.state == "RUNNING"]
