"""Upgrading the running job through a savepoint, on the real stack.

The classify job (exactly-once sink, 2 s checkpoints, topics of its own) gets a stream of
requests and is stopped with a savepoint mid-stream. A CHANGED topology
(`flink_jobs/classify_passthrough.py`: one more operator between the source and the async
operator, classify's three uids kept) is then started from that savepoint with
allowNonRestoredState=false, and the rest of the stream is published: every request gets exactly
one committed result (read_committed), none lost, none twice. The same savepoint is refused by a
changed topology whose source uid does not match.
"""
from __future__ import annotations

import dataclasses
import time

import pytest

from streaming.ops import jobs, kafka_io
from streaming.stack.layout import PROJECT_ROOT
from tests.integration.job_support import exceptions, num_restarts, rest
from tests.integration.test_faults import (  # noqa: F401 - small_photos is a fixture
    assert_exactly_once, committed_results, publish_in_background, read_all, small_photos, wait_for_results,
)

PASSTHROUGH_SCRIPT = PROJECT_ROOT / "flink_jobs" / "classify_passthrough.py"
FIRST_HALF, SECOND_HALF = 500, 300


@dataclasses.dataclass(frozen=True)
class Stopped:
    job: jobs.RunningJob
    savepoint: str
    events: list[dict]  # all of them: the first part already published, the rest not yet
    answered_at_stop: int  # distinct ids with a committed result when the job stopped


def wait_terminal(layout, job_id: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state = jobs.job_state(layout, job_id)[0]
        if state in jobs.TERMINAL_STATES or time.monotonic() > deadline:
            return state
        time.sleep(1)


@pytest.fixture(scope="module")
def stopped(layout, prepared, pipeline_config, small_photos) -> Stopped:
    """classify stopped with a savepoint while its first requests are still being published."""
    config = dataclasses.replace(pipeline_config, checkpoint_interval_ms=2000, delivery_guarantee="exactly_once",
                                 max_batch_size=16)
    job = jobs.submit_on_fresh_topics(layout, config, prepared.connector_jar, "upgrade")
    events = kafka_io.make_requests(small_photos[i % len(small_photos)] for i in range(FIRST_HALF + SECOND_HALF))
    try:
        publisher = publish_in_background(layout, job.requests_topic, events[:FIRST_HALF], seconds=20)
        wait_for_results(layout, job.results_topic, 50)
        savepoint = jobs.savepoint(layout, job.id, stop=True)
        publisher.join()
    except BaseException:
        jobs.cancel(layout, job.id)
        raise
    assert wait_terminal(layout, job.id) == "FINISHED"
    answered = len({r["id"] for r in read_all(layout, job.results_topic)})
    print(f"stopped with savepoint {savepoint}: {answered} of {FIRST_HALF} published requests answered")
    return Stopped(job, savepoint, events, answered)


def test_changed_topology_restores_the_savepoint_exactly_once(layout, prepared, stopped):
    job_id = jobs.submit(layout, stopped.job.config, prepared.connector_jar, f"{stopped.job.config.consumer_group}-v2",
                         savepoint_path=stopped.savepoint, allow_non_restored_state=False, script=PASSTHROUGH_SCRIPT)
    try:
        jobs.wait_running(layout, job_id)
        kafka_io.publish(layout.kafka_bootstrap, stopped.job.requests_topic, stopped.events[FIRST_HALF:])
        results = committed_results(layout, stopped.job.results_topic, len(stopped.events), timeout_s=300)
        assert_exactly_once(results, stopped.events)
        assert all("top_k" in r for r in results)
        # it is the changed topology, and it started from the savepoint (not from the earliest offsets)
        names = [v["name"] for v in rest(layout, f"/jobs/{job_id}")["vertices"]]
        assert any("requests-passthrough" in name for name in names), names
        restored = rest(layout, f"/jobs/{job_id}/checkpoints")["latest"]["restored"]
        assert restored["is_savepoint"] and restored["external_path"] == stopped.savepoint
        assert num_restarts(layout, job_id) == 0
    finally:
        jobs.cancel(layout, job_id)
    print(f"{len(results)} results for {len(stopped.events)} requests, "
          f"{stopped.answered_at_stop} answered before the savepoint")


def test_topology_with_a_changed_source_uid_is_refused(layout, prepared, stopped):
    job_id = None
    with pytest.raises(jobs.JobError) as refused:
        job_id = jobs.submit(layout, stopped.job.config, prepared.connector_jar,
                             f"{stopped.job.config.consumer_group}-bad", savepoint_path=stopped.savepoint,
                             allow_non_restored_state=False, script=PASSTHROUGH_SCRIPT,
                             args=["--source-uid", "requests-v2"])
        jobs.wait_running(layout, job_id, timeout_s=120)
    if job_id is not None:  # submitted, then failed while restoring
        assert wait_terminal(layout, job_id) == "FAILED"
        text = " ".join(e.get("stacktrace", "") for e in exceptions(layout, job_id))
        text += rest(layout, f"/jobs/{job_id}/exceptions").get("root-exception", "") or ""
    else:  # refused by `flink run`
        text = str(refused.value)
    assert "Cannot map checkpoint/savepoint state" in text, text[-3000:]
    # nothing was answered twice by the refused job (it never ran)
    counts = [r["id"] for r in read_all(layout, stopped.job.results_topic)]
    assert len(counts) == len(set(counts))
