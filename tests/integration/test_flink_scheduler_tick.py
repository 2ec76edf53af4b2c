"""The stack's Flink JVMs tick Pekko's schedulers every 100 ms, not every 10 (streaming/stack/flink.py
PEKKO_TICK): the setting reaches Pekko, read from a system property, in both JVMs.

A scheduler thread (`flink-scheduler-N` for RPC, `flink-metrics-scheduler-N` for the metrics
service; Linux keeps 15 characters of a thread's name) sleeps one tick at a time, so its voluntary
context switches count its ticks: about 10 a second at 100 ms, about 100 at Pekko's default of 10 ms.
"""
from __future__ import annotations

import time
from pathlib import Path

import psutil

from streaming.stack import process

WINDOW_S = 3.0
SCHEDULERS = ("flink-scheduler", "flink-metrics-s")


def java_of(layout, service: str) -> psutil.Process:
    pid = process.running_pid(layout.run_dir, service)
    assert pid is not None, f"{service} is not running"
    root = psutil.Process(pid)
    javas = [p for p in (root, *root.children(recursive=True)) if p.name() == "java"]
    assert len(javas) == 1, f"{service}: {[p.cmdline()[:3] for p in javas]}"
    return javas[0]


def scheduler_switches(java: psutil.Process) -> dict[tuple[str, int], int]:
    """(thread name, tid) -> voluntary context switches, for the JVM's Pekko scheduler threads."""
    out = {}
    for task in Path(f"/proc/{java.pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        if name in SCHEDULERS:
            status = (task / "status").read_text()
            line = next(row for row in status.splitlines() if row.startswith("voluntary_ctxt_switches:"))
            out[(name, int(task.name))] = int(line.split()[1])
    return out


def test_each_pekko_scheduler_wakes_about_ten_times_a_second(layout, prepared):
    javas = {service: java_of(layout, service) for service in ("flink-jobmanager", "flink-taskmanager")}
    before = {service: scheduler_switches(java) for service, java in javas.items()}
    time.sleep(WINDOW_S)
    for service, java in javas.items():
        after = scheduler_switches(java)
        assert sorted(name for name, _ in after) == sorted(SCHEDULERS), (service, after)
        for thread, count in after.items():
            per_s = (count - before[service].get(thread, 0)) / WINDOW_S
            # 100-ms ticks: ~10/s (timers that fire add a few); Pekko's default 10 ms: ~100/s
            assert 3 <= per_s < 35, f"{service} {thread[0]}: {per_s:.0f} wake-ups a second"
