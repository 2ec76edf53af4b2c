"""`imgstream job submit` refuses a bad configuration before submitting anything (naming the field),
creates missing topics only with --create-topics, and `job cancel --all` reaches RESTARTING jobs."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaAdminClient

from streaming.ops import jobs, kafka_io
from streaming.stack.job_config import stack_config
from streaming.stack import kafka
from tests.integration.job_support import exceptions
from tests.net_support import free_port

CLI = [sys.executable, "-m", "streaming", "job"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def topics(layout) -> set[str]:
    admin = kafka_io.kafka_client(KafkaAdminClient, bootstrap_servers=layout.kafka_bootstrap,
                                  **kafka.client_security(layout))
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def job_names(layout) -> set[str]:
    return {j.name for j in jobs.list_jobs(layout)}


def unique(what: str) -> str:
    return f"it-submit-{what}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("settings, env, field", [
    (["requests_topic=" + unique("missing")], {}, "requests_topic"),
    (["results_topic=" + unique("missing")], {}, "results_topic"),
    (["model_name=nope"], {}, "model_name"),
    (["input_size=240"], {}, "input_size"),  # gone: the model's contract sets it
    (["top_k=5000"], {}, "top_k"),
    (["max_batch_size=64"], {}, "max_batch_size"),  # the models take at most 32
    (["transaction_timeout_ms=7200000"], {}, "transaction_timeout_ms"),  # the stack's brokers allow 1 h
    (["consumer_group= imgstream"], {}, "consumer_group"),
    (["allowed_models=efficientnet_lite1,nope"], {}, "allowed_models"),
    (["request_timeout_s=nan"], {}, "request_timeout_s"),
    (["fetch_timeout_s=inf"], {}, "fetch_timeout_s"),
    (["max_in_flight=0"], {}, "max_in_flight"),
    (["s3_secret_key="], {}, "s3_secret_key"),
    ([f"triton_grpc=127.0.0.1:{free_port()}"], {}, "triton_grpc"),
    ([f"kafka_bootstrap=127.0.0.1:{free_port()}"], {}, "kafka_bootstrap"),
    ([], {"IMGSTREAM_MAX_BATCHSIZE": "8"}, "IMGSTREAM_MAX_BATCH_SIZE"),
])
def test_bad_configuration_is_refused_before_anything_runs(layout, prepared, settings, env, field):
    name = unique("refused")
    proc = run_cli("submit", "--name", name, *[arg for s in settings for arg in ("--set", s)], env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "invalid configuration" in proc.stderr and field in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert name not in job_names(layout)  # nothing was submitted
    named = {s.split("=", 1)[1] for s in settings if s.startswith(("requests_topic=", "results_topic="))}
    assert not named & topics(layout)  # nor was a topic created


def test_create_topics_creates_them_and_the_job_runs(layout, prepared):
    name = unique("create")
    requests_topic, results_topic = f"{name}-requests", f"{name}-results"
    settings = [f"requests_topic={requests_topic}", f"results_topic={results_topic}", f"consumer_group={name}",
                f"transactional_id_prefix={name}"]
    try:
        proc = run_cli("submit", "--name", name, "--create-topics", *[a for s in settings for a in ("--set", s)])
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        job_id = proc.stdout.strip().splitlines()[-1]
        assert jobs.job_state(layout, job_id)[0] == "RUNNING"
        assert {requests_topic, results_topic} <= topics(layout)
        assert f"created topic {requests_topic}" in proc.stderr
        cancelled = run_cli("cancel", "--all", "--name-prefix", name, timeout=120)
        assert cancelled.returncode == 0 and f"cancelled {job_id} (was RUNNING)" in cancelled.stdout
        assert jobs.job_state(layout, job_id)[0] == "CANCELED"
    finally:
        jobs.cancel_all(layout, name)
        kafka.delete_topics(layout, [requests_topic, results_topic])


def test_cancel_all_cancels_a_restarting_job(layout, prepared):
    """The unchecked path (`jobs.submit`) with a requests topic that does not exist: the job fails
    and restarts forever; `cancel --all` must end it whatever state it is in."""
    name = unique("restarting")
    config = dataclasses.replace(stack_config(layout), requests_topic=f"{name}-requests",
                                 results_topic=f"{name}-results", consumer_group=name,
                                 transactional_id_prefix=name)
    job_id = jobs.submit(layout, config, prepared.connector_jar, name)
    try:
        deadline = time.monotonic() + 180
        while not exceptions(layout, job_id):  # it failed at least once (UnknownTopicOrPartition)
            assert time.monotonic() < deadline, f"job {job_id} did not fail in 180 s"
            time.sleep(1)
        states = set()
        while "RESTARTING" not in states and time.monotonic() < deadline:
            states.add(jobs.job_state(layout, job_id)[0])
            time.sleep(0.2)
        assert "RESTARTING" in states and not {"CANCELED", "FINISHED", "FAILED"} & states, states
        proc = run_cli("cancel", "--all", "--name-prefix", name, timeout=120)
        assert proc.returncode == 0 and f"cancelled {job_id}" in proc.stdout, proc.stdout + proc.stderr
        assert jobs.job_state(layout, job_id)[0] == "CANCELED"
    finally:
        jobs.cancel_all(layout, name)


def test_stack_status_masks_secrets_unless_asked(layout, prepared):
    status = [sys.executable, "-m", "streaming", "stack", "status", "--json"]
    masked = subprocess.run(status, capture_output=True, text=True, timeout=60)
    assert masked.returncode == 0 and layout.s3_secret_key not in masked.stdout
    assert json.loads(masked.stdout)["s3"]["secret_key"] == "***"
    assert json.loads(masked.stdout)["s3"]["access_key"] == layout.s3_access_key  # not a secret
    shown = subprocess.run(status + ["--show-secrets"], capture_output=True, text=True, timeout=60)
    assert json.loads(shown.stdout)["s3"]["secret_key"] == layout.s3_secret_key
