"""Pipeline statistics that the Flink web UI shows, as gauges of one metric group.

PyFlink's counters are Beam metrics bound to the bundle thread; our results complete on the
async I/O thread, so we count here (thread-safe) and Flink polls these values as gauges.

PyFlink evaluates every gauge at the end of every bundle (up to 100 times a second at the default
`bundle_time_ms` of 10), so the latency percentiles and the mean batch size are computed at most once
per `REFRESH_S` (one sort per stage) and the gauges read that snapshot: sorting the windows for
each gauge at each bundle end cost 2.2 ms per bundle here, ~1 ms of CPU per image at 35 images/s.

Every registered gauge is also reported at every bundle end, as a Beam monitoring info that the
TaskManager decodes again (~17 µs of the Python worker's CPU per gauge per bundle, and the JVM's
share): so an error code's gauge is registered when its first error is, not up front for all 23
codes. `register` makes 17 gauges; `errors_by_code.<code>` appears with the code's first error.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

from streaming.errors import PipelineError
from streaming.events import ErrorResult, Result

STAGES = ("queue", "fetch", "decode", "resize", "infer", "total")
WINDOW = 2048  # latest results the latency percentiles are taken over
REFRESH_S = 1.0  # the percentiles and the mean batch size are recomputed at most this often
QUANTILES = (("p50", 0.5), ("p99", 0.99))
# A time beyond this, negative or NaN is no request's (a decoder process sends any number it likes):
# left out, since a gauge that raises (int() of it, or Beam's int64) fails the bundle and the task.
MAX_LATENCY_MS = 1e9


def all_error_codes() -> list[str]:
    """Every stable error code, from the error tree."""
    codes, todo = {"internal_error"}, [PipelineError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo += cls.__subclasses__()
    return sorted(codes)


def percentile(values: list[float], q: float) -> float:
    return _at(sorted(values), q)


def _at(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class PipelineStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._unregistered: list[str] = []  # codes whose first error came after the last registration
        self._codes: Any = None  # the errors_by_code metric group, once registered
        self._latency = {stage: deque(maxlen=WINDOW) for stage in STAGES}
        self._batch_sizes: deque[float] = deque(maxlen=WINDOW)
        self._snapshot: dict[str, float] = {}
        self._snapshot_at = float("-inf")  # time.monotonic() of the snapshot

    def record(self, result: Result) -> None:
        with self._lock:
            self.counts["results"] += 1
            if isinstance(result, ErrorResult):
                self.counts["errors"] += 1
                if not self.errors[result.code]:
                    self._unregistered.append(result.code)
                self.errors[result.code] += 1
            else:
                self.counts["predictions"] += 1
                self._batch_sizes.append(result.batch_size)
            for stage, value in result.timings_ms.items():
                if stage in self._latency and 0.0 <= value <= MAX_LATENCY_MS:
                    self._latency[stage].append(value)

    def latency_ms(self, stage: str, label: str) -> float:
        """The stage's latency percentile `label` ("p50", "p99") as of the last snapshot."""
        return self._current()[f"{stage}_{label}"]

    def mean_batch_size(self) -> float:
        return self._current()["batch_size_mean"]

    def _current(self) -> dict[str, float]:
        """The snapshot, recomputed when older than REFRESH_S."""
        now = time.monotonic()
        if now - self._snapshot_at >= REFRESH_S:
            with self._lock:
                windows = {stage: list(values) for stage, values in self._latency.items()}
                sizes = list(self._batch_sizes)
            snapshot = {"batch_size_mean": sum(sizes) / len(sizes) if sizes else 0.0}
            for stage, values in windows.items():
                values.sort()
                snapshot.update({f"{stage}_{label}": _at(values, q) for label, q in QUANTILES})
            self._snapshot, self._snapshot_at = snapshot, now
        return self._snapshot

    def register(self, group: Any, in_flight) -> None:
        """Gauges on a Flink metric group (integers: Flink's Python gauges take ints)."""
        for name in ("results", "predictions"):
            group.gauge(name, lambda name=name: self.counts[name])
        group.gauge("errors", self._errors)
        self._codes = group.add_group("errors_by_code")
        group.gauge("in_flight", in_flight)
        group.gauge("batch_size_mean_x100", lambda: int(self.mean_batch_size() * 100))
        latency = group.add_group("latency_ms")
        for stage in STAGES:
            for label, _ in QUANTILES:
                latency.gauge(f"{stage}_{label}", lambda s=stage, label=label: int(self.latency_ms(s, label)))

    def _errors(self) -> int:
        """The `errors` gauge; first registers the gauges of the codes new since the last call.
        PyFlink calls gauges on its bundle thread, one group at a time, and this gauge is not in
        the group it adds to: a code's gauge is never added while PyFlink iterates that group."""
        with self._lock:
            new, self._unregistered = self._unregistered, []
            errors = self.counts["errors"]
        for code in new:
            self._codes.gauge(code, lambda code=code: self.errors[code])
        return errors
