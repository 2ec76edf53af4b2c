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
