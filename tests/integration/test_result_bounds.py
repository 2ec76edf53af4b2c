"""Results are small whatever the event, and the tools read whatever the results topic holds.

Issue 12 item 1: a 3 MB event with a 3 MB id compresses (gzip) to a few KB, so the broker takes
it; its error result used to echo the whole id, over the sink producer's `max.request.size`, and
the KafkaWriter failed, restored, replayed it and failed again for ever. Here such an event goes
through the real stack (gzip batch, Flink, the job's sink), with a 3 MB event whose id and uri
come before its padding, and good events after them: exactly one `event_too_large` result for
each big one (the huge id cut to MAX_ID_CHARS and marked; the other's id and uri whole), every
good event a prediction, no duplicate, no restart. Item 11: `read_results` (behind `imgstream results`) skips
tombstones and reports records that are not results instead of crashing.
"""
from __future__ import annotations

import json
import uuid

from streaming.ops import kafka_io
from streaming.events import MAX_ID_CHARS, MAX_RESULT_BYTES
from streaming.stack import kafka
from tests.integration.job_support import exceptions, num_restarts, results_when_complete, start_job, stop_job

HUGE_ID_CHARS = 3_000_000
GOOD_EVENTS = 6


def test_a_compressed_3mb_event_gets_one_small_result_and_no_restart(layout, prepared, pipeline_config,
                                                                     test_bucket):
    job = start_job(layout, prepared, pipeline_config, "bounds")
    try:
        good_uri = f"s3://{test_bucket}/photos/LadyBird.jpg"
        huge_id = "huge-" + uuid.uuid4().hex + "-" + "i" * HUGE_ID_CHARS
        padded_id = "padded-" + uuid.uuid4().hex
        huge = [json.dumps({"id": huge_id, "uri": good_uri}).encode(),  # the uri lies past what salvage reads
                json.dumps({"uri": good_uri, "id": padded_id, "pad": "p" * HUGE_ID_CHARS}).encode()]
        good = [{"id": f"good-{n}-{uuid.uuid4().hex[:8]}", "uri": good_uri} for n in range(GOOD_EVENTS)]
        sent = kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, [*huge, *good], compression="gzip",
                                max_request_bytes=8 * 1024 * 1024)
        assert sent == len(huge) + GOOD_EVENTS and min(map(len, huge)) > 3_000_000

        results = results_when_complete(layout.kafka_bootstrap, job.results_topic, len(huge) + GOOD_EVENTS)
        cut = [r for r in results if r["id"].startswith("huge-")]
        assert len(cut) == 1, f"{len(cut)} results for the event with the huge id"
        assert cut[0]["error"]["code"] == "event_too_large" and cut[0]["id_truncated"] is True
        assert cut[0]["id"] == huge_id[:MAX_ID_CHARS] and cut[0]["uri"] is None
        padded = [r for r in results if r["id"] == padded_id]
        assert len(padded) == 1 and padded[0]["error"]["code"] == "event_too_large"
        assert padded[0]["uri"] == good_uri and "id_truncated" not in padded[0]
        assert max(len(json.dumps(r, ensure_ascii=False).encode()) for r in results) < MAX_RESULT_BYTES
        outcomes = sorted((r["id"], "top_k" in r) for r in results if r["id"].startswith("good-"))
        assert outcomes == sorted((event["id"], True) for event in good)  # each once, each a prediction
        assert len(results) == len(huge) + GOOD_EVENTS
        assert num_restarts(layout, job.id) == 0
        assert exceptions(layout, job.id) == []
    finally:
        stop_job(layout, job)


def test_read_results_skips_tombstones_and_reports_what_is_not_a_result(layout, prepared):
    topic = f"read-results-{uuid.uuid4().hex[:10]}"
    kafka.ensure_topics(layout, [topic], 1)
    first, last = {"id": "first", "uri": "s3://b/k"}, {"id": "last", "uri": "s3://b/k"}
    kafka_io.publish(layout.kafka_bootstrap, topic, [first, None, b"not json", b"42", b"\xff\xfe", None, last])
    skipped: list[str] = []
    got = list(kafka_io.read_results(layout.kafka_bootstrap, topic, count=2, timeout_s=30,
                                     on_skipped=skipped.append))
    assert got == [first, last]
    assert len(skipped) == 3 and all(topic in line for line in skipped)
    assert "not JSON" in skipped[0] and "JSON int, not an object" in skipped[1] and "not JSON" in skipped[2]
