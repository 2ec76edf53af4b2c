"""Start, stop and watch the local stack's server processes.

Each service is a plain OS process in its own session (so `down` can kill the whole
process group, JVM children and Python workers included), with a pid file and a log
file under the stack folder.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import psutil


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one server: its command line, environment and health check."""

    name: str
    argv: tuple[str, ...]
    cwd: Path
    health: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0


class ServiceError(RuntimeError):
    """A service did not start or did not become healthy; the message names its log."""


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def log_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.log"


def running_pid(run_dir: Path, name: str) -> int | None:
    """The pid of the service if its recorded process is still alive."""
    path = pid_file(run_dir, name)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return pid


def start(spec: ServiceSpec, run_dir: Path) -> int:
    """Start the service unless it already runs; wait until healthy. Returns its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    pid = running_pid(run_dir, spec.name)
    if pid is None:
        log = open(log_file(run_dir, spec.name), "ab")
        env = {**os.environ, **spec.env}
        proc = subprocess.Popen(
            spec.argv, cwd=spec.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        pid = proc.pid
        pid_file(run_dir, spec.name).write_text(str(pid))
    wait_healthy(spec, run_dir, pid)
    return pid


def wait_healthy(spec: ServiceSpec, run_dir: Path, pid: int) -> None:
    deadline = time.monotonic() + spec.ready_timeout_s
    while time.monotonic() < deadline:
        if spec.health():
            return
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            raise ServiceError(f"{spec.name} exited; see {log_file(run_dir, spec.name)}")
        time.sleep(0.5)
    raise ServiceError(f"{spec.name} not healthy after {spec.ready_timeout_s:.0f}s; see {log_file(run_dir, spec.name)}")


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(run_dir: Path, name: str, timeout_s: float = 20.0) -> bool:
    """Stop the service and every process it spawned. True if something was running."""
    pid = running_pid(run_dir, name)
    pid_file(run_dir, name).unlink(missing_ok=True)
    if pid is None:
        return False
    procs = _tree(pid)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return True
