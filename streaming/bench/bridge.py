"""What PyFlink itself costs, with no work in the operator: `imgstream bench bridge`.

One job per variant runs classify's Kafka source and sink around an operator that answers each
request at once (`streaming/bench/echo_job.py`): the async operator classify uses (`stats`: with
classify's gauges too) and a plain `map`, in process mode at each bundle time, and the `map` in
thread mode. Per variant, on fresh topics, after a warm-up:

- idle: the job running with no input, CPU per second;
- at `rate` requests/s for `seconds`: latency, CPU per second and per request;
- a burst of `burst` requests: the most requests/s, CPU per request.

CPU is split as the job's own processes are: the TaskManager JVM without its JIT compiler
threads, the JIT (a new job's classes are compiled for minutes, `memory.JIT_GROUPS`), the Python
worker (process mode) and the JobManager. What a variant costs per second at a steady rate is
what a running job pays for its Python operator before any image is touched.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streaming.bench import load, memory
from streaming.bench.e2e_workloads import figure
from streaming.config import PipelineConfig
from streaming.ops import jobs
from streaming.stack.layout import StackLayout

ECHO_JOB = Path(__file__).with_name("echo_job.py")
URI = "s3://bridge/never-fetched.jpg"  # the echo operator reads only the id
IDLE_S = 10.0


@dataclass(frozen=True)
class Variant:
    operator: str  # echo_job.OPERATORS
    bundle_time_ms: int | None  # None: thread mode has no bundles

    @property
    def label(self) -> str:
        if self.bundle_time_ms is None:
            return f"{self.operator} (thread mode)"
        return f"{self.operator}, {self.bundle_time_ms} ms bundles"


MAX_RATE = 10_000.0  # requests/s: far beyond what one local TaskManager answers
MAX_SECONDS = 3600.0
MAX_BURST = 1_000_000


class PlanError(ValueError):
    """A plan value out of bounds; `field` names it."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Plan:
    rate: float = 40.0  # requests/s of the steady run
    seconds: float = 60.0  # its length
    burst: int = 6000  # requests of the burst (and of each warm-up round)

    def __post_init__(self) -> None:
        bounds = {"rate": (self.rate, MAX_RATE), "seconds": (self.seconds, MAX_SECONDS),
                  "burst": (self.burst, MAX_BURST)}
        for field, (value, most) in bounds.items():
            if not 0 < value <= most:  # also refuses NaN
                raise PlanError(field, f"must be in (0, {most:g}], got {value!r}")


def variants(operators: tuple[str, ...], times_ms: tuple[int, ...]) -> list[Variant]:
    """Every process-mode operator at every bundle time, then thread mode once."""
    out = [Variant(op, t) for op in operators if op != "thread" for t in times_ms]
    return out + ([Variant("thread", None)] if "thread" in operators else [])


def configs(base: PipelineConfig, chosen: list[Variant]) -> list[PipelineConfig]:
    """One at-least-once job config per variant; ConfigError on a bad bundle time."""
    return [dataclasses.replace(base, delivery_guarantee="at_least_once",
                                bundle_time_ms=v.bundle_time_ms or base.bundle_time_ms) for v in chosen]


def split(cpu_s: dict[str, float], within: dict[str, float], per: float) -> dict[str, float]:
    """CPU ms of the job's processes per `per` (seconds or requests), the JIT apart."""
    tm_jit, jm_jit = within.get(memory.TASKMANAGER_JIT, 0.0), within.get(memory.JOBMANAGER_JIT, 0.0)
    parts = {"taskmanager_jvm": cpu_s.get("taskmanager_jvm", 0.0) - tm_jit,
             "python_worker": cpu_s.get("python_workers", 0.0),
             "jobmanager": cpu_s.get("flink-jm", 0.0) - jm_jit}
    out = {k: round(1000 * v / per, 3) for k, v in parts.items()}
    out["job"] = round(sum(out.values()), 3)
    out["jit"] = round(1000 * (tm_jit + jm_jit) / per, 3)
    return out


def skip_reason(variant: Variant, exc: Exception) -> str:
    """Why a variant's job did not run: the error's first line, and for thread mode the likely cause."""
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    if variant.operator == "thread":
        reason += (" (PEMJA starts thread mode once per TaskManager process on Java 17: restart the "
                   "TaskManager, e.g. `imgstream stack down` and `up`, and run thread mode first)")
    return reason


