"""Publishing requests and reading results with kafka-python (tools and tests; the job uses Flink's connector).

Security. The job's Kafka clients (Flink's KafkaSource/KafkaSink, Java) get their settings from
`PipelineConfig.kafka_client_properties()`; kafka-python clients here from `client_security`
(the local stack's too: `streaming.stack.kafka.client_security` hands it the stack's job config).
Both read the same config fields:

| field | SASL/SCRAM | TLS | mutual TLS |
|---|---|---|---|
| `kafka_security_protocol` | `SASL_PLAINTEXT` (or `SASL_SSL`) | `SSL` | `SSL` (or `SASL_SSL`) |
| `kafka_sasl_mechanism` | `SCRAM-SHA-512` or `SCRAM-SHA-256` (`PLAIN` too) | - | - |
| `kafka_sasl_username`, `kafka_sasl_password` | the user (the password is a `Secret`) | - | - |
| `kafka_ssl_ca_file` | - | PEM CA bundle; omit to use the system CAs (Python) / JVM's trust store (Java) | same |
| `kafka_ssl_keystore_file` | - | - | PEM holding the client's private key and certificate chain |
| `kafka_ssl_key_password` | - | - | that key's password, if it is encrypted (`Secret`) |

For the Java clients the PEM files become `ssl.truststore.type=PEM` / `ssl.keystore.type=PEM`
(Kafka 2.7+); the broker's host name is verified (Java's default `https` endpoint
identification; `ssl_check_hostname=True` here). Set them as `IMGSTREAM_KAFKA_...` variables
or `--set` on `job submit`; the password then travels to the job inside its (pickled) config and
in the Kafka clients' JAAS setting, never in a log line or result. The local stack runs
SASL/SCRAM with `imgstream stack up --sasl` (see `streaming/stack/kafka.py`); TLS is not set
up locally.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.net.compat import KafkaNetClient

from streaming.config import PipelineConfig

log = logging.getLogger(__name__)
Client = TypeVar("Client")
# The requests topic keeps its batches uncompressed. Kafka bounds a batch by `max.message.bytes` as
# it arrives, compressed, so a 1-MiB gzip or zstd batch can carry one event of up to 2 GB, which the
# job's Kafka consumer (Java) must allocate whole: a 200-MB gzip event failed the TaskManager with
# OutOfMemoryError, and its replay again, for ever. A topic that stores batches uncompressed makes
# the broker decompress each one as it arrives and refuse it (MESSAGE_TOO_LARGE) when it is over
# `max.message.bytes` uncompressed. `job submit` creates the topic so and refuses one that is not.
REQUESTS_TOPIC_CONFIGS = {"compression.type": "uncompressed"}


def kafka_client(kind: Callable[..., Client], *args: Any, **settings: Any) -> Client:
    """`kind(*args, **settings)`, a kafka-python `KafkaProducer`, `KafkaConsumer` or `KafkaAdminClient`,
    that leaves nothing behind when it fails. Their constructors start a network client (an I/O
    thread, an epoll and a socket pair) before they bootstrap, and a failed bootstrap raises
    without closing it: every failed attempt (a health poll while the broker starts, a refused
    login) would leak all three. Build every kafka-python client here."""
    started: list[KafkaNetClient] = []

    def net_client(**kwargs: Any) -> KafkaNetClient:
        client = KafkaNetClient(**kwargs)
        started.append(client)
        return client

    try:
        return kind(*args, kafka_client=net_client, **settings)
    except BaseException:
        for client in started:
            client.close()
        raise


def client_security(config: PipelineConfig) -> dict[str, Any]:
    """kafka-python keyword arguments for the config's Kafka security settings."""
    protocol = config.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        kwargs.update(sasl_mechanism=config.kafka_sasl_mechanism, sasl_plain_username=config.kafka_sasl_username,
                      sasl_plain_password=config.kafka_sasl_password.value if config.kafka_sasl_password else None)
    if "SSL" in protocol:
        kwargs.update(ssl_check_hostname=True, ssl_cafile=config.kafka_ssl_ca_file,
                      ssl_certfile=config.kafka_ssl_keystore_file,
                      ssl_password=config.kafka_ssl_key_password.value if config.kafka_ssl_key_password else None)
    return kwargs


