"""Kafka → Flink job → Kafka, on the real stack: every request gets exactly one result."""
import json
import subprocess
import sys
import uuid
from collections import Counter

from streaming.ops import jobs, kafka_io


def send_and_collect(layout, job, events, timeout_s=180.0):
    kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, events)
    ids = {e["id"] for e in events}
    return list(kafka_io.read_results(layout.kafka_bootstrap, job.results_topic, count=len(events),
                                      timeout_s=timeout_s, ids=ids))


def test_job_is_listed_running_in_flink(layout, running_job):
    state, vertices = jobs.job_state(layout, running_job.id)
    assert state == "RUNNING" and vertices and set(vertices) == {"RUNNING"}
    assert running_job.id in {j.id for j in jobs.list_jobs(layout)}


def test_prediction_and_error_come_back_on_the_results_topic(layout, running_job, test_bucket):
    ok = {"id": uuid.uuid4().hex, "uri": f"s3://{test_bucket}/photos/LadyBird.jpg", "tenant": "t1"}
    missing = {"id": uuid.uuid4().hex, "uri": f"s3://{test_bucket}/photos/does-not-exist.jpg"}
    results = {r["id"]: r for r in send_and_collect(layout, running_job, [ok, missing])}
    assert set(results) == {ok["id"], missing["id"]}
    prediction = results[ok["id"]]
    assert prediction["top_k"][0]["label"] == "ladybug"
    assert prediction["model"] == "efficientnet_lite0"
    assert prediction["timings_ms"]["total"] > 0
    error = results[missing["id"]]["error"]
    assert (error["code"], error["stage"]) == ("object_not_found", "fetch")


def test_every_request_gets_exactly_one_result(layout, running_job, test_bucket):
    uris = [f"s3://{test_bucket}/photos/{name}" for name in ("LadyBird.jpg", "Storm.jpg", "coffee.png")]
    uris += [f"s3://{test_bucket}/bad/not-an-image.jpg", f"s3://{test_bucket}/nope.jpg", "ftp://x/y.jpg"]
    events = kafka_io.make_requests(uris * 3)
    results = send_and_collect(layout, running_job, events)
    counts = Counter(r["id"] for r in results)
    assert set(counts) == {e["id"] for e in events}
    assert set(counts.values()) == {1}
    codes = Counter(r["error"]["code"] for r in results if "error" in r)
    assert codes == {"unsupported_image": 3, "object_not_found": 3, "uri_not_allowed": 3}


def test_malformed_event_does_not_stop_the_job(layout, running_job, test_bucket):
    good = {"id": uuid.uuid4().hex, "uri": f"s3://{test_bucket}/photos/Storm.jpg"}
    kafka_io.publish(layout.kafka_bootstrap, running_job.requests_topic, [b"{not json", good])
    results = list(kafka_io.read_results(layout.kafka_bootstrap, running_job.results_topic, count=1,
                                         timeout_s=180, ids={good["id"]}))
    assert len(results) == 1 and "top_k" in results[0]
    malformed = [r for r in kafka_io.read_results(layout.kafka_bootstrap, running_job.results_topic,
                                                  timeout_s=10) if r.get("id") is None]
    assert any(r["error"]["code"] == "invalid_event" for r in malformed)
    assert jobs.job_state(layout, running_job.id)[0] == "RUNNING"


def test_cli_publish_and_results(layout, running_job, test_bucket):
    cli = [sys.executable, "-m", "streaming"]
    published = subprocess.run(cli + ["publish", f"s3://{test_bucket}/photos/", "--topic", running_job.requests_topic],
                               capture_output=True, text=True, check=True, timeout=120)
    sent = [json.loads(line) for line in published.stdout.splitlines()]
    assert len(sent) == 3
    out = subprocess.run(cli + ["results", "--topic", running_job.results_topic, "--count", "1000",
                                "--timeout", "20", "--json"], capture_output=True, text=True, check=True, timeout=120)
    got = {json.loads(line)["id"] for line in out.stdout.splitlines()}
    assert {e["id"] for e in sent} <= got
