"""The end-to-end benchmark's report: ratios, the issue's targets, Markdown tables, the paper estimate."""
from __future__ import annotations

import math
from typing import Any

from streaming.bench import e2e_workloads, memory
from streaming.bench.e2e_workloads import figure, first_workload
from streaming.bench.load import STAGE_ORDER
from streaming.contract import INPUT_DTYPE, INPUT_SIZE, input_shape

TARGET_VS_IDEAL = 0.75
TARGET_VS_NAIVE = 3.0
TARGET_P99_OVER_P50 = 2.0
TARGET_SCALING = 1.6
TARGET_RSS_GROWTH = 0.10
TENSOR_BYTES = math.prod(input_shape(INPUT_SIZE)) * INPUT_DTYPE().itemsize  # what the pipeline sends to Triton
UTILISATION = 0.7  # plan machines to run at 70% of their measured capacity
PEAK_TO_AVERAGE = 2.0  # a day's traffic is not flat: provision 10M/day for twice its average
# Not measured here (no GPU on this machine): EfficientNet-Lite0 INT8 through TensorRT on one
# T4-class GPU at batch 32, a conservative round figure. Replace it with `imgstream models eval`
# on the production GPU before ordering hardware.
GPU_IMAGES_PER_S_ASSUMED = 2000.0
SCENARIOS = (("10M images/day", 10_000_000 / 86_400 * PEAK_TO_AVERAGE), ("1,000 images/s sustained", 1000.0))
CPU_SIDE = ("taskmanager_jvm", "python_workers")  # the job's own processes


def rate(row: dict | None) -> float | None:
    """A run's throughput: results / (first send to last result). Not the 10-90% "steady" rate:
    results arrive in clumps (at bundle ends, and at checkpoints under exactly-once), which
    makes a window between two quantiles of arrivals meaningless."""
    if not row or "results" not in row:
        return None
    return row.get("images_per_s")


def by_parallelism(report: dict[str, Any], parallelism: int) -> dict | None:
    """The FP32 at-least-once burst of the job with that parallelism (the main job or the other one)."""
    runs = report.get("runs", {})
    for name in ("main", f"parallelism_{parallelism}"):
        run = runs.get(name, {})
        if run.get("parallelism") == parallelism and "peak" in run:
            return run["peak"]
    return None


def stack_cpu_s_per_image(row: dict | None) -> float | None:
    """CPU-s per image of the stack's processes (not other work, not the load generator)."""
    per_image = (row or {}).get("cpu_s_per_image")
    if not per_image:
        return None
    return sum(v for k, v in per_image.items() if not k.startswith("other") and k != "load_generator")


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def complete(report: dict[str, Any]) -> dict[str, Any]:
    """Ratios, targets and the paper estimate, (re)computed from the measurements."""
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    report["estimate"] = estimate(report)
    report["workload_columns"] = e2e_workloads.columns(report)
    return report


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    runs, alone = report.get("runs", {}), report.get("alone", {})
    main = runs.get("main", {})
    model = report["config"]["model_name"]
    ideal = alone.get("ideal_images_per_s", {})
    peak = rate(main.get("peak"))
    out = {"pipeline_images_per_s": peak,
           "pipeline_vs_ideal": _div(peak, ideal.get(model)),
           "pipeline_vs_naive": _div(peak, rate(report.get("naive", {}).get("1"))),
           "pipeline_vs_naive_x2": _div(peak, rate(report.get("naive", {}).get("2"))),
           "parallelism_2_vs_1": _div(rate(by_parallelism(report, 2)), rate(by_parallelism(report, 1))),
           "int8_vs_fp32": _div(rate(runs.get("int8", {}).get("peak")), peak),
           "int8_vs_ideal": _div(rate(runs.get("int8", {}).get("peak")), ideal.get(_int8(model)))}
    pre = alone.get("preprocess", {}).get("cpu_s_per_image")
    inf = alone.get("inference", {}).get(model, {}).get("triton_cpu_s_per_image")
    stack = stack_cpu_s_per_image(main.get("peak"))
    # the same question in CPU time, which other work on the machine does not change: the share
    # of the stack's CPU per image that is the work itself (1 - what Kafka, Flink, gRPC add)
    out["pipeline_cpu_efficiency"] = _div(pre + inf, stack) if pre and inf else None
    peak_row = main.get("peak") or {}
    if peak_row.get("wall_s") and peak_row.get("cpu_s"):
        cores = report.get("machine", {}).get("cpus") or 1
        out["other_work_share_during_peak"] = _div(peak_row["cpu_s"].get("other (not the stack)", 0.0),
                                                   peak_row["wall_s"] * cores)
    half = _at(main.get("curve", []), 0.5)
    if half:
        out["p99_over_p50_at_50pct"] = _div(half["p99_ms"], half["p50_ms"])
    long_run = main.get("memory")  # also at 50% of peak, ~15x the requests of the curve's point
    if long_run and long_run.get("p50_ms"):
        out["p99_over_p50_at_50pct_long"] = _div(long_run["p99_ms"], long_run["p50_ms"])
    eo = runs.get("exactly_once", {}).get("at_50pct")
    if eo and half:
        out["exactly_once_adds_p50_ms"] = round(eo["p50_ms"] - half["p50_ms"], 1)
        out["exactly_once_adds_p99_ms"] = round(eo["p99_ms"] - half["p99_ms"], 1)
    out["exactly_once_peak_vs_at_least_once"] = _div(rate(runs.get("exactly_once", {}).get("peak")), peak)
    return out