def make_requests(uris: Iterable[str]) -> list[dict]:
    """One event per URI, each with a fresh id."""
    return [{"id": uuid.uuid4().hex, "uri": uri} for uri in uris]


def publish(bootstrap: str, topic: str, events: Iterable[dict | bytes | None], *,
            security: Mapping[str, Any] | None = None, compression: str | None = None,
            max_request_bytes: int = 1024 * 1024) -> int:
    """Send events (dicts as JSON keyed by id, bytes as they are, None as a tombstone with an
    empty key) and wait until the broker has them all; raises the first record's failure (e.g.
    TopicAuthorizationFailedError, a KafkaError) rather than count a record the broker refused.

    `security`: kafka-python settings (`client_security(config)`, or the local stack's).
    `compression`: "gzip", "lz4", "zstd" or "snappy" batches (None: uncompressed).
    `max_request_bytes`: the largest record before compression the producer will send."""
    producer = kafka_client(KafkaProducer, bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                            request_timeout_ms=15_000, max_block_ms=30_000, compression_type=compression,
                            max_request_size=max_request_bytes, **(security or {}))
    sent = []
    try:
        for event in events:
            if isinstance(event, dict):
                sent.append(producer.send(topic, value=json.dumps(event).encode(), key=event.get("id", "").encode()))
            else:  # kafka-python needs a key or a value: a tombstone gets the empty key
                sent.append(producer.send(topic, value=event, key=b"" if event is None else None))
        producer.flush(timeout=60)
        for future in sent:  # flush() only logs a failed batch
            future.get(timeout=0)
    finally:
        producer.close(timeout=10)
    return len(sent)


def _report(description: str) -> None:
    log.warning("skipped a record that is not a result: %s", description)


def read_results(bootstrap: str, topic: str, *, count: int | None = None, timeout_s: float = 60.0,
                 ids: set[str] | None = None, from_beginning: bool = True,
                 security: Mapping[str, Any] | None = None,
                 on_skipped: Callable[[str], None] = _report) -> Iterator[dict]:
    """Yield results (parsed JSON) until `count` arrived or `timeout_s` passed.

    Reads committed data only (`read_committed`), so results of an exactly-once job show up
    when its checkpoint commits. With `ids`, other requests' results are skipped. Tombstones
    (null values) are skipped silently; records that are not a JSON object are skipped and
    described to `on_skipped` (by default a warning on this module's logger): neither counts.
    """
    consumer = kafka_client(
        KafkaConsumer, topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed", consumer_timeout_ms=1000, **(security or {}),
    )
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and (count is None or seen < count):
            for message in consumer:
                if time.monotonic() >= deadline:  # skipped records may keep coming
                    break
                result = _result(message, on_skipped)
                if result is None or (ids is not None and result.get("id") not in ids):
                    continue
                seen += 1
                yield result
                if (count is not None and seen >= count) or time.monotonic() >= deadline:
                    break
    finally:
        consumer.close()


def _result(message: Any, on_skipped: Callable[[str], None]) -> dict | None:
    """The record's result, or None (a tombstone, or something reported to `on_skipped`)."""
    if message.value is None:
        return None
    where = f"{message.topic}[{message.partition}]@{message.offset}"
    try:
        result = json.loads(message.value)
    except ValueError as exc:  # not UTF-8 (UnicodeDecodeError is a ValueError) or not JSON
        on_skipped(f"{where}: {len(message.value)} bytes, not JSON ({type(exc).__name__})")
        return None
    if not isinstance(result, dict):
        on_skipped(f"{where}: JSON {type(result).__name__}, not an object")
        return None
    return result
