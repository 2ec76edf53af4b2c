"""A second Kafka broker beside the stack's own (SASL, SASL_SSL): its canary password and a probe
that tells whether a record gets through with given client settings."""
from __future__ import annotations

from kafka import KafkaProducer
from kafka.errors import KafkaError

PASSWORD = "sasl-Canary-7c1e9b2a4f"


def publish_error(bootstrap: str, **security) -> Exception | None:
    """None if a record gets through with these settings, else the Kafka error that stopped it."""
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, bootstrap_timeout_ms=3000, max_block_ms=4000,
                                 request_timeout_ms=6000, **security)
    except KafkaError as exc:  # the login failed while bootstrapping
        return exc
    try:
        producer.send("sasl-probe", b"x").get(timeout=10)
        return None
    except KafkaError as exc:
        return exc
    finally:
        producer.close(timeout=2)
