"""Start, stop and watch the local stack's server processes.

Each service is a plain OS process in its own session (so `down` can kill the whole
process group, JVM children and Python workers included), with a pid file and a log
file under the stack folder. A pid file outlives a reboot or a crash, and its pid may then
name another process: a process is the service only if it started before its pid file was
written, so a stale file is never taken for a running service nor its pid's group killed.
A service is not started over a port another process holds (its health check would ask that
process instead), and it is healthy only while its own process lives.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
import urllib.request
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
    ports: tuple[int, ...] = ()  # on the loopback host: must be free before it starts
    host: str = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service did not start or did not become healthy; the message names its log."""


def loopback_opener() -> urllib.request.OpenerDirector:
    """For the stack's HTTP endpoints on loopback: never through http_proxy/HTTP_PROXY."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def log_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.log"


PID_FILE_SLACK_S = 2.0  # psutil's start time is in clock ticks; the file is written right after the start


def running_pid(run_dir: Path, name: str) -> int | None:
    """The pid of the service if its recorded process is still alive: the process of that pid
    started before the pid file was written (a later one reuses the pid of a service gone)."""
    path = pid_file(run_dir, name)
    try:
        pid = int(path.read_text().strip())
        written = path.stat().st_mtime
    except (FileNotFoundError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.create_time() > written + PID_FILE_SLACK_S:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return pid


def port_in_use(host: str, port: int) -> bool:
    """Whether another socket listens on (host, port): binding it fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are not a listener
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def start(spec: ServiceSpec, run_dir: Path) -> int:
    """Start the service unless it already runs; wait until healthy. Returns its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    pid = running_pid(run_dir, spec.name)
    if pid is None:
        held = [port for port in spec.ports if port_in_use(spec.host, port)]
        if held:
            raise ServiceError(f"{spec.name} cannot start: another process holds {spec.host}:{held[0]} (stop it, or "
                               "move the stack's ports with IMGSTREAM_STACK_PORT_OFFSET)")
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
        healthy = spec.health()
        if not _alive(pid):  # after the check too: a healthy answer from a process gone is not its
            raise ServiceError(f"{spec.name} exited; see {log_file(run_dir, spec.name)}")
        if healthy:
            return
        time.sleep(0.5)
    raise ServiceError(f"{spec.name} not healthy after {spec.ready_timeout_s:.0f}s; see {log_file(run_dir, spec.name)}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


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
        if os.getpgid(pid) == pid:  # the session `start` made: its group holds every child
            os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
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
