"""Faults survived on the real stack: every request still gets exactly one result.

Each test runs its own job (exactly-once sink, 2 s checkpoints) on topics of its own,
publishes a stream of requests, breaks something mid-stream, and counts the committed
results with a read_committed consumer.
"""
from __future__ import annotations

import dataclasses
import io
import os
import signal
import threading
import time
import uuid
from collections import Counter

import psutil
import pytest
from PIL import Image

from streaming.ops import jobs, kafka_io
from streaming.stack import process, s3
from streaming.stack import stack as local_stack
from tests.integration.job_support import stop_job
from tests.integration.model_support import CLASSES_EXAMPLE


@pytest.fixture(scope="module")
def small_photos(layout, prepared, test_bucket):
    """A few real photos made small (the faults, not decoding, are under test here)."""
    uris = []
    client = s3.s3_client(layout)
    for path in [p for p in prepared.samples if p.suffix == ".jpg"][:6]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((320, 320))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        key = f"small/{path.name}"
        client.put_object(Bucket=test_bucket, Key=key, Body=buffer.getvalue())
        uris.append(f"s3://{test_bucket}/{key}")
    return uris


@pytest.fixture
def job(request, layout, prepared, pipeline_config):
    """A job of its own: exactly-once sink, 2 s checkpoints; serving the built-in Lite0, or with
    `indirect` parametrisation "imported", the imported PyTorch-style Lite1 (`imported_models`), or
    "shared-memory", Lite0 with its batches through Triton's system shared memory."""
    model = pipeline_config.model_name
    variant = getattr(request, "param", "built-in")
    if variant == "imported":
        model = request.getfixturevalue("imported_models")[CLASSES_EXAMPLE]
    config = dataclasses.replace(pipeline_config, checkpoint_interval_ms=2000, delivery_guarantee="exactly_once",
                                 max_batch_size=16, model_name=model,
                                 triton_shared_memory=variant == "shared-memory")
    job = jobs.submit_on_fresh_topics(layout, config, prepared.connector_jar, "fault")
    yield job
    stop_job(layout, job)


def publish_in_background(layout, topic, events, seconds):
    """Spread the events over `seconds`, so the fault lands mid-stream."""
    def run():
        chunks = 20
        size = max(1, len(events) // chunks)
        for start in range(0, len(events), size):
            kafka_io.publish(layout.kafka_bootstrap, topic, events[start:start + size])
            time.sleep(seconds / chunks)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def read_all(layout, topic):
    return list(kafka_io.read_results(layout.kafka_bootstrap, topic, timeout_s=8))


def committed_results(layout, topic, expected, timeout_s):
    """Every committed result, once `expected` distinct ids are there (or time is up).

    Read once more after two more checkpoints: a duplicate would be committed by then.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len({r["id"] for r in read_all(layout, topic)}) < expected:
        time.sleep(2)
    time.sleep(5)
    return read_all(layout, topic)


def wait_for_results(layout, topic, count, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(list(kafka_io.read_results(layout.kafka_bootstrap, topic, count=count, timeout_s=3))) >= count:
            return
    raise AssertionError(f"fewer than {count} results on {topic} after {timeout_s}s")


def assert_exactly_once(results, events):
    counts = Counter(r["id"] for r in results)
    expected = {e["id"] for e in events}
    missing = expected - set(counts)
    duplicated = {i: c for i, c in counts.items() if c > 1}
    assert not missing, f"{len(missing)} requests got no result"
    assert not duplicated, f"{len(duplicated)} requests got more than one result"
    assert set(counts) == expected


@pytest.mark.parametrize("job", ["built-in", "imported"], indirect=True)
def test_taskmanager_killed_mid_stream(layout, prepared, job, small_photos):
    events = kafka_io.make_requests(small_photos[i % len(small_photos)] for i in range(2000))
    publisher = publish_in_background(layout, job.requests_topic, events, seconds=20)
    wait_for_results(layout, job.results_topic, 200)
    pid = process.running_pid(layout.run_dir, "flink-taskmanager")
    os.killpg(pid, signal.SIGKILL)  # the whole "pod": JVM and Python workers
    psutil.wait_procs([psutil.Process(pid)], timeout=10)
    process.start(local_stack.service(layout, prepared, "flink-taskmanager"), layout.run_dir)
    publisher.join()
    results = committed_results(layout, job.results_topic, len(events), timeout_s=300)
    assert_exactly_once(results, events)
    assert all("top_k" in r for r in results)


@pytest.mark.parametrize("job", ["built-in", "shared-memory"], indirect=True)
def test_triton_down_for_20_seconds(layout, prepared, job, small_photos):
    # shared memory: the restarted Triton knows none of the job's regions; they are registered again
    events = kafka_io.make_requests(small_photos[i % len(small_photos)] for i in range(600))
    publisher = publish_in_background(layout, job.requests_topic, events, seconds=15)
    wait_for_results(layout, job.results_topic, 50)
    process.stop(layout.run_dir, "triton")
    time.sleep(20)
    process.start(local_stack.service(layout, prepared, "triton"), layout.run_dir)
    publisher.join()
    results = committed_results(layout, job.results_topic, len(events), timeout_s=300)
    assert_exactly_once(results, events)
    errors = Counter(r["error"]["code"] for r in results if "error" in r)
    assert not errors, f"the outage should delay requests, not fail them: {errors}"
    assert jobs.job_state(layout, job.id)[0] == "RUNNING"


def test_kafka_broker_restarted_mid_stream(layout, prepared, job, small_photos):
    events = kafka_io.make_requests(small_photos[i % len(small_photos)] for i in range(600))
    kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, events[:300])
    wait_for_results(layout, job.results_topic, 50)
    process.stop(layout.run_dir, "kafka")
    time.sleep(5)
    process.start(local_stack.service(layout, prepared, "kafka"), layout.run_dir)
    kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, events[300:])
    results = committed_results(layout, job.results_topic, len(events), timeout_s=300)
    assert_exactly_once(results, events)


@pytest.mark.parametrize("job", ["built-in", "imported"], indirect=True)
def test_bad_events_mixed_into_good_ones(layout, job, small_photos, test_bucket):
    good = kafka_io.make_requests(small_photos[i % len(small_photos)] for i in range(1000))
    bad_kinds = [
        ({"uri": f"s3://{test_bucket}/small/none.jpg"}, "object_not_found"),
        ({"uri": f"s3://{test_bucket}/bad/not-an-image.jpg"}, "unsupported_image"),
        ({"uri": f"s3://{test_bucket}/bad/truncated.jpg"}, "corrupt_image"),
        ({"uri": "gopher://host/x.jpg"}, "uri_not_allowed"),
        ({"uri": 17}, "invalid_event"),
    ]
    bad, expected_codes = [], {}
    for i in range(100):
        body, code = bad_kinds[i % len(bad_kinds)]
        event = {"id": f"bad-{uuid.uuid4().hex}", **body}
        bad.append(event)
        expected_codes[event["id"]] = code
    mixed = good[:]
    for i, event in enumerate(bad):
        mixed.insert(i * 10, event)
    kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, mixed)
    results = committed_results(layout, job.results_topic, len(mixed), timeout_s=300)
    assert_exactly_once(results, mixed)
    by_id = {r["id"]: r for r in results}
    assert {i: by_id[i]["error"]["code"] for i in expected_codes} == expected_codes
    assert all("top_k" in by_id[e["id"]] for e in good)
    assert jobs.job_state(layout, job.id)[0] == "RUNNING"
