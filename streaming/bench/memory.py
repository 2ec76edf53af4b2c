"""Who uses the CPU and the memory while the benchmark runs: the stack's processes in groups.

Groups are process trees found through the stack's pid files: the TaskManager JVM and its
Python workers (its descendants, split out), Triton with its python-backend stubs, Kafka,
S3Proxy, the JobManager; plus extra trees the benchmark names (the naive consumers, their
Triton) and this process (the load generator). CPU time is read with psutil; a process that
exits keeps the CPU time it was last seen with, so short-lived workers are not lost.

Within a group, `CpuMeter` also adds up the parts that `PARTS` names: the decoder processes
(`python -m streaming.decoder_worker`, children of a Python worker) inside `python_workers`,
reported apart as `within["python_workers/decoders"]` (the groups themselves are unchanged).
It also adds up the threads of the Flink JVMs that compile code (HotSpot's C1 and C2 compiler
threads), as `within["taskmanager_jvm/jit"]` and `within["flink-jm/jit"]`: a freshly submitted
job's classes are compiled for minutes (C2 alone took 100-200 ms/s at 40 images/s for the first
two minutes of a job, ~20 ms/s after), which a long-running job no longer pays.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import psutil

from streaming.stack import process
from streaming.stack.layout import StackLayout

STACK_SERVICES = {"kafka": "kafka", "s3proxy": "s3proxy", "flink-jm": "flink-jobmanager",
                  "triton": "triton"}
RSS_GROUPS = ("taskmanager_jvm", "python_workers", "triton")  # what the memory target is about
DECODER_MODULE = "streaming.decoder_worker"
PARTS = {"python_workers": ("decoders", DECODER_MODULE)}  # group -> (part, what its command line holds)
JIT_GROUPS = ("taskmanager_jvm", "flink-jm")  # JVMs whose compiler threads are reported apart
JIT_THREAD_NAMES = ("C1 CompilerThre", "C2 CompilerThre")  # HotSpot's, as /proc truncates them


def part_key(group: str, part: str) -> str:
    """A part's key in `CpuMeter.within` (and in a report's `cpu_s_per_image_within`)."""
    return f"{group}/{part}"


DECODERS = part_key("python_workers", "decoders")
TASKMANAGER_JIT, JOBMANAGER_JIT = (part_key(group, "jit") for group in JIT_GROUPS)


def _tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_s(pid: int | None) -> float:
    """CPU-seconds (user + system) of process `pid` and its live descendants."""
    return sum(cpu for proc in _tree(pid) if (cpu := _cpu_s(proc)) is not None)


def _is_python(proc: psutil.Process) -> bool:
    try:
        return "python" in proc.name().lower()
    except psutil.Error:
        return False


@dataclass
class ProcessGroups:
    """Resolves group name -> processes, afresh on each call (workers come and go with jobs)."""

    layout: StackLayout
    extra: dict[str, Callable[[], list[int]]] = field(default_factory=dict)

    def resolve(self) -> dict[str, list[psutil.Process]]:
        run_dir = self.layout.run_dir
        groups = {name: _tree(process.running_pid(run_dir, service)) for name, service in STACK_SERVICES.items()}
        tm = _tree(process.running_pid(run_dir, "flink-taskmanager"))
        groups["taskmanager_jvm"] = [p for p in tm if not _is_python(p)]
        groups["python_workers"] = [p for p in tm if _is_python(p)]
        me = psutil.Process(os.getpid())
        groups["load_generator"] = [me]
        for name, pids in self.extra.items():
            groups[name] = [p for pid in pids() for p in _tree(pid)]
        return groups


def python_workers(layout: StackLayout) -> list[psutil.Process]:
    """The TaskManager's Python worker processes (PyFlink's beam_boot, process mode; the SDK
    harness runs in that process), without their decoder processes."""
    found = []
    for proc in _tree(process.running_pid(layout.run_dir, "flink-taskmanager")):
        if "pyflink.fn_execution.beam.beam_boot" in _cmdline(proc):
            found.append(proc)
    return found


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def part_of(group: str, cmdline: str) -> str | None:
    """The part of `group` (see `PARTS`) a process with that command line belongs to, if any."""
    part = PARTS.get(group)
    return part[0] if part and part[1] in cmdline else None


def is_jit_thread(name: str) -> bool:
    """Whether a JVM thread of this name (its /proc comm) compiles code (HotSpot C1/C2)."""
    return name.startswith(JIT_THREAD_NAMES)


def _thread_name(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _jit_cpu_s(proc: psutil.Process, known: dict[tuple[int, int], bool]) -> dict[int, float]:
    """tid -> CPU-seconds of the process's compiler threads; `known` caches (pid, tid) -> is one.
    A compiler thread that HotSpot retires between two looks takes its last stretch with it (the
    JIT figure errs low, never high)."""
    out = {}
    try:
        threads = proc.threads()
    except psutil.Error:
        return out
    for thread in threads:
        key = (proc.pid, thread.id)
        if key not in known:
            known[key] = is_jit_thread(_thread_name(proc.pid, thread.id))
        if known[key]:
            out[thread.id] = thread.user_time + thread.system_time
    return out


def _cpu_s(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return None


class CpuMeter:
    """CPU-seconds per group between `start()` and `stop()`, and the machine's busy time.

    Processes are looked for every `poll_s` seconds, so one that starts and ends between
    `start()` and `stop()` is counted (from 0) as long as it lived through one poll."""

    def __init__(self, groups: ProcessGroups, poll_s: float | None = 1.0):
        self.groups = groups
        self.poll_s = poll_s  # None: only at start and stop (no thread; for CPU-timed loops)
        self._started = False
        self._first: dict[int, tuple[str, float]] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._parts: dict[int, str | None] = {}  # pid -> "group/part" or None
        self._jit_first: dict[tuple[str, int], float] = {}  # (group, tid) -> CPU-seconds at first sight
        self._jit_last: dict[tuple[str, int], float] = {}
        self._jit_known: dict[tuple[int, int], bool] = {}  # (pid, tid) -> a compiler thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wall0 = self._busy0 = 0.0
        self.result: dict[str, float] = {}
        self.within: dict[str, float] = {}  # "group/part" -> CPU-seconds, a share of the group's
        self.wall_s = 0.0
        self.machine_busy_s = 0.0

    def _snapshot(self) -> None:
        for name, procs in self.groups.resolve().items():
            for proc in procs:
                cpu = _cpu_s(proc)
                if cpu is None:
                    continue
                self._first.setdefault(proc.pid, (name, 0.0 if self._started else cpu))
                self._last[proc.pid] = (name, cpu)
                if proc.pid not in self._parts:
                    part = part_of(name, _cmdline(proc)) if name in PARTS else None
                    self._parts[proc.pid] = part_key(name, part) if part else None
                if name in JIT_GROUPS:
                    for tid, jit in _jit_cpu_s(proc, self._jit_known).items():
                        self._jit_first.setdefault((name, tid), 0.0 if self._started else jit)
                        self._jit_last[(name, tid)] = jit

    def start(self) -> "CpuMeter":
        self._snapshot()  # processes alive now: count from here
        self._started = True
        self._wall0, self._busy0 = time.perf_counter(), _busy_s()
        if self.poll_s is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._snapshot()

    def stop(self) -> dict[str, float]:
        """CPU-seconds per group; processes started meanwhile count from 0."""
        self._snapshot()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.wall_s = time.perf_counter() - self._wall0
        self.machine_busy_s = _busy_s() - self._busy0
        out: dict[str, float] = {}
        within = {part_key(group, part): 0.0 for group, (part, _) in PARTS.items()}
        within.update({part_key(group, "jit"): 0.0 for group in JIT_GROUPS})
        for (group, tid), cpu in self._jit_last.items():
            within[part_key(group, "jit")] += max(0.0, cpu - self._jit_first.get((group, tid), 0.0))
        for pid, (name, cpu) in self._last.items():
            first = self._first.get(pid, (name, 0.0))[1]
            out[name] = out.get(name, 0.0) + max(0.0, cpu - first)
            if self._parts.get(pid):
                within[self._parts[pid]] += max(0.0, cpu - first)
        self.within = {k: round(v, 2) for k, v in within.items()}
        out["other (not the stack)"] = max(0.0, self.machine_busy_s - sum(out.values()))
        self.result = {k: round(v, 2) for k, v in sorted(out.items())}
        return self.result


def _busy_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


class RssSampler:
    """RSS (MiB) of each group every `interval_s`, on a thread, until `stop()`."""

    def __init__(self, groups: ProcessGroups, interval_s: float = 5.0, names: tuple[str, ...] = RSS_GROUPS):
        self.groups = groups
        self.interval_s = interval_s
        self.names = names
        self.samples: list[dict[str, float]] = []  # {"t_s": ..., group: MiB, ...}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _sample(self) -> None:
        groups = self.groups.resolve()
        row = {"t_s": round(time.perf_counter() - self._t0, 1)}
        for name in self.names:
            total = 0
            for proc in groups.get(name, []):
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            row[name] = round(total / 2**20, 1)
        self.samples.append(row)

    def start(self) -> "RssSampler":
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample()
        return self.samples


def growth(samples: list[dict[str, float]], name: str, from_s: float, window_s: float = 30.0) -> float | None:
    """Relative RSS growth of a group from `from_s` to the end: the median of the samples in a
    `window_s` window at each end (so a single GC swing does not count as growth)."""
    import statistics

    if not samples:
        return None
    end = samples[-1]["t_s"]
    early = [s[name] for s in samples if from_s <= s["t_s"] <= from_s + window_s]
    late = [s[name] for s in samples if s["t_s"] >= end - window_s]
    if not early or not late or statistics.median(early) <= 0:
        return None
    return statistics.median(late) / statistics.median(early) - 1.0