def _int8(model: str) -> str:
    return model if model.endswith("_int8") else f"{model}_int8"


def _at(curve: list[dict], fraction: float) -> dict | None:
    return next((row for row in curve if abs(row.get("fraction", -1) - fraction) < 1e-9), None)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    r = report["ratios"]
    out = [_target(f"pipeline >= {TARGET_VS_IDEAL} x ideal (cores / (pre + inf))", r["pipeline_vs_ideal"],
                   TARGET_VS_IDEAL, ">="),
           _target(f"pipeline >= {TARGET_VS_NAIVE:.0f} x naive (1 consumer)", r["pipeline_vs_naive"],
                   TARGET_VS_NAIVE, ">="),
           _target(f"p99 < {TARGET_P99_OVER_P50:.0f} x p50 at 50% of peak (at-least-once; the long run, "
                   "whose p99 rests on the most requests)",
                   r.get("p99_over_p50_at_50pct_long", r.get("p99_over_p50_at_50pct")), TARGET_P99_OVER_P50, "<"),
           _target(f"parallelism 2 >= {TARGET_SCALING} x parallelism 1", r["parallelism_2_vs_1"],
                   TARGET_SCALING, ">=")]
    growth = report.get("runs", {}).get("main", {}).get("memory", {}).get("rss_growth", {})
    for name in ("taskmanager_jvm", "python_workers", "triton"):
        out.append(_target(f"RSS growth of {name} < {TARGET_RSS_GROWTH:.0%} (from "
                           f"{report['settings']['memory_from_s']:.0f} s into the long run to its end)",
                           growth.get(name), TARGET_RSS_GROWTH, "<"))
    return out


def _target(name: str, value: float | None, threshold: float, op: str) -> dict[str, Any]:
    met = value is not None and (value >= threshold if op == ">=" else value < threshold)
    return {"target": name, "value": None if value is None else round(value, 3), "met": met}


def estimate(report: dict[str, Any]) -> dict[str, Any]:
    """Cores and GPUs from the per-image figures measured in this run (see the module constants):
    the first workload's at the top level, and every workload's under `workloads` (first first)."""
    model = report["config"]["model_name"]
    first = first_workload(report)
    per_workload = {first: _estimate(report, model)}
    for name, sub in report.get("other_workloads", {}).items():
        per_workload[name] = _estimate(sub, model)
    return {**per_workload[first], "workloads": per_workload}


