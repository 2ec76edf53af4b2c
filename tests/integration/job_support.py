"""Helpers for integration tests that run a job of their own (own topics, own consumer group,
own transactional ids) and look at it from outside: results, restarts, its Python workers."""
from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
import uuid
from collections import Counter

import psutil

from streaming.ops import jobs, kafka_io
from streaming.config import PipelineConfig
from streaming.stack import kafka, process
from streaming.stack.layout import StackLayout


@dataclasses.dataclass(frozen=True)
class OwnJob:
    id: str
    requests_topic: str
    results_topic: str
    config: PipelineConfig
    workers: tuple[int, ...]  # pids of the job's Python worker processes


def rest(layout: StackLayout, path: str) -> dict | list:
    with urllib.request.urlopen(f"{layout.flink_rest}{path}", timeout=10) as response:
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
    """Submit the classify job with `config` on fresh topics (created on `kafka_layout`'s broker)."""
    suffix = uuid.uuid4().hex[:10]
    requests_topic, results_topic = f"{name}-{suffix}-requests", f"{name}-{suffix}-results"
    kafka.ensure_topics(kafka_layout or layout, [requests_topic, results_topic], layout.topic_partitions)
    config = dataclasses.replace(config, requests_topic=requests_topic, results_topic=results_topic,
                                 consumer_group=f"{name}-{suffix}", start_from="earliest",
                                 checkpoint_interval_ms=2000, delivery_guarantee="exactly_once",
                                 transactional_id_prefix=f"{name}-{suffix}")
    before = python_workers(layout)
    job_id = jobs.submit(layout, config, prepared.connector_jar, f"{name}-{suffix}")
    try:
        jobs.wait_running(layout, job_id)
        deadline = time.monotonic() + 60
        workers = python_workers(layout) - before
        while not workers and time.monotonic() < deadline:
            time.sleep(1)
            workers = python_workers(layout) - before
    except BaseException:
        jobs.cancel(layout, job_id)
        raise
    return OwnJob(job_id, requests_topic, results_topic, config, tuple(sorted(workers)))


def stop_job(layout: StackLayout, job: OwnJob) -> None:
    try:
        jobs.cancel(layout, job.id)
    except OSError:
        pass


def num_restarts(layout: StackLayout, job_id: str, timeout_s: float = 45.0) -> int:
    """Flink's restart count of the job. The REST API fills job metrics lazily (every ~10 s),
    so an empty answer means "not fetched yet": ask again."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = rest(layout, f"/jobs/{job_id}/metrics?get=numRestarts")
        if metrics:
            return int(metrics[0]["value"])
        if time.monotonic() > deadline:
            raise AssertionError(f"Flink reported no numRestarts metric for job {job_id} in {timeout_s:.0f}s")
        time.sleep(1)


def exceptions(layout: StackLayout, job_id: str) -> list:
    return rest(layout, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]


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
