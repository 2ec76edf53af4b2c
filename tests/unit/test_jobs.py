"""Which jobs `imgstream job cancel --all` cancels (the REST calls are tested in
tests/integration/test_job_submit.py against the real Flink)."""
from streaming.jobs import JobInfo, cancellable

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