def _estimate(sub: dict[str, Any], model: str) -> dict[str, Any]:
    """One workload's estimate; `sub` is the report itself (the first workload) or one of `other_workloads`."""
    alone, main = sub["alone"], sub.get("runs", {}).get("main", {})
    per_image = main.get("peak", {}).get("cpu_s_per_image", {})
    jit = (main.get("peak", {}).get("cpu_s_per_image_within") or {}).get(memory.TASKMANAGER_JIT, 0.0)
    cpu_side = sum(per_image.get(k, 0.0) for k in CPU_SIDE) - jit or alone["preprocess"]["cpu_s_per_image"]
    inf = {name: row["triton_cpu_s_per_image"] for name, row in alone["inference"].items()}
    inf_cpu = inf.get(_int8(model), inf.get(model))
    mean_bytes = sum(p["bytes"] for p in sub["photos"]) / max(1, len(sub["photos"]))
    rows = []
    for name, images_per_s in SCENARIOS:
        rows.append({
            "scenario": name, "images_per_s": round(images_per_s, 1),
            "job_cores": math.ceil(images_per_s * cpu_side / UTILISATION),
            "cpu_inference_cores": math.ceil(images_per_s * inf_cpu / UTILISATION),
            "gpus": max(1, math.ceil(images_per_s / (GPU_IMAGES_PER_S_ASSUMED * UTILISATION))),
            "kafka_cores": round(images_per_s * per_image.get("kafka", 0.0) / UTILISATION, 2),
            "s3_egress_mbit_s": round(images_per_s * mean_bytes * 8 / 1e6),
            "triton_ingress_mbit_s": round(images_per_s * TENSOR_BYTES * 8 / 1e6),
        })
    return {"job_cpu_s_per_image": round(cpu_side, 5), "preprocess_cpu_s_per_image": alone["preprocess"]["cpu_s_per_image"],
            "inference_cpu_s_per_image": inf_cpu, "inference_model": _int8(model) if _int8(model) in inf else model,
            "mean_photo_bytes": round(mean_bytes), "utilisation": UTILISATION, "peak_to_average": PEAK_TO_AVERAGE,
            "gpu_images_per_s_assumed": GPU_IMAGES_PER_S_ASSUMED, "scenarios": rows,
            "bottleneck_here": _bottleneck(per_image)}


def _bottleneck(per_image: dict[str, float]) -> str | None:
    stack = {k: v for k, v in per_image.items() if not k.startswith("other") and k != "load_generator"}
    if not stack:
        return None
    name = max(stack, key=stack.get)
    return f"{name} ({stack[name] / sum(stack.values()):.0%} of the stack's CPU per image at peak)"


# -- Markdown ---------------------------------------------------------------------------------
def _run_row(label: str, row: dict | None, note: str = "") -> str:
    if not row or "results" not in row:
        reason = (row or {}).get("skipped", "not measured")
        return f"| {label} | – | – | – | – | – | {reason} |"
    return (f"| {label} | {figure(rate(row))} | {figure(row['p50_ms'], '.0f')} | {figure(row['p95_ms'], '.0f')} | "
            f"{figure(row['p99_ms'], '.0f')} | {figure(row.get('mean_batch_size'), '.1f')} | {note} |")


