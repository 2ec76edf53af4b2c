"""Publishing requests and reading results with kafka-python (tools and tests; the job uses Flink's connector)."""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterable, Iterator

from kafka import KafkaConsumer, KafkaProducer


def make_requests(uris: Iterable[str]) -> list[dict]:
    """One event per URI, each with a fresh id."""
    return [{"id": uuid.uuid4().hex, "uri": uri} for uri in uris]


def publish(bootstrap: str, topic: str, events: Iterable[dict | bytes]) -> int:
    """Send events (dicts as JSON, bytes as they are) and wait until the broker has them all."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             request_timeout_ms=15_000, max_block_ms=30_000)
    count = 0
    try:
        for event in events:
            value = event if isinstance(event, bytes) else json.dumps(event).encode()
            key = event.get("id", "").encode() if isinstance(event, dict) else None
            producer.send(topic, value=value, key=key)
            count += 1
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return count


def read_results(bootstrap: str, topic: str, *, count: int | None = None, timeout_s: float = 60.0,
                 ids: set[str] | None = None, from_beginning: bool = True) -> Iterator[dict]:
    """Yield results (parsed JSON) until `count` arrived or `timeout_s` passed.

    Reads committed data only (`read_committed`), so results of an exactly-once job show up
    when its checkpoint commits. With `ids`, other requests' results are skipped.
    """
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed", consumer_timeout_ms=1000,
    )
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and (count is None or seen < count):
            for message in consumer:
                try:
                    result = json.loads(message.value)
                except ValueError:
                    continue
                if ids is not None and result.get("id") not in ids:
                    continue
                seen += 1
                yield result
                if (count is not None and seen >= count) or time.monotonic() >= deadline:
                    break
    finally:
        consumer.close()
