"""A second Kafka broker beside the stack's own (SASL, SASL_SSL): its canary password and a probe
that tells whether a record gets through with given client settings."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kafka import KafkaProducer
from kafka.errors import KafkaError

from streaming.ops.kafka_io import kafka_client

PASSWORD = "sasl-Canary-7c1e9b2a4f"


def publish_error(bootstrap: str, **security) -> Exception | None:
    """None if a record gets through with these settings, else the Kafka error that stopped it."""
    try:
        producer = kafka_client(KafkaProducer, bootstrap_servers=bootstrap, bootstrap_timeout_ms=3000,
                                max_block_ms=4000, request_timeout_ms=6000, **security)
    except KafkaError as exc:  # the login failed while bootstrapping
        return exc
    try:
        producer.send("sasl-probe", b"x").get(timeout=10)
        return None
    except KafkaError as exc:
        return exc
    finally:
        producer.close(timeout=2)


def classify_through(layout, prepared, config, broker, bucket: str, name: str) -> list[dict]:
    """Run the classify job with `config` on topics of `broker` (a second Kafka), publish five
    good requests and one for a missing object with the job's own client settings, and check
    each got its outcome once without a restart; returns the results."""
    from streaming.ops import kafka_io
    from tests.integration.job_support import num_restarts, outcomes, results_when_complete, start_job, stop_job

    job = start_job(layout, prepared, config, name, kafka_layout=broker)
    try:
        security = kafka_io.client_security(job.config)
        events = [{"id": f"{name}-{i}", "uri": f"s3://{bucket}/photos/LadyBird.jpg"} for i in range(5)]
        events.append({"id": f"{name}-missing", "uri": f"s3://{bucket}/photos/none.jpg"})
        kafka_io.publish(broker.kafka_bootstrap, job.requests_topic, events, security=security)
        results = results_when_complete(broker.kafka_bootstrap, job.results_topic, len(events), security=security)
        assert outcomes(results) == {**{(f"{name}-{i}", "prediction"): 1 for i in range(5)},
                                     (f"{name}-missing", "object_not_found"): 1}
        assert num_restarts(layout, job.id) == 0
    finally:
        stop_job(layout, job)
    return results


@contextmanager
def second_broker(layout, prepared, root: Path, **settings) -> Iterator:
    """A SASL Kafka of its own beside the stack under test (S3, Triton and Flink stay the stack's):
    `layout` moved to `root` and free ports, with `settings` (TLS files, ...); yields its layout and
    stops it afterwards."""
    from streaming.stack import kafka, process
    from tests.net_support import free_ports

    kafka_port, controller_port = free_ports(2)
    broker = dataclasses.replace(layout, root=root, kafka_port=kafka_port, kafka_controller_port=controller_port,
                                 kafka_sasl=True, kafka_sasl_password=PASSWORD, **settings)
    jars = list(prepared.kafka_jars)
    kafka.prepare_kafka(broker, jars)
    try:
        process.start(kafka.kafka_service(broker, jars), broker.run_dir)
        yield broker
    finally:
        process.stop(broker.run_dir, "kafka")
