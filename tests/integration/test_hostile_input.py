"""The bad-input corpus (tests/corpus/) through the real stack.

The corpus images go to S3, a job of our own reads its own topic, and every corpus case is
published as raw Kafka records, `WARMUP_ROUNDS + ROUNDS` times (ids unique per round). Done when: exactly
one result per record with the manifest's outcome (matched by id; records whose id cannot be
read are matched as a multiset of codes), Flink never restarted the job (numRestarts 0, no
exception in its history), and the job's Python worker did not grow in memory from after the
warm-up rounds to the end (RSS within `MAX_RSS_GROWTH`; measured: it settles after the
second round at ~240 MiB and then moves by a few MiB either way).
"""
from __future__ import annotations

import dataclasses
import uuid
from collections import Counter

import pytest

from streaming.ops import kafka_io
from streaming.stack import s3
from tests.corpus import corpus
from tests.integration.model_support import CLASSES_EXAMPLE
from tests.integration.job_support import (exceptions, num_restarts, outcomes, results_when_complete,
                                           rss_bytes, start_job, stop_job)

WARMUP_ROUNDS = 2  # thread pools, decoder buffers and allocator arenas grow to their working size
ROUNDS = 4  # measured; 81 records each
MAX_RSS_GROWTH = 0.15
PREFIX = "corpus/"


@pytest.fixture(scope="module")
def corpus_bucket(layout, test_bucket):
    client = s3.s3_client(layout)
    for name, data in corpus.image_files().items():
        client.put_object(Bucket=test_bucket, Key=PREFIX + name, Body=data)
    return test_bucket


@pytest.fixture(scope="module", params=["built-in", "imported"])
def hostile_job(request, layout, prepared, pipeline_config, corpus_bucket):
    """The job serving the built-in Lite0, then the imported PyTorch-style Lite1."""
    model = pipeline_config.model_name
    if request.param == "imported":
        model = request.getfixturevalue("imported_models")[CLASSES_EXAMPLE]
    config = dataclasses.replace(pipeline_config, allowed_schemes=("s3",), model_name=model, **corpus.JOB_SETTINGS)
    job = start_job(layout, prepared, config, "hostile")
    yield job
    stop_job(layout, job)


def publish_round(layout, job, bucket: str, nonce: str) -> Counter:
    cases = corpus.cases(bucket, PREFIX, nonce)
    kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, [c.raw for c in cases])
    return Counter((c.id, c.expect) for c in cases)


def test_corpus_through_the_stack_one_result_each_no_restart_no_growth(layout, hostile_job, corpus_bucket):
    job = hostile_job
    assert job.workers, "the job's Python worker process was not found"
    run = uuid.uuid4().hex[:8]
    expected, rss_before = Counter(), 0
    for index in range(WARMUP_ROUNDS + ROUNDS):  # one burst at a time: the same concurrency throughout
        expected += publish_round(layout, job, corpus_bucket, f"{run}-{index}")
        results_when_complete(layout.kafka_bootstrap, job.results_topic, sum(expected.values()), settle_s=0)
        if index == WARMUP_ROUNDS - 1:
            rss_before = rss_bytes(job.workers)
    rss_after = rss_bytes(job.workers)
    results = results_when_complete(layout.kafka_bootstrap, job.results_topic, sum(expected.values()))

    got = outcomes(results)
    missing, extra = expected - got, got - expected
    assert not missing and not extra, (f"{sum(expected.values())} records, {len(results)} results; "
                                       f"missing {list(missing.items())[:8]}, unexpected {list(extra.items())[:8]}")
    assert num_restarts(layout, job.id) == 0
    assert exceptions(layout, job.id) == []
    assert rss_before > 0 and rss_after <= rss_before * (1 + MAX_RSS_GROWTH), (
        f"Python worker RSS grew from {rss_before / 2**20:.0f} MiB to {rss_after / 2**20:.0f} MiB")
    assert not [r for r in results if "pa55word" in (r.get("uri") or "")]  # user info never echoed
