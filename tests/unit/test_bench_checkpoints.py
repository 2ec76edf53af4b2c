"""The checkpoint sweep's arithmetic: its rows, the chosen interval and the table."""
from streaming.bench import checkpoints


def at_half(p50: float) -> dict:
    return {"offered_per_s": 40.0, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0, "stages_ms": {"outside": p50 / 2}}


def report(*rows) -> dict:
    rows = [checkpoints.row("at_least_once", None, at_half(300), 80.0, 80.0), *rows]
    return {"rows": rows, "choice": checkpoints.choose(rows)}


def test_the_longest_interval_meeting_both_targets_is_chosen():
    rows = report(checkpoints.row("exactly_once", 1000, at_half(900), 70.0, 80.0),   # 0.875: too slow
                  checkpoints.row("exactly_once", 2000, at_half(1400), 76.0, 80.0),  # meets both
                  checkpoints.row("exactly_once", 5000, at_half(2900), 79.0, 80.0))  # p50 too long
    assert rows["choice"] == 2000
    assert rows["rows"][2]["peak_vs_at_least_once"] == 0.95


def test_no_interval_meeting_the_targets_is_said_so():
    text = checkpoints.table(report(checkpoints.row("exactly_once", 10000, at_half(5700), 80.0, 80.0)))
    assert "| exactly_once | 10 s | 40.0/s | 5700 | 11400 | 2850 | 80.0 | 1.00× |" in text
    assert text.endswith("none of those measured")


def test_a_run_that_measured_nothing_prints_dashes():
    text = checkpoints.table(report(checkpoints.row("exactly_once", 1000, {}, None, 80.0)))
    assert "| exactly_once | 1 s | –/s | – | – | – | – | –× |" in text


def test_every_interval_becomes_an_exactly_once_config_and_an_out_of_range_one_is_refused():
    import pytest

    from streaming.config import ConfigError, PipelineConfig

    base = PipelineConfig(delivery_guarantee="at_least_once")
    assert [(c.checkpoint_interval_ms, c.delivery_guarantee) for c in checkpoints.configs(base, (1000, 5000))] == \
        [(1000, "exactly_once"), (5000, "exactly_once")]
    with pytest.raises(ConfigError) as refused:
        checkpoints.configs(base, (1000, 10**20))
    assert refused.value.field == "checkpoint_interval_ms"
