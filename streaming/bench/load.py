"""End-to-end load through the real pipeline: publish requests, time each result's arrival.

Latency is measured where users see it: from the moment our producer sent a request to the
moment a `read_committed` consumer received its result (so exactly-once includes the wait for
the checkpoint that commits it).
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer

from streaming import jobs
from streaming.config import PipelineConfig
from streaming.metrics import percentile
from streaming.stack import kafka
from streaming.stack.layout import StackLayout


@dataclass(frozen=True)
class LoadResult:
    requests: int
    results: int
    errors: int
    seconds: float  # first send to last result
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    offered_per_s: float | None

    def row(self) -> dict:
        return dataclasses.asdict(self)


def start_job(layout: StackLayout, config: PipelineConfig, connector_jar, name: str) -> tuple[str, PipelineConfig]:
    """A job on fresh topics of its own; returns its id and config."""
    suffix = uuid.uuid4().hex[:8]
    config = dataclasses.replace(config, requests_topic=f"bench-{suffix}-requests",
                                 results_topic=f"bench-{suffix}-results", consumer_group=f"bench-{suffix}",
                                 transactional_id_prefix=f"bench-{suffix}", start_from="earliest")
    kafka.ensure_topics(layout, [config.requests_topic, config.results_topic], max(2, config.parallelism))
    job_id = jobs.submit(layout, config, connector_jar, f"{name}-{suffix}")
    jobs.wait_running(layout, job_id)
    return job_id, config


def run_load(config: PipelineConfig, uris: list[str], count: int, *, rate_per_s: float | None = None,
             timeout_s: float = 600.0) -> LoadResult:
    """Send `count` requests (round-robin over `uris`) at `rate_per_s` (None: as fast as possible)."""
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    errors = 0
    consumer = KafkaConsumer(config.results_topic, bootstrap_servers=config.kafka_bootstrap, group_id=None,
                             auto_offset_reset="earliest", isolation_level="read_committed",
                             enable_auto_commit=False, fetch_max_wait_ms=20)
    consumer.poll(timeout_ms=500)  # join the topic before anything is sent
    done = threading.Event()

    def consume() -> None:
        nonlocal errors
        while not done.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                now = time.perf_counter()
                for record in records:
                    result = json.loads(record.value)
                    rid = result.get("id")
                    if rid in sent and rid not in received:
                        received[rid] = now
                        errors += "error" in result
            if len(received) >= count:
                done.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    producer = KafkaProducer(bootstrap_servers=config.kafka_bootstrap, linger_ms=2, acks=1)
    start = time.perf_counter()
    for i in range(count):
        if rate_per_s:
            delay = start + i / rate_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        rid = uuid.uuid4().hex
        sent[rid] = time.perf_counter()
        producer.send(config.requests_topic, json.dumps({"id": rid, "uri": uris[i % len(uris)]}).encode())
    producer.flush()
    producer.close()
    done.wait(timeout_s)
    done.set()
    reader.join(5)
    consumer.close()
    latencies = [(received[i] - sent[i]) * 1000 for i in sent if i in received]
    last = max(received.values(), default=start)
    seconds = last - start
    return LoadResult(count, len(received), errors, round(seconds, 3),
                      round(len(received) / seconds, 2) if seconds > 0 else 0.0,
                      round(percentile(latencies, 0.50), 1), round(percentile(latencies, 0.95), 1),
                      round(percentile(latencies, 0.99), 1), rate_per_s)