def table(report: dict[str, Any]) -> str:
    """Throughput and latency of every run, then the work alone, then the ratios."""
    runs, alone, r = report.get("runs", {}), report["alone"], report["ratios"]
    main = runs.get("main", {})
    model = report["config"]["model_name"]
    lines = ["| run | images/s | p50 ms | p95 ms | p99 ms | mean batch | note |", "|---|---|---|---|---|---|---|"]
    par = main.get("parallelism", "?")
    lines.append(_run_row(f"pipeline, parallelism {par}, {model}, at-least-once: burst (peak)", main.get("peak") or main,
                          "latency of a burst is queueing"))
    for row in main.get("curve", []):
        lines.append(_run_row(f"  offered {row['fraction']:.0%} of peak = {row['offered_per_s']:.1f}/s", row))
    mem = main.get("memory")
    if mem:
        lines.append(_run_row(f"  long run, {report['settings']['memory_seconds']:.0f} s at "
                              f"{mem['offered_per_s']:.1f}/s", mem, "RSS sampled"))
    eo = runs.get("exactly_once", {})
    lines.append(_run_row("exactly-once: at 50% of peak", eo.get("at_50pct") or eo,
                          f"checkpoint every {report['config']['checkpoint_interval_ms'] / 1000:g} s"))
    lines.append(_run_row("exactly-once: burst (peak)", eo.get("peak") or eo, "results visible at checkpoints"))
    name, other = _other_parallelism(runs)
    lines.append(_run_row(f"parallelism {name.split('_')[-1]}, {model}: burst", other.get("peak") or other))
    i8 = runs.get("int8", {})
    lines.append(_run_row(f"parallelism {par}, {_int8(model)}: burst", i8.get("peak") or i8))
    naive = report.get("naive", {})
    for n in ("1", "2"):
        if n in naive:
            lines.append(_run_row(f"naive, {n} consumer process{'es' if n != '1' else ''}: burst", naive[n],
                                  "Pillow full decode, float32, 1 image/request"))
    for name, ideal in alone.get("ideal_images_per_s", {}).items():
        lines.append(f"| ideal, {name}: cores / (pre + inf) | {ideal:.1f} | | | | | from the work alone |")

    pre = alone["preprocess"]
    lines += ["", "| work alone, per image | CPU ms | note |", "|---|---|---|",
              f"| preprocessing (engine, S3 GET included) | {pre['cpu_s_per_image'] * 1000:.1f} | "
              f"{pre['images_per_core_s']:.0f} img/s per core; S3Proxy adds {figure(_ms(pre['s3proxy_cpu_s_per_image']))} ms |"]
    for name, row in alone["inference"].items():
        lines.append(f"| inference {name}, batch {row['batch']} x {row['concurrency']} in flight (Triton CPU) | "
                     f"{row['triton_cpu_s_per_image'] * 1000:.1f} | {row['images_per_s']:.0f} img/s wall; "
                     f"client {row['client_cpu_s_per_image'] * 1000:.2f} ms |")
    lines += ["", cpu_table(report), "", stage_table(report), "",
              "| ratio | value |", "|---|---|",
              f"| **pipeline ÷ ideal ({model})** | **{figure(r['pipeline_vs_ideal'], '.2f')}** |",
              f"| the same in CPU time: (pre + inf) ÷ the stack's CPU per image | "
              f"{figure(r.get('pipeline_cpu_efficiency'), '.2f')} |",
              f"| other work on the machine during that burst, share of all cores | "
              f"{figure(r.get('other_work_share_during_peak'), '.0%')} |",
              f"| **pipeline ÷ naive (1 consumer)** | **{figure(r['pipeline_vs_naive'], '.1f')}x** |",
              f"| pipeline ÷ naive (2 consumers) | {figure(r.get('pipeline_vs_naive_x2'), '.1f')}x |",
              f"| **parallelism 2 ÷ 1** | **{figure(r['parallelism_2_vs_1'], '.2f')}x** |",
              f"| INT8 ÷ FP32 (pipeline) | {figure(r['int8_vs_fp32'], '.2f')}x |",
              f"| INT8 pipeline ÷ INT8 ideal | {figure(r['int8_vs_ideal'], '.2f')} |",
              f"| **p99 ÷ p50 at 50% of peak, long run** | **{figure(r.get('p99_over_p50_at_50pct_long'), '.2f')}** |",
              f"| p99 ÷ p50 at 50% of peak, the curve's point | {figure(r.get('p99_over_p50_at_50pct'), '.2f')} |",
              f"| exactly-once adds (p50 / p99 at 50%) | {figure(r.get('exactly_once_adds_p50_ms'), '.0f')} ms / "
              f"{figure(r.get('exactly_once_adds_p99_ms'), '.0f')} ms |",
              f"| exactly-once peak ÷ at-least-once peak | {figure(r.get('exactly_once_peak_vs_at_least_once'), '.2f')} |"]
    return "\n".join(lines)


