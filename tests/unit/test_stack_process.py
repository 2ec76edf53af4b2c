"""The local stack's processes: a stale pid file is never a running service (nor is its pid's group
killed), a held port stops a start before anything runs, a service started is stopped whole."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from streaming.stack import process
from streaming.stack.process import ServiceError, ServiceSpec


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def test_a_pid_file_older_than_its_process_is_stale_and_its_pid_is_left_alone(tmp_path):
    victim = sleeper()  # another process that got the pid a service gone had (a reboot, a crash)
    try:
        path = process.pid_file(tmp_path, "triton")
        path.write_text(str(victim.pid))
        long_ago = time.time() - 3600
        os.utime(path, (long_ago, long_ago))
        assert process.running_pid(tmp_path, "triton") is None
        assert process.stop(tmp_path, "triton") is False
        assert victim.poll() is None and not path.exists()
    finally:
        victim.kill()
        victim.wait()


def test_a_started_service_is_running_and_stopped_with_its_children(tmp_path):
    spec = ServiceSpec("svc", (sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"),
                       cwd=tmp_path, health=lambda: True)
    pid = process.start(spec, tmp_path)
    deadline = time.monotonic() + 10
    while not psutil.Process(pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert process.running_pid(tmp_path, "svc") == pid and len(tree) == 2
    assert process.stop(tmp_path, "svc", timeout_s=5) is True
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)


def test_a_port_held_by_another_process_stops_the_start_before_anything_runs(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        spec = ServiceSpec("svc", (sys.executable, "-c", "import time; time.sleep(60)"), cwd=tmp_path,
                           health=lambda: True, ports=(port,))
        with pytest.raises(ServiceError, match=f"another process holds 127.0.0.1:{port}"):
            process.start(spec, tmp_path)
    assert not process.pid_file(tmp_path, "svc").exists()


def test_a_service_that_exits_is_not_healthy(tmp_path):
    spec = ServiceSpec("svc", (sys.executable, "-c", "raise SystemExit(3)"), cwd=tmp_path, health=lambda: False,
                       ready_timeout_s=30)
    with pytest.raises(ServiceError, match="svc exited"):
        process.start(spec, tmp_path)
