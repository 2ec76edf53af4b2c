from streaming.events import ErrorResult, Label, Prediction
from streaming.metrics import PipelineStats, all_error_codes


class Group:
    """A stand-in for a Flink metric group: records the gauges registered on it."""

    def __init__(self, prefix=""):
        self.prefix, self.gauges = prefix, {}

    def add_group(self, name):
        child = Group(f"{self.prefix}{name}.")
        child.gauges = self.gauges
        return child

    def gauge(self, name, fn):
        self.gauges[self.prefix + name] = fn


def test_every_error_code_is_known():
    codes = all_error_codes()
    assert {"invalid_event", "object_not_found", "corrupt_image", "inference_unavailable",
            "request_timeout", "internal_error"} <= set(codes)


def test_gauges_follow_results():
    stats, group = PipelineStats(), Group()
    stats.register(group, in_flight=lambda: 7)
    for total in (10.0, 20.0, 30.0):
        stats.record(Prediction("a", "u", "m", (Label("x", 1, 0.5),), {"total": total}, batch_size=4))
    stats.record(ErrorResult("b", "u", "object_not_found", "fetch", "missing"))
    read = {name: fn() for name, fn in group.gauges.items()}
    assert read["results"] == 4 and read["predictions"] == 3 and read["errors"] == 1
    assert read["errors_by_code.object_not_found"] == 1 and read["errors_by_code.corrupt_image"] == 0
    assert read["in_flight"] == 7
    assert read["batch_size_mean_x100"] == 400
    assert read["latency_ms.total_p50"] == 20 and read["latency_ms.total_p99"] == 30


def test_gauges_read_a_snapshot_refreshed_at_most_once_per_refresh_s(monkeypatch):
    from streaming import metrics

    clock = [100.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    stats, group = PipelineStats(), Group()
    stats.register(group, in_flight=lambda: 0)
    stats.record(Prediction("a", "u", "m", (), {"total": 10.0}, batch_size=2))
    assert group.gauges["latency_ms.total_p50"]() == 10
    stats.record(Prediction("b", "u", "m", (), {"total": 50.0}, batch_size=6))
    clock[0] += metrics.REFRESH_S / 2  # every gauge of a bundle end within REFRESH_S reads the same snapshot
    assert group.gauges["latency_ms.total_p99"]() == 10 and group.gauges["batch_size_mean_x100"]() == 200
    clock[0] += metrics.REFRESH_S
    assert group.gauges["latency_ms.total_p99"]() == 50 and group.gauges["batch_size_mean_x100"]() == 400
