"""The price of exactly-once, per checkpoint interval: `imgstream bench checkpoints`.

With exactly-once results a result is visible when the checkpoint after it commits, so a result
waits half an interval on average; a checkpoint also drains the async operator's in-flight
requests (PyFlink's async operation finishes its bundle), which costs throughput. One run
measures, on the same photos and the same stack:

- an at-least-once job: its peak (the reference) and its latency at half of that peak;
- one exactly-once job per interval: latency at the same rate (half the at-least-once peak),
  then its own peak, as a ratio to the at-least-once peak.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from streaming.bench.e2e import MEMORY_FRACTION, Bench, job_runs
from streaming.bench.e2e_report import rate as rate_of
from streaming.bench.e2e_workloads import figure
from streaming.config import PipelineConfig

P50_TARGET_MS = 1500.0  # issue 14: p50 at half load, exactly-once
PEAK_LOSS_TARGET = 0.10  # at most 10% less peak than at-least-once


def configs(base: PipelineConfig, intervals_ms: tuple[int, ...]) -> list[PipelineConfig]:
    """One exactly-once job config per interval, `base`'s other settings; ConfigError on a bad value."""
    return [dataclasses.replace(base, delivery_guarantee="exactly_once", checkpoint_interval_ms=interval)
            for interval in intervals_ms]


def sweep(bench: Bench, intervals_ms: tuple[int, ...], expected: float) -> dict[str, Any]:
    """The at-least-once reference, then one exactly-once job per interval (see the module doc), all
    with `bench.base`'s other settings."""
    reference = dataclasses.replace(bench.base, delivery_guarantee="at_least_once")
    bench.log("job at-least-once: peak, then 50% ...")
    alo = job_runs(bench, "alo", reference, "half", expected, None)
    rows = [row("at_least_once", None, alo.get("curve", [{}])[0], rate_of(alo.get("peak")), rate_of(alo.get("peak")))]
    for interval, config in zip(intervals_ms, configs(bench.base, intervals_ms)):
        bench.log(f"job exactly-once, checkpoints every {interval} ms: 50%, then peak ...")
        eo = job_runs(bench, f"eo-{interval}", config, "eo", expected, alo)
        rows.append(row("exactly_once", interval, eo.get("at_50pct", {}), rate_of(eo.get("peak")),
                        rate_of(alo.get("peak"))))
    return {"benchmark": "checkpoints", "rate_fraction": MEMORY_FRACTION, "rows": rows,
            "cpus": os.cpu_count(), "choice": choose(rows)}


def row(guarantee: str, interval_ms: int | None, at_half: dict, peak: float | None,
        reference_peak: float | None) -> dict[str, Any]:
    return {"delivery_guarantee": guarantee, "checkpoint_interval_ms": interval_ms,
            "rate_per_s": at_half.get("offered_per_s"), "p50_ms": at_half.get("p50_ms"),
            "p99_ms": at_half.get("p99_ms"), "errors": at_half.get("errors"),
            "outside_ms": (at_half.get("stages_ms") or {}).get("outside"),
            "peak_images_per_s": peak,
            "peak_vs_at_least_once": round(peak / reference_peak, 3) if peak and reference_peak else None}


def choose(rows: list[dict[str, Any]]) -> int | None:
    """The longest interval that meets both targets (p50 at half load, peak loss); None if none does."""
    good = [r["checkpoint_interval_ms"] for r in rows
            if r["checkpoint_interval_ms"] and r["p50_ms"] is not None and r["p50_ms"] <= P50_TARGET_MS
            and r["peak_vs_at_least_once"] is not None and r["peak_vs_at_least_once"] >= 1 - PEAK_LOSS_TARGET]
    return max(good) if good else None


def table(report: dict[str, Any]) -> str:
    lines = ["| delivery | checkpoints | rate (50%) | p50 ms | p99 ms | outside the operator, mean ms | peak img/s "
             "| peak ÷ at-least-once |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        interval = f"{r['checkpoint_interval_ms'] / 1000:g} s" if r["checkpoint_interval_ms"] else "–"
        lines.append(f"| {r['delivery_guarantee']} | {interval} | {figure(r['rate_per_s'], '.1f')}/s "
                     f"| {figure(r['p50_ms'], '.0f')} | {figure(r['p99_ms'], '.0f')} | {figure(r['outside_ms'], '.0f')} "
                     f"| {figure(r['peak_images_per_s'], '.1f')} | {figure(r['peak_vs_at_least_once'], '.2f')}× |")
    choice = report.get("choice")
    lines.append("")
    lines.append(f"longest interval with p50 <= {P50_TARGET_MS:.0f} ms at half load and peak >= "
                 f"{1 - PEAK_LOSS_TARGET:.0%} of at-least-once: "
                 + (f"{choice} ms" if choice else "none of those measured"))
    return "\n".join(lines)

