"""Helpers for integration tests that run a job of their own (own topics, own consumer group,
own transactional ids) and look at it from outside: results, restarts, its Python workers."""
from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter

import psutil

from streaming.ops import jobs, kafka_io
from streaming.config import PipelineConfig
from streaming.stack import process
from streaming.stack.layout import StackLayout


@dataclasses.dataclass(frozen=True)
class OwnJob(jobs.RunningJob):
    """A job of `jobs.submit_on_fresh_topics` and the pids of its Python worker processes."""

    workers: tuple[int, ...] = ()


def rest(layout: StackLayout, path: str) -> dict | list:
    with process.loopback_opener().open(f"{layout.flink_rest}{path}", timeout=10) as response:
        return json.loads(response.read())


def python_workers(layout: StackLayout) -> set[int]:
    """Pids of the TaskManager's Python worker processes (PyFlink's beam_boot, process mode)."""
    pid = process.running_pid(layout.run_dir, "flink-taskmanager")
    if pid is None:
        return set()
    found = set()
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "pyflink.fn_execution.beam.beam_boot" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def start_job(layout: StackLayout, prepared, config: PipelineConfig, name: str, *,
              kafka_layout: StackLayout | None = None) -> OwnJob:
    """`jobs.submit_on_fresh_topics` (topics created on `kafka_layout`'s broker) with exactly-once
    results and 2 s checkpoints; waits up to a minute for the job's new Python workers."""
    config = dataclasses.replace(config, checkpoint_interval_ms=2000, delivery_guarantee="exactly_once")
    before = python_workers(layout)
    job = jobs.submit_on_fresh_topics(layout, config, prepared.connector_jar, name, kafka_layout=kafka_layout)
    try:
        deadline = time.monotonic() + 60
        workers = python_workers(layout) - before
        while not workers and time.monotonic() < deadline:
            time.sleep(1)
            workers = python_workers(layout) - before
    except BaseException:
        stop_job(layout, job)
        raise
    return OwnJob(job.id, job.config, tuple(sorted(workers)))


def stop_job(layout: StackLayout, job: jobs.RunningJob) -> None:
    """Cancel the job; a cluster already gone (a test restarted it) is no error."""
    jobs.cancel_quietly(layout, job.id)


num_restarts, exceptions = jobs.num_restarts, jobs.exceptions  # as the benchmarks read them


def results_when_complete(bootstrap: str, topic: str, expected: int, timeout_s: float = 240, *,
                          security: dict | None = None, settle_s: float = 6.0) -> list[dict]:
    """Every committed result once `expected` are there, read again after `settle_s` (more than
    two checkpoints) so a late duplicate would show."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = max(1.0, deadline - time.monotonic())
        if len(list(kafka_io.read_results(bootstrap, topic, count=expected, timeout_s=min(30.0, left),
                                          security=security))) >= expected:
            break
    time.sleep(settle_s)
    return list(kafka_io.read_results(bootstrap, topic, timeout_s=settle_s + 2, security=security))


def rss_bytes(pids) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def outcomes(results: list[dict]) -> Counter:
    """(id, outcome) pairs counted: outcome is the error code or "prediction"."""
    return Counter((r.get("id"), r["error"]["code"] if "error" in r else "prediction") for r in results)
