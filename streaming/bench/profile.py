"""`imgstream bench profile`: where the job's Python worker spends its CPU under a steady load.

One job (the stack's config, at-least-once) on fresh topics, a warm-up, a burst to find its
peak, then `seconds` at `fraction` of that peak while py-spy samples the job's Python worker
(the SDK harness process, PyFlink's beam_boot) and `memory.CpuMeter` times every process group.
py-spy runs with `--gil`: it samples only the thread that holds the GIL, so samples are the
worker's Python CPU time (without it, py-spy's idle detection let threads parked in
`Condition.wait` and the selectors fill over 90% of the samples in a first run); C code that releases
the GIL (grpc's core, socket reads, memcpy) is not seen. Without `--subprocesses`: the decoder
processes are measured apart, by the meter. Writes the raw
collapsed stacks (`.collapsed.txt`, flamegraph.pl's input), a speedscope file and a JSON report.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streaming.bench import e2e, e2e_workloads, load, memory, pyspy
from streaming.bench.workloads import Workload
from streaming.config import PipelineConfig
from streaming.ops import jobs
from streaming.stack.layout import StackLayout

PY_SPY_VERSION = "0.4.3"  # as pinned in the `bench` extra


@dataclass(frozen=True)
class ProfileSettings:
    seconds: float = 20.0  # py-spy's sampling window
    fraction: float = 0.5  # of the burst's images/s, the steady load while sampling
    sample_hz: int = 100
    min_requests: int = 40
    worker_wait_s: float = 60.0


def find_py_spy(explicit: str | None = None) -> str | None:
    """`explicit`, else py-spy beside this Python (a virtualenv's bin/), else on PATH."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def run(layout: StackLayout, base: PipelineConfig, connector_jar: Path, workload: Workload,
        settings: ProfileSettings, out: Path, py_spy: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The profile; returns its report (the files it wrote under `files`)."""
    uris = e2e.upload(layout, list(workload.photos), workload.name)
    config = dataclasses.replace(e2e.bench_config(base), delivery_guarantee="at_least_once")
    before = {p.pid for p in memory.python_workers(layout)}
    job = jobs.submit_on_fresh_topics(layout, config, connector_jar, f"bench-profile-{e2e._slug(workload.name)}")
    config = job.config
    groups = memory.ProcessGroups(layout)
    try:
        warm = load.run_load(config, uris, max(2 * len(uris), settings.min_requests))
        log(f"warm-up: {warm.results} results, {warm.images_per_s:.1f}/s")
        worker = _new_worker(layout, before, settings.worker_wait_s)
        burst = load.run_load(config, uris, max(settings.min_requests, int(4 * max(warm.images_per_s, 10.0))))
        rate = settings.fraction * burst.images_per_s
        log(f"burst: {burst.images_per_s:.1f}/s; profiling worker {worker} for {settings.seconds:.0f} s at "
            f"{rate:.1f}/s ...")
        stem = out / f"profile-{e2e._slug(workload.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        raw = stem.with_suffix(".collapsed.txt")
        out.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen([py_spy, "record", "--gil", "--pid", str(worker), "--rate", str(settings.sample_hz),
                                "--duration", str(int(settings.seconds)), "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        meter = memory.CpuMeter(groups).start()
        steady = load.run_load(config, uris, max(settings.min_requests, int(rate * settings.seconds)), rate_per_s=rate)
        cpu = meter.stop()
        spy_output, _ = spy.communicate(timeout=settings.seconds + 60)
    finally:
        load.stop_job(layout, job.id, config)
    if spy.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy exited with {spy.returncode}: {spy_output.strip()[-500:]}")
    stacks = pyspy.parse_collapsed(raw.read_text())
    rows = pyspy.group(stacks)
    row = steady.row() | {"cpu_s": cpu, "wall_s": round(meter.wall_s, 2), "cpu_s_within": meter.within}
    images = max(1, steady.results)
    row["cpu_s_per_image"] = {k: round(v / images, 5) for k, v in cpu.items()}
    row["cpu_s_per_image_within"] = {k: round(v / images, 5) for k, v in meter.within.items()}
    cpu_ms = e2e_workloads.breakdown(row)
    speedscope = stem.with_suffix(".speedscope.json")
    speedscope.write_text(json.dumps(pyspy.speedscope(stacks, f"imgstream worker {worker}, {workload.name}")))
    return {"benchmark": "profile", "workload": workload.summary(), "settings": dataclasses.asdict(settings),
            "worker_pid": worker, "burst_images_per_s": burst.images_per_s, "steady": row,
            "cpu_ms_per_image": cpu_ms, "samples": sum(r.samples for r in rows),
            "stages": [dataclasses.asdict(r) for r in rows], "py_spy": spy_output.strip().splitlines()[-2:],
            "files": {"collapsed": str(raw), "speedscope": str(speedscope)}}


def _new_worker(layout: StackLayout, before: set[int], wait_s: float) -> int:
    """The pid of the job's Python worker: one that was not there before the job."""
    deadline = time.monotonic() + wait_s
    while True:
        new = sorted(p.pid for p in memory.python_workers(layout) if p.pid not in before)
        if new:
            return new[0]
        if time.monotonic() > deadline:
            raise RuntimeError("the job's Python worker did not show up")
        time.sleep(1)


def text(report: dict[str, Any]) -> str:
    """The stage table, with the worker's CPU beyond decoding per image as the ms column."""
    rows = [pyspy.StageRow(r["stage"], r["samples"], r["share"], tuple(tuple(t) for t in r["top"]))
            for r in report["stages"]]
    ms = report["cpu_ms_per_image"]
    steady = report["steady"]
    return "\n".join([
        f"workload {report['workload']['name']} ({report['workload']['count']} photos): {steady['results']} results "
        f"at {steady['images_per_s']:.1f}/s (burst {report['burst_images_per_s']:.1f}/s), p50 {steady['p50_ms']:.0f} ms; "
        f"{report['samples']} py-spy samples of worker {report['worker_pid']}", "",
        pyspy.table(rows, ms.get("python_beyond_decode_ms")), "",
        "| CPU ms per image during the profile | |", "|---|---|",
        *[f"| {label.strip()} | {'–' if ms[key] is None else format(ms[key], '.2f')} |"
          for key, label in e2e_workloads.LABELS],
        f"| job's own CPU beyond decode, inference and JIT | "
        f"{'–' if ms[e2e_workloads.HEADLINE] is None else format(ms[e2e_workloads.HEADLINE], '.2f')} |", "",
        f"files: {report['files']['collapsed']}, {report['files']['speedscope']}"])
