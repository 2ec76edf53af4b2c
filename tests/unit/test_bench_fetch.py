"""`imgstream bench fetch`'s plan and table (the run itself: tests/integration/test_bench_fetch_on_stack.py)."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streaming.bench import fetch
from streaming.cli.bench import bench_app

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("args, option", [(["--gets", "0"], "--gets"), (["--rounds", "0"], "--rounds"),
                                          (["--gets", "1000000"], "--gets"), (["--rounds", "21"], "--rounds")])
def test_a_plan_out_of_bounds_is_refused_naming_its_option_before_anything_runs(args, option):
    result = CliRunner().invoke(bench_app, ["fetch", *args])
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_the_table_gives_each_fetch_beside_boto3():
    report = {"workload": "small", "photos": 30, "mean_kb": 37.0, "gets": 2000, "rounds": 3,
              "rows": [{"variant": fetch.BASELINE, "cpu_ms_per_get": 1.2, "vs_baseline": 1.0},
                       {"variant": fetch.VARIANTS[1], "cpu_ms_per_get": 0.24, "vs_baseline": 0.2}]}
    text = fetch.table(report)
    assert "| boto3 get_object | 1.200 | 1.00× |" in text and "| Fetcher.fetch (the job's) | 0.240 | 0.20× |" in text


def test_the_published_run_gives_the_readme_table():
    report = json.loads((ROOT / "streaming" / "bench" / "results" / "fetch-small.json").read_text())
    assert [row["variant"] for row in report["rows"]] == list(fetch.VARIANTS)
    lines = [line for line in fetch.table(report).splitlines() if line.startswith("| ")]
    assert len(lines) == 3 and all(line in (ROOT / "README.md").read_text() for line in lines)