def _measured(groups: memory.ProcessGroups, run: Callable[[], Any]) -> tuple[Any, memory.CpuMeter]:
    meter = memory.CpuMeter(groups).start()
    result = run()
    meter.stop()
    return result, meter


def measure(layout: StackLayout, config: PipelineConfig, connector_jar: Path, variant: Variant, plan: Plan,
            groups: memory.ProcessGroups) -> dict[str, Any]:
    """One variant's job: warm-up, idle, steady rate, burst; always cancelled."""
    row: dict[str, Any] = {"variant": variant.label, "operator": variant.operator,
                           "bundle_time_ms": variant.bundle_time_ms}
    try:
        job = jobs.submit_on_fresh_topics(layout, config, connector_jar, f"bench-bridge-{variant.operator}",
                                          script=ECHO_JOB, args=[variant.operator])
    except jobs.JobError as exc:  # e.g. thread mode on a TaskManager that cannot start it again
        row["skipped"] = skip_reason(variant, exc)
        return row
    try:
        for _ in range(2):
            load.run_load(job.config, [URI], plan.burst, timeout_s=300)
        _, idle = _measured(groups, lambda: time.sleep(IDLE_S))
        row["idle_ms_per_s"] = split(idle.result, idle.within, idle.wall_s)
        steady, meter = _measured(groups, lambda: load.run_load(job.config, [URI], max(1, int(plan.rate * plan.seconds)),
                                                                 rate_per_s=plan.rate, timeout_s=plan.seconds + 300))
        row.update(rate_per_s=plan.rate, p50_ms=steady.p50_ms, p99_ms=steady.p99_ms, results=steady.results,
                   ms_per_s=split(meter.result, meter.within, meter.wall_s),
                   ms_per_request=split(meter.result, meter.within, max(steady.results, 1)))
        burst, meter = _measured(groups, lambda: load.run_load(job.config, [URI], plan.burst, timeout_s=300))
        row.update(burst_per_s=burst.images_per_s, burst_ms_per_request=split(meter.result, meter.within,
                                                                              max(burst.results, 1)))
    finally:
        load.stop_job(layout, job.id, job.config)
    return row


def run(layout: StackLayout, base: PipelineConfig, connector_jar: Path, chosen: list[Variant], plan: Plan,
        log: Callable[[str], None]) -> dict[str, Any]:
    groups = memory.ProcessGroups(layout)
    rows = []
    for variant, config in zip(chosen, configs(base, chosen)):
        log(f"job {variant.label}: warm-up, {IDLE_S:.0f} s idle, {plan.rate:g}/s for {plan.seconds:g} s, "
            f"a burst of {plan.burst} ...")
        rows.append(measure(layout, config, connector_jar, variant, plan, groups))
    return {"benchmark": "bridge", "plan": dataclasses.asdict(plan), "rows": rows, "cpus": os.cpu_count()}


def table(report: dict[str, Any]) -> str:
    rate = report["plan"]["rate"]
    lines = [f"| operator | idle, job ms/s | at {rate:g}/s: p50 / p99 ms | job ms/s (TM JVM + Python + JM) | JIT ms/s "
             f"| job ms/request | burst requests/s | job ms/request in the burst |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['variant']} | skipped: {r['skipped']} | | | | | | |")
            continue
        per_s, idle = r["ms_per_s"], r["idle_ms_per_s"]
        lines.append(f"| {r['variant']} | {figure(idle['job'], '.0f')} | {figure(r['p50_ms'], '.0f')} / "
                     f"{figure(r['p99_ms'], '.0f')} | {figure(per_s['job'], '.0f')} ({figure(per_s['taskmanager_jvm'], '.0f')}"
                     f" + {figure(per_s['python_worker'], '.0f')} + {figure(per_s['jobmanager'], '.0f')}) "
                     f"| {figure(per_s['jit'], '.0f')} | {figure(r['ms_per_request']['job'], '.2f')} "
                     f"| {figure(r['burst_per_s'], '.0f')} | {figure(r['burst_ms_per_request']['job'], '.3f')} |")
    return "\n".join(lines)
