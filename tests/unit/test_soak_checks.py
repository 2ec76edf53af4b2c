"""The soak's verdict on latency: a short pause is not starvation, a bomb that stalls its
neighbours for seconds is."""
import dataclasses

from streaming.bench.soak import SoakReport, SoakSettings


def report(clean_p99: float, hostile_p99: float) -> SoakReport:
    return SoakReport(settings=dataclasses.asdict(SoakSettings()), events=10, results=10, restarts=0, exceptions=0,
                      clean={"count": 5, "p50_ms": 80, "p99_ms": clean_p99},
                      hostile={"count": 5, "p50_ms": 80, "p99_ms": hostile_p99})


def latency_check(r: SoakReport):
    (check,) = [c for c in r.checks() if c.name.startswith("good p99")]
    return check


def test_a_pause_under_the_floor_passes_and_says_what_it_was_divided_by():
    check = latency_check(report(109.1, 579.0))  # the end-of-suite run that failed with a 250-ms floor
    assert check.ok and check.value == "579.0 / 109.1 ms (counted as at least 500) = 1.16"


def test_good_events_stalled_for_seconds_fail():
    assert not latency_check(report(109.1, 2500.0)).ok
    assert not latency_check(report(900.0, 1900.0)).ok  # above the floor the ratio is the clean p99's
