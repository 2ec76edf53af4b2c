"""Which jobs `imgstream job cancel --all` cancels, a malformed `kafka_bootstrap` refused by name, a
submitted job that does not run cancelled (the REST calls are tested in
tests/integration/test_job_submit.py against the real Flink)."""
import subprocess
from pathlib import Path

import pytest

from streaming.config import ConfigError, PipelineConfig
from streaming.ops import jobs
from streaming.ops.jobs import JobInfo, cancellable, job_environment
from streaming.stack.layout import StackLayout

# Flink's JobStatus values
ALIVE = ["CREATED", "INITIALIZING", "RUNNING", "FAILING", "RESTARTING", "CANCELLING", "RECONCILING"]
TERMINAL = ["FINISHED", "CANCELED", "FAILED", "SUSPENDED"]  # SUSPENDED: given up by this JobManager


def test_every_job_that_is_not_terminal_is_cancelled():
    found = [JobInfo(f"id-{state}", f"job-{state}", state) for state in ALIVE + TERMINAL]
    assert [j.state for j in cancellable(found)] == ALIVE


def test_name_prefix_narrows_the_choice():
    found = [JobInfo("a", "it-x-1", "RESTARTING"), JobInfo("b", "other", "RESTARTING"),
             JobInfo("c", "it-x-2", "FAILED")]
    assert [j.id for j in cancellable(found, "it-x-")] == ["a"]


def test_the_job_gets_exactly_the_checked_config_not_leftover_variables():
    config = PipelineConfig(top_k=3)  # s3_endpoint None
    env = job_environment(config, {"IMGSTREAM_S3_ENDPOINT": "http://stale:9000", "IMGSTREAM_TOP_K": "9",
                                   "IMGSTREAM_STACK_DIR": "/srv/stack", "PATH": "/bin"})
    assert "IMGSTREAM_S3_ENDPOINT" not in env and env["IMGSTREAM_TOP_K"] == "3"
    assert env["IMGSTREAM_STACK_DIR"] == "/srv/stack" and env["PATH"] == "/bin"
    assert PipelineConfig.from_env(env) == config


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:notaport", "127.0.0.1:1,kafka:x"])
def test_a_malformed_kafka_bootstrap_is_refused_by_name(bootstrap):
    with pytest.raises(ConfigError) as refused:
        jobs.check_config(StackLayout(), PipelineConfig(kafka_bootstrap=bootstrap))
    assert refused.value.field == "kafka_bootstrap" and bootstrap in refused.value.reason


@pytest.mark.parametrize("field", ["kafka_ssl_ca_file", "kafka_ssl_keystore_file"])
def test_a_tls_file_that_cannot_be_read_is_refused_by_name_not_blamed_on_kafka(field, tmp_path):
    config = PipelineConfig(kafka_security_protocol="SSL", **{field: str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError) as refused:
        jobs.check_config(StackLayout(), config)
    assert refused.value.field == field and "missing.pem" in refused.value.reason


def test_a_submitted_job_that_does_not_run_is_cancelled(monkeypatch):
    cancelled = []
    monkeypatch.setattr(jobs, "submit", lambda *args, **kwargs: "j1")
    monkeypatch.setattr(jobs, "cancel", lambda layout, job_id: cancelled.append(job_id))

    def restarting(layout, job_id):
        raise jobs.JobError(f"job {job_id} is RESTARTING, not running")
    monkeypatch.setattr(jobs, "wait_running", restarting)
    with pytest.raises(jobs.JobError):
        jobs.submit_running(StackLayout(), PipelineConfig(), Path("connector.jar"), "name")
    assert cancelled == ["j1"]


def test_flink_run_that_hangs_is_a_job_error(monkeypatch):
    def hangs(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])
    monkeypatch.setattr(jobs.subprocess, "run", hangs)
    with pytest.raises(jobs.JobError, match="flink run did not finish"):
        jobs.submit(StackLayout(), PipelineConfig(), Path("connector.jar"), "name")