def _other_parallelism(runs: dict[str, Any]) -> tuple[str, dict]:
    """The scaling job (`parallelism_1` or `parallelism_2`) and its runs."""
    for name in ("parallelism_2", "parallelism_1"):
        if name in runs:
            return name, runs[name]
    return "parallelism_2", {}


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def cpu_table(report: dict[str, Any]) -> str:
    """CPU ms per image of each process group during each burst: where the cores went."""
    name, other = _other_parallelism(report.get("runs", {}))
    runs = {"pipeline": report.get("runs", {}).get("main", {}).get("peak"),
            name.replace("_", " "): other.get("peak"),
            "INT8": report.get("runs", {}).get("int8", {}).get("peak"),
            "naive x1": report.get("naive", {}).get("1")}
    runs = {k: v for k, v in runs.items() if v and v.get("cpu_s_per_image")}
    if not runs:
        return ""
    groups = sorted({g for v in runs.values() for g in v["cpu_s_per_image"]}, key=lambda g: (g.startswith("other"), g))
    lines = ["| CPU ms per image, during the burst | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(figure(_ms(v["cpu_s_per_image"].get(g)), ".1f") for v in runs.values()) + " |")
    lines.append("| machine busy, % of all cores | " + " | ".join(
        f"{_busy(v, report):.0f}%" for v in runs.values()) + " |")
    return "\n".join(lines)


def _busy(row: dict, report: dict[str, Any]) -> float:
    cores = report.get("machine", {}).get("cpus") or 1
    return 100 * sum(row["cpu_s"].values()) / (row["wall_s"] * cores) if row.get("wall_s") else 0.0


def stage_table(report: dict[str, Any]) -> str:
    """Mean ms per stage (share of the mean end-to-end latency) at each offered rate."""
    curve = report.get("runs", {}).get("main", {}).get("curve", [])
    eo = report.get("runs", {}).get("exactly_once", {}).get("at_50pct")
    cols = [(f"{row['fraction']:.0%}", row) for row in curve] + ([("EO 50%", eo)] if eo else [])
    if not cols:
        return ""
    lines = ["| stage, mean ms (share) | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for stage in STAGE_ORDER:
        cells = []
        for _, row in cols:
            ms, total = row.get("stages_ms", {}).get(stage), row.get("mean_ms") or 0
            cells.append(f"{ms:.0f} ({ms / total:.0%})" if ms is not None and total else "–")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| end to end (mean) | " + " | ".join(f"{row.get('mean_ms', 0):.0f}" for _, row in cols) + " |")
    return "\n".join(lines)


def _estimates(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Workload name -> its estimate (a report written before the per-workload estimate: its one workload)."""
    e = report["estimate"]
    return e.get("workloads") or {first_workload(report): e}


def estimate_table(report: dict[str, Any]) -> str:
    """A row per workload and scenario."""
    per_workload = _estimates(report)
    lines = ["| workload | scenario | images/s planned | job cores | + inference on CPU cores | or GPUs | Kafka cores | "
             "S3 egress Mbit/s | to Triton Mbit/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, w in per_workload.items():
        for s in w["scenarios"]:
            lines.append(f"| {name} | {s['scenario']} | {s['images_per_s']:.0f} | {s['job_cores']} | "
                         f"{s['cpu_inference_cores']} | {s['gpus']} | {s['kafka_cores']:.2f} | {s['s3_egress_mbit_s']} | "
                         f"{s['triton_ingress_mbit_s']} |")
    return "\n".join(lines)


LEGEND = """\
images/s: results ÷ (first send to last result); a burst's row is the best of its rounds (other
work on a shared machine only ever slows a round down). Latency: from our producer's send to a
read_committed consumer's receipt. ideal = cores / (preprocessing + inference CPU-s per image),
each measured alone on the same photos. CPU ms per image: psutil CPU time of each process group
during the burst ÷ results; "other" = the machine's busy time no stack process accounts for
(other work on a shared machine). Stages: the results' timings_ms; "outside" = end to end minus
the operator's total (Kafka, the Flink bridge and bundle ends, the sink)."""


def estimate_text(report: dict[str, Any]) -> str:
    e = report["estimate"]
    costs = "; ".join(f"{name}: the job (TaskManager JVM + Python workers, JIT excluded) {w['job_cpu_s_per_image'] * 1000:.1f} CPU ms "
                      f"per image (preprocessing alone {w['preprocess_cpu_s_per_image'] * 1000:.1f}), photos average "
                      f"{w['mean_photo_bytes'] / 1e6:.2f} MB" for name, w in _estimates(report).items())
    return "\n".join([
        estimate_table(report), "",
        f"From this run: {costs}; inference {e['inference_model']} on CPU {e['inference_cpu_s_per_image'] * 1000:.1f} "
        f"CPU ms. Machines planned at {e['utilisation']:.0%} of capacity; 10M/day "
        f"provisioned at {e['peak_to_average']:g}x its average. GPUs assume {e['gpu_images_per_s_assumed']:.0f} img/s "
        "per GPU (Lite0 INT8, TensorRT, T4-class; NOT measured here).",
        f"Bottleneck here: {e['bottleneck_here']}. With inference on GPUs the CPU side (JPEG decode, then the "
        "Python/Flink overhead) sets the core count, and at 1,000 images/s the S3 egress and the tensors into "
        "the GPU nodes (uint8: 4x less than float32) are the next limits."])
