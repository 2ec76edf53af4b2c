"""Timing loops for the benchmarks: CPU time of this process (robust on a shared machine) and
wall time, and a pool of worker processes started together for scaling runs."""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Sample:
    images: int
    megapixels: float
    cpu_s: float
    wall_s: float

    @property
    def per_core(self) -> float:
        """Images per CPU-second of this process: images/s on one core."""
        return self.images / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def per_wall(self) -> float:
        return self.images / self.wall_s if self.wall_s > 0 else 0.0


def measure(calls: Sequence[tuple[Callable[[], object], float]], min_seconds: float,
            min_images: int = 2) -> Sample:
    """Call each (call, megapixels) in turn, round after round, until `min_seconds` of CPU time
    and `min_images` calls have passed; every round covers all the calls."""
    images, megapixels = 0, 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while True:
        for call, mp in calls:
            call()
            images += 1
            megapixels += mp
        cpu = time.process_time() - cpu0
        if cpu >= min_seconds and images >= min_images:
            return Sample(images, megapixels, cpu, time.perf_counter() - wall0)


def _decode_worker(paths: list[str], backend: str, seconds: float, start_at: float) -> tuple[int, float, float]:
    """One worker process of a scaling run: decode the files round-robin for `seconds` of wall
    time, starting at `start_at` (time.time()) so that all workers overlap."""
    from streaming.contract import Resize
    from streaming.decode import decode_to_tensor

    blobs = [open(path, "rb").read() for path in paths]
    for blob in blobs:  # warm: imports, library loading, first allocations
        decode_to_tensor(blob, Resize(), max_pixels=100_000_000, jpeg_backend=backend)
    time.sleep(max(0.0, start_at - time.time()))
    images = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        decode_to_tensor(blobs[images % len(blobs)], Resize(), max_pixels=100_000_000, jpeg_backend=backend)
        images += 1
    return images, time.process_time() - cpu0, time.perf_counter() - wall0


def _ready(_index: int) -> int:
    time.sleep(0.3)  # long enough that each warm-up task lands in its own process
    return os.getpid()


@dataclass(frozen=True)
class ScalingRun:
    workers: int
    images: int
    wall_s: float
    cpu_s: float

    @property
    def throughput(self) -> float:
        """Images per wall-clock second, all workers together."""
        return self.images / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def per_core(self) -> float:
        """Images per CPU-second of the workers: falls when workers slow each other down
        (shared caches, memory bandwidth), not when other programs take the cores."""
        return self.images / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        """CPU time the workers got per wall second each; below ~0.95 the machine was busy."""
        return self.cpu_s / (self.wall_s * self.workers) if self.wall_s > 0 else 0.0


class WorkerPool:
    """`max_workers` spawned processes, started once and reused by every scaling run."""

    def __init__(self, max_workers: int):
        self.max_workers = max_workers
        self._pool = ProcessPoolExecutor(max_workers, mp_context=multiprocessing.get_context("spawn"))
        list(self._pool.map(_ready, range(max_workers)))

    def run(self, workers: int, paths: list[str], backend: str, seconds: float) -> ScalingRun:
        start_at = time.time() + 0.2
        futures = [self._pool.submit(_decode_worker, paths, backend, seconds, start_at)
                   for _ in range(workers)]
        results = [f.result() for f in futures]
        return ScalingRun(workers, sum(r[0] for r in results), max(r[2] for r in results),
                          sum(r[1] for r in results))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
