"""Which jobs `imgstream job cancel --all` cancels (the REST calls are tested in
tests/integration/test_job_submit.py against the real Flink)."""
from streaming.config import PipelineConfig
from streaming.ops.jobs import JobInfo, cancellable, job_environment

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
