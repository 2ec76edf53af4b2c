"""Latency, CPU and peak per value of one job setting: `imgstream bench settings FIELD VALUES`
(and `imgstream bench bundles`, the sweep of `bundle_time_ms`).

One run measures, at-least-once, on the same photos, one job per value on fresh topics:

- the reference (the first value): its peak, then latency and CPU at half of that peak;
- every other value: latency and CPU at the same rate, then its own peak;
- the reference again, last, the same way: on a shared machine whose speed drifts, the gap between
  its two rows is the run's noise, and a difference smaller than that says nothing.

Bundle time, the sweep this began as: PyFlink hands the Python operator its input a bundle at a
time (Beam's outbound aggregator flushes at 1 MB or at the bundle's end; a request event is ~100
bytes), and the async operator returns a bundle's results at its end, once every request in it is
done. A request so waits for its bundle to close and for its neighbours; a shorter bundle cuts that
wait and pays a bundle's fixed work (Beam's bundle protocol, the metrics report, the TaskManager's
flush) more often.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from streaming.bench.e2e import MEMORY_FRACTION, Bench, job_runs
from streaming.bench.e2e_report import rate as rate_of
from streaming.bench.e2e_workloads import HEADLINE, breakdown, figure
from streaming.config import ConfigError, PipelineConfig

MIB = 1024 * 1024
PEAK_LOSS_LIMIT = 0.05  # a value may cost at most this share of the reference's peak
FIELDS = ("bundle_time_ms", "bundle_size", "fetch_concurrency", "decode_concurrency", "max_batch_size",
          "max_batch_wait_ms", "infer_concurrency", "max_in_flight", "cache_bytes",
          "triton_shared_memory", "malloc_keep_bytes")  # the job's tuning knobs
SWITCHES = ("triton_shared_memory",)  # on/off settings: values 0 and 1


@dataclass(frozen=True)
class Sweep:
    """The sweep of one integer (or on/off, `SWITCHES`: 0 or 1) job setting, `field`, one of FIELDS
    (ValueError otherwise)."""

    field: str

    def __post_init__(self) -> None:
        if self.field not in FIELDS:
            raise ValueError(f"one of {', '.join(FIELDS)}, got {self.field!r}")

    @property
    def name(self) -> str:
        """The table's name of the setting: bundle_time_ms -> "bundle time"."""
        return self.field.removesuffix("_ms").replace("_", " ")

    def label(self, value: int) -> str:
        if self.field in SWITCHES:
            return "on" if value else "off"
        if self.field.endswith("_bytes") and value and value % MIB == 0:
            return f"{value // MIB} MiB"
        return f"{value} ms" if self.field.endswith("_ms") else str(value)

    def configs(self, base: PipelineConfig, values: tuple[int, ...]) -> list[PipelineConfig]:
        """One at-least-once job config per value, `base`'s other settings; ConfigError on a bad value."""
        if self.field in SWITCHES and any(v not in (0, 1) for v in values):
            raise ConfigError(self.field, f"0 (off) or 1 (on), got {values}")
        return [dataclasses.replace(base, delivery_guarantee="at_least_once",
                                    **{self.field: bool(value) if self.field in SWITCHES else value})
                for value in values]

    def sweep(self, bench: Bench, values: tuple[int, ...], expected: float) -> dict[str, Any]:
        """One at-least-once job per value (see the module doc), with `bench.base`'s other settings."""
        first, *others = values
        first_config, *other_configs = self.configs(bench.base, values)
        bench.log(f"job with {self.field}={first} (the reference): peak, then 50% ...")
        reference = job_runs(bench, f"{self.field}-{first}", first_config, "half", expected, None)
        reference_peak = rate_of(reference.get("peak"))
        rows = [self.row(first, (reference.get("curve") or [{}])[0], reference.get("peak"), reference_peak)]
        for value, config in zip(others, other_configs):
            bench.log(f"job with {self.field}={value}: the same rate, then peak ...")
            runs = job_runs(bench, f"{self.field}-{value}", config, "eo", expected, reference)
            rows.append(self.row(value, runs.get("at_50pct", {}), runs.get("peak"), reference_peak))
        bench.log(f"job with {self.field}={first} again: the same rate, then peak ...")
        again = job_runs(bench, f"{self.field}-{first}-again", first_config, "eo", expected, reference)
        rows.append(self.row(first, again.get("at_50pct", {}), again.get("peak"), reference_peak, again=True))
        return {"benchmark": "settings", "field": self.field, "rate_fraction": MEMORY_FRACTION, "rows": rows,
                "cpus": os.cpu_count(), "choice": self.choose(rows)}

    def row(self, value: int, at_half: dict, peak_row: dict | None, reference_peak: float | None,
            again: bool = False) -> dict[str, Any]:
        """One value's figures: latency and the job's own CPU per image at the common rate, its peak.
        `again`: the reference's second run (the noise bar)."""
        peak = rate_of(peak_row)
        p50, outside = at_half.get("p50_ms"), (at_half.get("stages_ms") or {}).get("outside")
        return {self.field: value, "again": again, "rate_per_s": at_half.get("offered_per_s"), "p50_ms": p50,
                "p99_ms": at_half.get("p99_ms"), "errors": at_half.get("errors"), "outside_ms": outside,
                "outside_vs_p50": round(outside / p50, 2) if outside is not None and p50 else None,
                "job_cpu_ms_at_rate": breakdown(at_half)[HEADLINE] if at_half else None,
                "job_cpu_ms_at_peak": breakdown(peak_row)[HEADLINE] if peak_row else None,
                "peak_images_per_s": peak,
                "peak_vs_reference": round(peak / reference_peak, 3) if peak and reference_peak else None}

    def choose(self, rows: list[dict[str, Any]]) -> int | None:
        """The value with the lowest p50 among those within PEAK_LOSS_LIMIT of the reference's peak."""
        good = [r for r in rows if not r.get("again") and r["p50_ms"] is not None
                and r["peak_vs_reference"] is not None and r["peak_vs_reference"] >= 1 - PEAK_LOSS_LIMIT]
        return min(good, key=lambda r: r["p50_ms"])[self.field] if good else None

    def table(self, report: dict[str, Any]) -> str:
        lines = [f"| {self.name} | rate | p50 ms | p99 ms | outside the operator, mean ms (÷ p50) | job's own CPU "
                 "ms/image at that rate | at peak | peak img/s | peak ÷ reference |", "|---|---|---|---|---|---|---|---|---|"]
        for r in report["rows"]:
            again = " (reference again)" if r.get("again") else ""
            lines.append(f"| {self.label(r[self.field])}{again} | {figure(r['rate_per_s'], '.1f')}/s "
                         f"| {figure(r['p50_ms'], '.0f')} | {figure(r['p99_ms'], '.0f')} "
                         f"| {figure(r['outside_ms'], '.0f')} ({figure(r['outside_vs_p50'], '.2f')}) "
                         f"| {figure(r['job_cpu_ms_at_rate'], '.2f')} | {figure(r['job_cpu_ms_at_peak'], '.2f')} "
                         f"| {figure(r['peak_images_per_s'], '.1f')} | {figure(r['peak_vs_reference'], '.2f')}× |")
        choice = report.get("choice")
        lines.append("")
        lines.append(f"lowest p50 with peak >= {1 - PEAK_LOSS_LIMIT:.0%} of the reference's: "
                     + (self.label(choice) if choice is not None else "none of those measured"))
        return "\n".join(lines)


BUNDLES = Sweep("bundle_time_ms")  # `imgstream bench bundles`

