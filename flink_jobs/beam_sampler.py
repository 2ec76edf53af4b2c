"""PyFlink's Python worker without the thread Beam starts and joins at every bundle.

Beam's `BundleProcessor` starts its `StateSampler` when a bundle starts, and the sampler starts a
thread that sleeps 2 ms, then 1.2 times longer each time (up to 200 ms), and at each wake-up
charges the elapsed time to the running step's execution-time counter. When the bundle ends,
`stop` joins that thread, so it waits for the current sleep to end: the bundle's results are held,
and the TaskManager's operator thread, which waits for the bundle, with them. Measured in-process
(apache-beam 2.61, `tests/unit/test_beam_sampler.py` runs the same cycle): 1-5 ms of waiting and
0.2-0.7 ms of CPU per bundle of 10-60 ms.

Flink reads nothing the thread measures: only user metrics reach it (`FlinkMetricContainer`
keeps `beam:metric:user` URNs), and the lull log that reads it fires after five minutes of one
bundle. `skip_sampler_thread` makes the sampler's `start` and `stop` do what Beam's do, less the
thread: the sampler still becomes its thread's current tracker, so metrics containers and scoped
states work as before, and Beam's execution-time counters stay at zero.
"""
from __future__ import annotations

import threading
from typing import Any


def skip_sampler_thread() -> None:
    """From now on in this process, a bundle starts and stops no sampler thread (idempotent).
    Beam is imported here, not with the job module: importing `apache_beam` loads boto3 and more,
    which the job's client must not pay for (tests/unit/test_engine_imports.py); the Python
    worker that calls this has Beam loaded already."""
    from apache_beam.runners.worker import statesampler

    def start(self: Any) -> None:  # Beam's StateSampler.start, less the thread
        self.tracked_thread = threading.current_thread()
        statesampler.set_current_tracker(self)
        self.started = True

    def stop(self: Any) -> None:  # Beam's StateSampler.stop, less the join
        statesampler.set_current_tracker(None)
        self.finished = True

    statesampler.StateSampler.start = start
    statesampler.StateSampler.stop = stop
