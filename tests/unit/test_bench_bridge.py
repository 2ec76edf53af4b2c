"""The bridge benchmark's arithmetic: its variants, the CPU split and the table."""
import pytest

from streaming.bench import bridge
from streaming.config import ConfigError, PipelineConfig


def test_process_mode_operators_run_at_every_bundle_time_and_thread_mode_once():
    chosen = bridge.variants(("async", "thread", "map"), (10, 50))
    assert [(v.operator, v.bundle_time_ms) for v in chosen] == \
        [("async", 10), ("async", 50), ("map", 10), ("map", 50), ("thread", None)]
    assert chosen[-1].label == "thread (thread mode)" and chosen[0].label == "async, 10 ms bundles"


def test_each_variant_gets_an_at_least_once_config_and_a_bad_bundle_time_is_refused():
    base = PipelineConfig(delivery_guarantee="exactly_once", bundle_time_ms=25)
    configs = bridge.configs(base, bridge.variants(("async", "thread"), (50,)))
    assert [(c.bundle_time_ms, c.delivery_guarantee) for c in configs] == [(50, "at_least_once"),
                                                                           (25, "at_least_once")]
    with pytest.raises(ConfigError) as refused:
        bridge.configs(base, bridge.variants(("async",), (10**20,)))
    assert refused.value.field == "bundle_time_ms"


def test_the_split_takes_the_jit_out_of_the_jvms_and_adds_up_the_job():
    cpu = {"taskmanager_jvm": 3.0, "python_workers": 1.5, "flink-jm": 0.5, "kafka": 9.0}
    within = {"taskmanager_jvm/jit": 1.0, "flink-jm/jit": 0.25, "python_workers/decoders": 0.0}
    per_s = bridge.split(cpu, within, 10.0)
    assert per_s == {"taskmanager_jvm": 200.0, "python_worker": 150.0, "jobmanager": 25.0, "job": 375.0,
                     "jit": 125.0}
    assert bridge.split(cpu, {}, 1000)["job"] == 5.0  # ms per request, nothing to take out


def test_the_table_has_a_row_per_variant_and_says_why_one_was_skipped():
    measured = {"variant": "async, 10 ms bundles", "idle_ms_per_s": {"job": 70.0}, "p50_ms": 22.0, "p99_ms": 60.0,
                "ms_per_s": {"job": 300.0, "taskmanager_jvm": 150.0, "python_worker": 140.0, "jobmanager": 10.0,
                             "jit": 40.0},
                "ms_per_request": {"job": 7.5}, "burst_per_s": 3000.0, "burst_ms_per_request": {"job": 0.18}}
    report = {"plan": {"rate": 40.0}, "rows": [measured, {"variant": "thread (thread mode)", "skipped": "no"}]}
    lines = bridge.table(report).splitlines()
    assert lines[0].startswith("| operator | idle, job ms/s | at 40/s: p50 / p99 ms |")
    assert lines[2] == "| async, 10 ms bundles | 70 | 22 / 60 | 300 (150 + 140 + 10) | 40 | 7.50 | 3000 | 0.180 |"
    assert lines[3].startswith("| thread (thread mode) | skipped: no |")
    assert all(line.count("|") == 9 for line in lines)


def test_a_thread_mode_job_that_did_not_start_names_the_likely_cause():
    error = RuntimeError("job abc is RESTARTING, not running; see the Flink web UI\nmore")
    thread = bridge.skip_reason(bridge.Variant("thread", None), error)
    assert thread.startswith("job abc is RESTARTING, not running") and "once per TaskManager" in thread
    assert bridge.skip_reason(bridge.Variant("async", 10), error) == \
        "job abc is RESTARTING, not running; see the Flink web UI"


@pytest.mark.parametrize("field, kwargs", [("rate", {"rate": 1e308}), ("rate", {"rate": float("nan")}),
                                           ("seconds", {"seconds": 0}), ("seconds", {"seconds": 1e9}),
                                           ("burst", {"burst": 0}), ("burst", {"burst": 10**12})])
def test_a_plan_out_of_bounds_names_its_field(field, kwargs):
    with pytest.raises(bridge.PlanError) as raised:
        bridge.Plan(**kwargs)
    assert raised.value.field == field


def test_the_cli_refuses_an_absurd_rate_as_an_option_error():
    from typer.testing import CliRunner

    from streaming.cli.bench import bench_app

    result = CliRunner().invoke(bench_app, ["bridge", "--rate", "1e308"])
    assert result.exit_code == 2 and "--rate" in result.output and "10000" in result.output, result.output
