"""Runs last: status reports every endpoint; down leaves no process behind; up twice is fine."""
import json
import subprocess
import sys

import psutil

from streaming.stack import stack as local_stack

CLI = [sys.executable, "-m", "streaming", "stack"]


def stack_processes(layout):
    """Processes of this stack: their command line or working folder points into its folder."""
    root = str(layout.root)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (root in cmdline or (proc.info["cwd"] or "").startswith(root)) and proc.pid != psutil.Process().pid:
            found.append((proc.pid, cmdline[:120]))
    return found


def test_status_json_lists_every_endpoint_healthy(layout, prepared):
    report = json.loads(subprocess.run(CLI + ["status", "--json"], capture_output=True, text=True,
                                       check=True, timeout=60).stdout)
    assert report["healthy"] is True
    assert report["kafka"]["bootstrap"] == layout.kafka_bootstrap
    assert {"endpoint", "bucket", "access_key", "secret_key"} <= set(report["s3"])
    assert {"grpc", "http", "metrics"} <= set(report["triton"])
    assert report["flink"]["web_ui"].startswith("http://")


def test_down_leaves_nothing_and_up_is_idempotent(layout, prepared):
    subprocess.run(CLI + ["down"], check=True, timeout=180)
    assert stack_processes(layout) == []
    status = subprocess.run(CLI + ["status", "--json"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and json.loads(status.stdout)["healthy"] is False
    local_stack.up(layout, log=lambda m: None)
    local_stack.up(layout, log=lambda m: None)  # second up: only health checks
    assert local_stack.status(layout)["healthy"] is True
