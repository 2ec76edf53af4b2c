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

from apache_beam.runners.worker import statesampler


def _start(self: statesampler.StateSampler) -> None:
    self.tracked_thread = threading.current_thread()
    statesampler.set_current_tracker(self)
    self.started = True


def _stop(self: statesampler.StateSampler) -> None:
    statesampler.set_current_tracker(None)
    self.finished = True


def skip_sampler_thread() -> None:
    """From now on in this process, a bundle starts and stops no sampler thread (idempotent)."""
    statesampler.StateSampler.start = _start
    statesampler.StateSampler.stop = _stop
