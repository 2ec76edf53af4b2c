"""End-to-end load through the real pipeline: publish requests, time each result's arrival.

Latency is measured where users see it: from the moment our producer sent a request to the
moment a `read_committed` consumer received its result (so exactly-once includes the wait for
the checkpoint that commits it). Each result's own `timings_ms` (the stages inside the
operator) are kept too, so the time outside the operator (Kafka, the Flink bridge, bundle ends,
the sink) is the difference.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from kafka import KafkaConsumer, KafkaProducer

from streaming.ops import jobs
from streaming.ops.kafka_io import kafka_client
from streaming.config import PipelineConfig
from streaming.metrics import STAGES as OPERATOR_STAGES
from streaming.metrics import percentile
from streaming.stack import kafka
from streaming.stack.layout import StackLayout

STAGES = tuple(s for s in OPERATOR_STAGES if s != "total")  # inside the operator, from `timings_ms`
RESIDUAL_STAGES = ("operator_other", "outside")  # the rest of the operator's total; all outside the operator
STAGE_ORDER = (*STAGES, *RESIDUAL_STAGES)  # they add up to the end-to-end latency
STEADY = (0.1, 0.9)  # throughput is taken between these fractions of the results (no ramp-up or tail)


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
    steady_images_per_s: float = 0.0  # between the 10% and 90% results: the rate without ramp-up and tail
    mean_batch_size: float = 0.0
    # mean ms per result: each stage of `timings_ms`, "operator_other" (inside the operator, not
    # a stage) and "outside" (end-to-end minus the operator's total: Kafka, Flink bridge, sink)
    stages_ms: dict[str, float] = field(default_factory=dict)
    mean_ms: float = 0.0
    error_codes: dict[str, int] = field(default_factory=dict)

    def row(self) -> dict:
        return dataclasses.asdict(self)


def stop_job(layout: StackLayout, job_id: str, config: PipelineConfig | None = None,
             timeout_s: float = 60.0) -> None:
    """Cancel the job, wait until its slots are free again, and drop its topics."""
    jobs.cancel_quietly(layout, job_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if jobs.job_state(layout, job_id)[0] in ("CANCELED", "FAILED", "FINISHED"):
                break
        except OSError:
            break
        time.sleep(0.5)
    if config is not None:
        kafka.delete_topics(layout, [config.requests_topic, config.results_topic])


def run_load(config: PipelineConfig, uris: list[str], count: int, *, rate_per_s: float | None = None,
             timeout_s: float = 600.0, progress: Callable[[int], None] | None = None) -> LoadResult:
    """Send `count` requests (round-robin over `uris`) at `rate_per_s` (None: as fast as possible).

    `progress(n)` is called with the number of results received so far (from the reader thread).
    """
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    details: dict[str, dict] = {}
    # fetch_max_wait_ms stays at its default (500): the broker answers a waiting fetch as soon as a
    # result is there, so a shorter wait only polls an empty topic (20 ms cost this reader 44 ms of CPU
    # a second and the broker 32, against 6 and 9, for the same delivery latency, p50 ~2 ms)
    consumer = kafka_client(KafkaConsumer, config.results_topic, bootstrap_servers=config.kafka_bootstrap,
                            group_id=None, auto_offset_reset="earliest", isolation_level="read_committed",
                            enable_auto_commit=False)
    consumer.poll(timeout_ms=500)  # join the topic before anything is sent
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                now = time.perf_counter()
                for record in records:
                    result = json.loads(record.value)
                    rid = result.get("id")
                    if rid in sent and rid not in received:
                        received[rid] = now
                        details[rid] = result
                if progress is not None:
                    progress(len(received))
            if len(received) >= count:
                done.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    producer = kafka_client(KafkaProducer, bootstrap_servers=config.kafka_bootstrap, linger_ms=2, acks=1)
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
    return summarise(sent, received, details, start, rate_per_s)


def summarise(sent: dict[str, float], received: dict[str, float], details: dict[str, dict], start: float,
              rate_per_s: float | None) -> LoadResult:
    """The LoadResult of one run from send and receipt times (perf_counter) and the results."""
    latencies = {i: (received[i] - sent[i]) * 1000 for i in sent if i in received}
    values = list(latencies.values())
    last = max(received.values(), default=start)
    seconds = last - start
    errors: dict[str, int] = {}
    for result in details.values():
        if "error" in result:
            code = result["error"].get("code", "?")
            errors[code] = errors.get(code, 0) + 1
    batches = [r.get("batch_size", 1) for r in details.values() if "error" not in r]
    stages, mean = stage_means(latencies, details)
    return LoadResult(len(sent), len(received), sum(errors.values()), round(seconds, 3),
                      round(len(received) / seconds, 2) if seconds > 0 else 0.0,
                      round(percentile(values, 0.50), 1), round(percentile(values, 0.95), 1),
                      round(percentile(values, 0.99), 1), rate_per_s,
                      steady_images_per_s=round(steady_rate(sorted(received.values())), 2),
                      mean_batch_size=round(sum(batches) / len(batches), 2) if batches else 0.0,
                      stages_ms=stages, mean_ms=round(mean, 1), error_codes=errors)


def steady_rate(arrivals: list[float], window: tuple[float, float] = STEADY, min_span_s: float = 2.0) -> float:
    """Results per second between the `window` fractions of the (sorted) arrival times; 0 when
    that span is under `min_span_s` (results come in bundles: a short run has no steady part)."""
    if len(arrivals) < 10:
        return 0.0
    lo, hi = int(window[0] * (len(arrivals) - 1)), int(window[1] * (len(arrivals) - 1))
    span = arrivals[hi] - arrivals[lo]
    return (hi - lo) / span if span >= min_span_s else 0.0


def stage_means(latencies: dict[str, float], details: dict[str, dict]) -> tuple[dict[str, float], float]:
    """Mean ms per stage over the successful results, and their mean end-to-end latency.

    The stages add up to the end-to-end mean: `timings_ms` stages, then "operator_other"
    (the operator's `total` minus its stages) and "outside" (end to end minus `total`)."""
    ok = [i for i in latencies if i in details and "error" not in details[i]]
    if not ok:
        return {}, 0.0
    sums = dict.fromkeys(STAGE_ORDER, 0.0)
    for i in ok:
        timings = details[i].get("timings_ms", {})
        inside = 0.0
        for stage in STAGES:
            value = float(timings.get(stage, 0.0))
            sums[stage] += value
            inside += value
        total = float(timings.get("total", inside))
        sums["operator_other"] += max(0.0, total - inside)
        sums["outside"] += max(0.0, latencies[i] - total)
    n = len(ok)
    return {k: round(v / n, 2) for k, v in sums.items()}, sum(latencies[i] for i in ok) / n
