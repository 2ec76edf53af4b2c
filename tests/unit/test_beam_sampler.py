"""flink_jobs.beam_sampler on apache_beam's own StateSampler, through the cycle BundleProcessor
runs per bundle: start, the step's scoped state, stop, reset, and the same sampler again."""
import threading

import pytest
from apache_beam.metrics.execution import MetricsContainer, MetricsEnvironment
from apache_beam.runners.worker import statesampler
from apache_beam.utils.counters import CounterFactory

from flink_jobs.beam_sampler import skip_sampler_thread


@pytest.fixture()
def beam_as_shipped(monkeypatch):
    """Beam's own start and stop, put back after the test (the patch is process-wide)."""
    monkeypatch.setattr(statesampler.StateSampler, "start", statesampler.StateSampler.start)
    monkeypatch.setattr(statesampler.StateSampler, "stop", statesampler.StateSampler.stop)


def bundles(n: int) -> tuple[int, list[MetricsContainer | None]]:
    """n bundles on one sampler, as BundleProcessor runs them: (the most threads alive during a
    bundle beyond those before it, the current metrics container inside each bundle's step)."""
    sampler = statesampler.StateSampler("fnapi-step-1", CounterFactory())
    container = MetricsContainer("step")
    state = sampler.scoped_state("step", "process", metrics_container=container)
    before, extra, seen = threading.active_count(), 0, []
    for _ in range(n):
        sampler.start()
        with state:
            seen.append(MetricsEnvironment.current_container())
            extra = max(extra, threading.active_count() - before)
        sampler.stop_if_still_running()
        assert statesampler.get_current_tracker() is None
        sampler.reset()
    return extra, [c if c is container else None for c in seen]


def test_beam_starts_a_thread_per_bundle_without_the_patch(beam_as_shipped):
    extra, containers = bundles(3)
    assert extra == 1  # the sampler's thread: what the patch removes
    assert None not in containers


def test_no_thread_per_bundle_and_the_step_still_has_its_metrics_container(beam_as_shipped):
    skip_sampler_thread()
    skip_sampler_thread()  # idempotent
    extra, containers = bundles(50)
    assert extra == 0
    assert None not in containers  # gauges and counters still land in the step


def test_a_gauge_set_in_a_bundle_is_reported(beam_as_shipped):
    from apache_beam.metrics import Metrics

    skip_sampler_thread()
    sampler = statesampler.StateSampler("fnapi-step-1", CounterFactory())
    container = MetricsContainer("step")
    state = sampler.scoped_state("step", "process", metrics_container=container)
    sampler.start()
    with state:
        Metrics.gauge("ns", "g").set(7)
    sampler.stop_if_still_running()
    (cell,) = container.metrics.values()
    assert cell.get_cumulative().value == 7
