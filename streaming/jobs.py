"""Submit, list, cancel and savepoint the job on the Flink session cluster (CLI + REST API)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from streaming.config import ENV_PREFIX, PipelineConfig
from streaming.stack.flink import FLINK_HOME, flink_env
from streaming.stack.layout import PROJECT_ROOT, StackLayout

JOB_SCRIPT = PROJECT_ROOT / "flink_jobs" / "classify.py"


class JobError(RuntimeError):
    """The Flink CLI or REST API refused or failed an operation."""


@dataclass(frozen=True)
class JobInfo:
    id: str
    name: str
    state: str


def _rest(layout: StackLayout, path: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{layout.flink_rest}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text else {}


def submit(layout: StackLayout, config: PipelineConfig, connector_jar: Path, name: str) -> str:
    """Submit the job detached through `flink run`; returns the job id."""
    python = sys.executable
    env = {**os.environ, **flink_env(layout),
           **{ENV_PREFIX + k.upper(): v for k, v in config.to_mapping().items()}}
    argv = [str(FLINK_HOME / "bin" / "flink"), "run", "--detached",
            "--jarfile", str(connector_jar),
            f"-Dpipeline.name={name}",
            "--python", str(JOB_SCRIPT), "--pyExecutable", python, "--pyClientExecutable", python,
            name]
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    found = re.search(r"JobID ([0-9a-f]{32})", proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise JobError(f"flink run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return found.group(1)


@dataclass(frozen=True)
class RunningJob:
    id: str
    config: PipelineConfig

    @property
    def requests_topic(self) -> str:
        return self.config.requests_topic

    @property
    def results_topic(self) -> str:
        return self.config.results_topic


def submit_on_fresh_topics(layout: StackLayout, config: PipelineConfig, connector_jar: Path,
                           name: str) -> RunningJob:
    """Run the job on request/result topics, consumer group and transactional ids of its own
    (`<name>-<random>-...`), reading from the start; waits until it runs."""
    from streaming.stack import kafka

    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    config = dataclasses.replace(config, requests_topic=f"{prefix}-requests", results_topic=f"{prefix}-results",
                                 consumer_group=prefix, transactional_id_prefix=prefix, start_from="earliest")
    kafka.ensure_topics(layout, [config.requests_topic, config.results_topic],
                        max(layout.topic_partitions, config.parallelism))
    job_id = submit(layout, config, connector_jar, prefix)
    wait_running(layout, job_id)
    return RunningJob(job_id, config)


def list_jobs(layout: StackLayout) -> list[JobInfo]:
    jobs = _rest(layout, "/jobs/overview").get("jobs", [])
    return [JobInfo(j["jid"], j["name"], j["state"]) for j in jobs]


def job_state(layout: StackLayout, job_id: str) -> tuple[str, list[str]]:
    """The job's state and the states of its vertices."""
    info = _rest(layout, f"/jobs/{job_id}")
    return info["state"], [v["status"] for v in info.get("vertices", [])]


def wait_running(layout: StackLayout, job_id: str, timeout_s: float = 180) -> None:
    """Wait until the job and all its tasks run."""
    deadline = time.monotonic() + timeout_s
    state = "?"
    while time.monotonic() < deadline:
        state, vertices = job_state(layout, job_id)
        if state == "RUNNING" and vertices and all(v == "RUNNING" for v in vertices):
            return
        if state in ("FAILED", "CANCELED", "FINISHED"):
            break
        time.sleep(1)
    raise JobError(f"job {job_id} is {state}, not running; see the Flink web UI at {layout.flink_rest}")


def cancel(layout: StackLayout, job_id: str) -> None:
    _rest(layout, f"/jobs/{job_id}?mode=cancel", method="PATCH")


def savepoint(layout: StackLayout, job_id: str, *, stop: bool = False, timeout_s: float = 120) -> str:
    """Trigger a savepoint (or stop-with-savepoint); returns its location."""
    path = f"/jobs/{job_id}/stop" if stop else f"/jobs/{job_id}/savepoints"
    body = {"drain": False} if stop else {"cancel-job": False}
    trigger = _rest(layout, path, method="POST", body=body)["request-id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _rest(layout, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            operation = status["operation"]
            if "failure-cause" in operation:
                raise JobError(f"savepoint failed: {operation['failure-cause'].get('stack-trace', '')[:2000]}")
            return operation["location"]
        time.sleep(1)
    raise JobError(f"savepoint of {job_id} did not complete in {timeout_s:.0f}s")
