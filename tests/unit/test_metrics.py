"""The operator's gauges, on PyFlink's own metric group and reported as its bundle thread reports
them at a bundle end: PyFlink's gauge update, then the Beam monitoring infos the TaskManager gets."""
import json
import threading
from contextlib import contextmanager

import pytest
from apache_beam.metrics import monitoring_infos
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.runners.worker import statesampler
from apache_beam.utils.counters import CounterFactory
from pyflink.fn_execution.datastream.process.operations import Operation
from pyflink.fn_execution.metrics.process.metric_impl import GenericMetricGroup

from streaming.events import ErrorResult, Label, Prediction
from streaming.metrics import STAGES, PipelineStats, all_error_codes

FIXED_GAUGES = 3 + 2 + 2 * len(STAGES)  # results, predictions, errors; in_flight, batch size; latencies


@contextmanager
def bundle_thread():
    """A Beam metrics container in scope, as on PyFlink's bundle thread while it runs an operator."""
    container = MetricsContainer("classify")
    sampler = statesampler.StateSampler("stage", CounterFactory())
    sampler.start()
    try:
        with sampler.scoped_state("classify", "process", metrics_container=container):
            yield container
    finally:
        sampler.stop()


def bundle_end(root: GenericMetricGroup, container: MetricsContainer) -> dict[str, int]:
    """One bundle end: every gauge read and set (PyFlink), then reported (Beam); name -> value."""
    Operation.__new__(Operation)._update_gauge(root)
    reported = {}
    for info in container.to_runner_api_monitoring_infos("classify").values():
        groups = json.loads(info.labels["NAMESPACE"])
        name = ".".join(groups[:len(groups) // 2][1:] + [info.labels["NAME"]])  # without "imgstream"
        reported[name] = monitoring_infos.extract_gauge_value(info)[1]
    return reported


def registered(in_flight=lambda: 0) -> tuple[PipelineStats, GenericMetricGroup]:
    stats, root = PipelineStats(), GenericMetricGroup(None, None)
    stats.register(root.add_group("imgstream"), in_flight=in_flight)
    return stats, root


def test_every_error_code_is_known():
    codes = all_error_codes()
    assert {"invalid_event", "object_not_found", "corrupt_image", "inference_unavailable",
            "request_timeout", "internal_error"} <= set(codes)


def test_gauges_follow_results():
    stats, root = registered(in_flight=lambda: 7)
    for total in (10.0, 20.0, 30.0):
        stats.record(Prediction("a", "u", "m", (Label("x", 1, 0.5),), {"total": total}, batch_size=4))
    stats.record(ErrorResult("b", "u", "object_not_found", "fetch", "missing"))
    with bundle_thread() as container:
        read = bundle_end(root, container)
    assert read["results"] == 4 and read["predictions"] == 3 and read["errors"] == 1
    assert read["errors_by_code.object_not_found"] == 1
    assert read["in_flight"] == 7
    assert read["batch_size_mean_x100"] == 400
    assert read["latency_ms.total_p50"] == 20 and read["latency_ms.total_p99"] == 30


def test_a_code_is_reported_from_the_bundle_end_after_its_first_error():
    stats, root = registered()
    with bundle_thread() as container:
        first = bundle_end(root, container)
        assert len(first) == FIXED_GAUGES and not any(name.startswith("errors_by_code.") for name in first)
        stats.record(ErrorResult("b", "u", "corrupt_image", "decode", "bad"))
        stats.record(ErrorResult("c", "u", "corrupt_image", "decode", "bad"))
        second = bundle_end(root, container)
        assert len(second) == FIXED_GAUGES + 1 and second["errors_by_code.corrupt_image"] == 2
        stats.record(ErrorResult("d", "u", "request_timeout", "infer", "slow"))
        third = bundle_end(root, container)
    assert third["errors_by_code.corrupt_image"] == 2 and third["errors_by_code.request_timeout"] == 1
    assert third["errors"] == 3 and len(third) == FIXED_GAUGES + 2


def test_results_recorded_while_bundles_end_register_every_code_once():
    """The event loop's thread records while the bundle thread reports: no gauge is lost or
    registered twice, and the group is never changed while PyFlink iterates it."""
    stats, root = registered()
    codes = all_error_codes()
    done = threading.Event()

    def record():
        for i in range(4000):
            stats.record(ErrorResult(str(i), "u", codes[i % len(codes)], "fetch", "x"))
        done.set()

    writer = threading.Thread(target=record)
    with bundle_thread() as container:
        writer.start()
        while not done.is_set():
            bundle_end(root, container)
        writer.join()
        read = bundle_end(root, container)
    assert {name for name in read if name.startswith("errors_by_code.")} == {f"errors_by_code.{c}" for c in codes}
    assert sum(read[f"errors_by_code.{c}"] for c in codes) == read["errors"] == 4000


def test_gauges_read_a_snapshot_refreshed_at_most_once_per_refresh_s(monkeypatch):
    from streaming import metrics

    clock = [100.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    stats, root = registered()
    with bundle_thread() as container:
        stats.record(Prediction("a", "u", "m", (), {"total": 10.0}, batch_size=2))
        assert bundle_end(root, container)["latency_ms.total_p50"] == 10
        stats.record(Prediction("b", "u", "m", (), {"total": 50.0}, batch_size=6))
        clock[0] += metrics.REFRESH_S / 2  # every gauge of a bundle end within REFRESH_S reads the same snapshot
        read = bundle_end(root, container)
        assert read["latency_ms.total_p99"] == 10 and read["batch_size_mean_x100"] == 200
        clock[0] += metrics.REFRESH_S
        read = bundle_end(root, container)
    assert read["latency_ms.total_p99"] == 50 and read["batch_size_mean_x100"] == 400


@pytest.mark.parametrize("code", ["object_not_found", "not_a_known_code"])
def test_any_code_gets_a_gauge(code):
    stats, root = registered()
    stats.record(ErrorResult("b", "u", code, "fetch", "x"))
    with bundle_thread() as container:
        assert bundle_end(root, container)[f"errors_by_code.{code}"] == 1


@pytest.mark.parametrize("decode_ms", [float("nan"), float("inf"), 1e300, -1e30])
def test_a_time_no_request_takes_is_left_out_not_reported(decode_ms):
    # a gauge that raises fails the bundle, and so the task: a decoder process reporting such a time
    # (out of step, or taken over by its image) would fail the job again on every replay
    stats, root = registered()
    stats.record(Prediction("a", "u", "m", (), {"decode": decode_ms, "total": 10.0}, batch_size=1))
    with bundle_thread() as container:
        read = bundle_end(root, container)
    assert read["latency_ms.decode_p50"] == read["latency_ms.decode_p99"] == 0
    assert read["latency_ms.total_p99"] == 10 and read["results"] == 1
