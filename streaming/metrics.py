"""Pipeline statistics that the Flink web UI shows, as gauges of one metric group.

PyFlink's counters are Beam metrics bound to the bundle thread; our results complete on the
async I/O thread, so we count here (thread-safe) and Flink polls these values as gauges.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from streaming.errors import PipelineError
from streaming.events import ErrorResult, Result

STAGES = ("queue", "fetch", "decode", "resize", "infer", "total")
WINDOW = 2048  # latest results the latency percentiles are taken over


def all_error_codes() -> list[str]:
    """Every stable error code, from the error tree."""
    codes, todo = {"internal_error"}, [PipelineError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo += cls.__subclasses__()
    return sorted(codes)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class PipelineStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter({code: 0 for code in all_error_codes()})
        self._latency = {stage: deque(maxlen=WINDOW) for stage in STAGES}
        self._batch_sizes: deque[float] = deque(maxlen=WINDOW)

    def record(self, result: Result) -> None:
        with self._lock:
            self.counts["results"] += 1
            if isinstance(result, ErrorResult):
                self.counts["errors"] += 1
                self.errors[result.code] += 1
            else:
                self.counts["predictions"] += 1
                self._batch_sizes.append(result.batch_size)
            for stage, value in result.timings_ms.items():
                if stage in self._latency:
                    self._latency[stage].append(value)

    def latency_ms(self, stage: str, q: float) -> float:
        with self._lock:
            return percentile(list(self._latency[stage]), q)

    def mean_batch_size(self) -> float:
        with self._lock:
            sizes = list(self._batch_sizes)
        return sum(sizes) / len(sizes) if sizes else 0.0

    def register(self, group: Any, in_flight) -> None:
        """Gauges on a Flink metric group (integers: Flink's Python gauges take ints)."""
        for name in ("results", "predictions", "errors"):
            group.gauge(name, lambda name=name: self.counts[name])
        codes = group.add_group("errors_by_code")
        for code in self.errors:
            codes.gauge(code, lambda code=code: self.errors[code])
        group.gauge("in_flight", in_flight)
        group.gauge("batch_size_mean_x100", lambda: int(self.mean_batch_size() * 100))
        latency = group.add_group("latency_ms")
        for stage in STAGES:
            for label, q in (("p50", 0.5), ("p99", 0.99)):
                latency.gauge(f"{stage}_{label}", lambda s=stage, q=q: int(self.latency_ms(s, q)))
