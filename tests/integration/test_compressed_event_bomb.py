"""An event that is small compressed and huge uncompressed never reaches the job.

Kafka bounds a batch by `max.message.bytes` as it arrives, compressed: before, a 200-MB event of
zeros in a 200-KB gzip batch was taken by the broker, and the job's Kafka consumer allocated it
whole; the TaskManager failed with OutOfMemoryError, restored, read it again and failed again, for
ever (measured: 11 executions in 3 minutes, no result). The requests topic now keeps batches
uncompressed (`kafka_io.REQUESTS_TOPIC_CONFIGS`), so the broker decompresses each batch and refuses
one over `max.message.bytes` uncompressed: the producer gets MESSAGE_TOO_LARGE, and the job, which
never sees the event, answers its neighbours and never restarts. `job submit` refuses a requests
topic that keeps compressed batches.
"""
from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import MessageSizeTooLargeError

from streaming.config import ConfigError
from streaming.ops import jobs, kafka_io
from streaming.stack import kafka
from tests.integration.job_support import exceptions, num_restarts, results_when_complete, start_job, stop_job

BOMB_BYTES = 64 << 20  # zeros: ~64 KB as gzip, far over the stack's 8-MiB message.max.bytes uncompressed


def test_a_compressed_event_over_the_limit_uncompressed_is_refused_by_the_broker(layout, prepared,
                                                                                  pipeline_config, test_bucket):
    job = start_job(layout, prepared, pipeline_config, "bomb")
    try:
        good_uri = f"s3://{test_bucket}/photos/LadyBird.jpg"
        bomb = json.dumps({"id": "bomb", "uri": good_uri, "pad": "0" * BOMB_BYTES}).encode()
        for codec in ("gzip", "zstd"):
            with pytest.raises(MessageSizeTooLargeError):
                kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, [bomb], compression=codec,
                                 max_request_bytes=2 * BOMB_BYTES)
        good = [{"id": f"good-{n}-{uuid.uuid4().hex[:8]}", "uri": good_uri} for n in range(3)]
        assert kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, good, compression="gzip") == len(good)
        results = results_when_complete(layout.kafka_bootstrap, job.results_topic, len(good))
        assert sorted((r["id"], "top_k" in r) for r in results) == sorted((e["id"], True) for e in good)
        assert num_restarts(layout, job.id) == 0
        assert exceptions(layout, job.id) == []
    finally:
        stop_job(layout, job)


def test_job_submit_refuses_a_requests_topic_that_keeps_compressed_batches(layout, prepared, pipeline_config):
    topic = f"compressed-{uuid.uuid4().hex[:10]}"
    kafka.ensure_topics(layout, [topic], 1)
    admin = kafka_io.kafka_client(KafkaAdminClient, bootstrap_servers=layout.kafka_bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"compression.type": "producer"})])
    finally:
        admin.close()
    config = dataclasses.replace(pipeline_config, requests_topic=topic, delivery_guarantee="at_least_once")
    with pytest.raises(ConfigError) as refused:
        jobs.check_config(layout, config)
    assert refused.value.field == "requests_topic" and "compression.type=producer" in refused.value.reason
    # a topic `job submit` creates keeps batches uncompressed
    created = dataclasses.replace(config, requests_topic=f"created-{uuid.uuid4().hex[:10]}")
    assert jobs.check_config(layout, created, create_topics=True) == [created.requests_topic]
    jobs.check_config(layout, created)  # passes now
