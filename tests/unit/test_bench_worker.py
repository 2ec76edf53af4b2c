"""`imgstream bench worker`'s plan and table (the run itself: tests/integration/test_bench_worker_on_stack.py)."""
import pytest
from typer.testing import CliRunner

from streaming.bench import worker
from streaming.cli.bench import bench_app


@pytest.mark.parametrize("args, option", [(["--requests", "0"], "--requests"), (["--rounds", "0"], "--rounds"),
                                          (["--requests", "1000000"], "--requests")])
def test_a_plan_out_of_bounds_is_refused_naming_its_option_before_anything_runs(args, option):
    result = CliRunner().invoke(bench_app, ["worker", *args])
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_the_table_puts_the_operator_beside_the_decode_alone():
    report = {"median": {"operator_ms": 2.85, "decoders_ms": 4.73, "images_per_s": 61.7, "errors": 0},
              "decode_alone_ms": 3.89, "operator_beyond_decode_vs_decode_alone": 0.73,
              "profile": {"stages": [{"stage": "fetch", "samples": 75, "share": 0.322,
                                      "top": [["sigv4_headers (streaming/s3_get.py)", 6]]}]}}
    text = worker.table(report)
    assert "| decode alone (this process, the same photos) | 3.89 |" in text
    assert "| **2.85** |" in text and "| operator beyond decoding ÷ decode alone | 0.73× |" in text
    assert "| fetch | 75 |" in text


def test_the_published_run_gives_the_readme_table():
    import json
    from pathlib import Path

    root = Path(__file__).parents[2]
    report = json.loads((root / "streaming" / "bench" / "results" / "worker-small.json").read_text())
    assert report["median"]["errors"] == 0 and report["profile"]["stages"]
    lines = [line for line in worker.table(report).splitlines() if line.startswith("| ")]
    assert len(lines) > 10 and all(line in (root / "README.md").read_text() for line in lines)
