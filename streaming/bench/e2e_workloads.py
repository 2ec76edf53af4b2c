"""The e2e report's workloads side by side, and the per-stage CPU breakdown per image.

Every figure comes from the main job's peak burst of each workload (CPU ms per image: a
group's psutil CPU time during the burst ÷ results, `memory.CpuMeter`), its 50%-of-peak rate
point (latency) and that workload's work alone (the ideal). The breakdown:

* Python workers: the TaskManager's Python processes, decoder processes included;
* of which decode: the decoder processes (`streaming.decoder_worker`: decode + resize);
* Python workers beyond decoding: the rest (fetch, hand-off, batching, gRPC client, the Beam
  bridge, serialisation, metrics);
* Flink JVMs: the TaskManager JVM + the JobManager;
* of which JIT compilation: their C1/C2 compiler threads, compiling a freshly submitted job's
  code (`memory.JIT_GROUPS`; a benchmark's jobs are minutes old, a production job is not);
* Triton (server + backend stubs), S3Proxy, Kafka, the load generator (this process), other;
* the job's own CPU beyond decode and inference = (Python workers - decode) + Flink JVMs -
  JIT compilation: what a warmed-up job costs on top of the work itself. Runs recorded before
  the JIT split have no JIT figure: their headline includes it.
"""
from __future__ import annotations

from typing import Any

from streaming.bench import memory

LABELS = (  # breakdown key -> the table's row
    ("python_workers_ms", "Python workers (incl. decoder processes)"),
    ("decode_ms", "  of which decode (decoder processes)"),
    ("python_beyond_decode_ms", "  Python workers beyond decoding"),
    ("flink_jvms_ms", "TaskManager JVM + JobManager"),
    ("jit_ms", "  of which JIT compilation (a new job's warm-up)"),
    ("triton_ms", "Triton"),
    ("s3proxy_ms", "S3Proxy"),
    ("kafka_ms", "Kafka"),
    ("load_generator_ms", "load generator (producer + results reader)"),
    ("other_ms", "other work on the machine"),
)
HEADLINE = "job_beyond_decode_and_inference_ms"


def _ms(per_image: dict[str, float], *keys: str) -> float | None:
    values = [per_image[k] for k in keys if k in per_image]
    return round(1000 * sum(values), 2) if values else None


def breakdown(row: dict[str, Any] | None) -> dict[str, float | None]:
    """CPU ms per image by stage, from a load row's `cpu_s_per_image` (+ `_within`). Decode is
    None where the row predates the decoder split (then so are the figures that need it)."""
    per_image = (row or {}).get("cpu_s_per_image") or {}
    within = (row or {}).get("cpu_s_per_image_within") or {}
    out = {"python_workers_ms": _ms(per_image, "python_workers"),
           "decode_ms": _ms(within, memory.DECODERS),
           "flink_jvms_ms": _ms(per_image, "taskmanager_jvm", "flink-jm"),
           "jit_ms": _ms(within, memory.TASKMANAGER_JIT, memory.JOBMANAGER_JIT),
           "triton_ms": _ms(per_image, "triton"), "s3proxy_ms": _ms(per_image, "s3proxy"),
           "kafka_ms": _ms(per_image, "kafka"), "load_generator_ms": _ms(per_image, "load_generator"),
           "other_ms": _ms(per_image, "other (not the stack)")}
    py, decode, jvms = out["python_workers_ms"], out["decode_ms"], out["flink_jvms_ms"]
    out["python_beyond_decode_ms"] = round(py - decode, 2) if py is not None and decode is not None else None
    beyond = out["python_beyond_decode_ms"]
    out[HEADLINE] = round(beyond + (jvms or 0.0) - (out["jit_ms"] or 0.0), 2) if beyond is not None else None
    return out


def _half(curve: list[dict]) -> dict | None:
    return next((row for row in curve if abs(row.get("fraction", -1) - 0.5) < 1e-9), None)


def column(sub: dict[str, Any], model: str) -> dict[str, Any]:
    """One workload's figures: `sub` is the report itself (the first workload) or one of
    `other_workloads`."""
    main = sub.get("runs", {}).get("main", {})
    peak, half = main.get("peak"), _half(main.get("curve", []))
    alone = sub.get("alone", {})
    ideal = alone.get("ideal_images_per_s", {}).get(model)
    images_per_s = (peak or {}).get("images_per_s") if peak and "results" in peak else None
    photos = sub.get("photos", [])
    pre = alone.get("preprocess", {}).get("cpu_s_per_image")
    inf = alone.get("inference", {}).get(model, {}).get("triton_cpu_s_per_image")
    return {"photos": len(photos),
            "mean_megapixels": round(sum(p["width"] * p["height"] for p in photos) / 1e6 / len(photos), 2)
            if photos else None,
            "mean_kb": round(sum(p["bytes"] for p in photos) / 1000 / len(photos), 1) if photos else None,
            "images_per_s": images_per_s, "ideal_images_per_s": ideal,
            "vs_ideal": round(images_per_s / ideal, 3) if images_per_s and ideal else None,
            "p50_ms_at_50pct": (half or {}).get("p50_ms"), "p99_ms_at_50pct": (half or {}).get("p99_ms"),
            "preprocess_alone_ms": round(pre * 1000, 2) if pre else None,
            "inference_alone_ms": round(inf * 1000, 2) if inf else None,
            "cpu_ms_per_image": breakdown(peak), "skipped": main.get("skipped")}


def columns(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Workload name -> `column`, the first workload first."""
    model = report["config"]["model_name"]
    out = {first_workload(report): column(report, model)}
    for name, sub in report.get("other_workloads", {}).items():
        out[name] = column(sub, model)
    return out


def figure(value: Any, fmt: str = ".1f") -> str:
    """A table cell: the value formatted, or – when it was not measured."""
    return "–" if value is None else format(value, fmt)


def first_workload(report: dict[str, Any]) -> str:
    """The name of the report's first workload (the one at its top level)."""
    return report.get("workload", {}).get("name", "large")


def side_by_side(report: dict[str, Any]) -> str:
    """One Markdown table, a column per workload."""
    cols = report.get("workload_columns") or columns(report)
    names = list(cols)
    rows = [("photos (mean MP, mean KB)", lambda c: f"{c['photos']} ({figure(c['mean_megapixels'], '.2f')} MP, "
                                                    f"{figure(c['mean_kb'], '.0f')} KB)"),
            ("**images/s** (main job, best burst)", lambda c: figure(c["images_per_s"], ".1f")),
            ("ideal: cores / (pre + inf) alone", lambda c: figure(c["ideal_images_per_s"], ".1f")),
            ("**pipeline ÷ ideal**", lambda c: figure(c["vs_ideal"], ".2f")),
            ("p50 / p99 ms at 50% of peak", lambda c: f"{figure(c['p50_ms_at_50pct'], '.0f')} / "
                                                      f"{figure(c['p99_ms_at_50pct'], '.0f')}"),
            ("work alone: preprocessing / inference, CPU ms", lambda c: f"{figure(c['preprocess_alone_ms'], '.1f')} / "
                                                                         f"{figure(c['inference_alone_ms'], '.1f')}")]
    rows.append(("*CPU ms per image during that burst:*", lambda c: ""))
    rows += [(label, lambda c, key=key: figure(c["cpu_ms_per_image"][key], ".2f")) for key, label in LABELS]
    rows.append(("**job's own CPU ms/image beyond decode, inference and JIT**",
                 lambda c: figure(c["cpu_ms_per_image"][HEADLINE], ".2f")))
    lines = ["| workload | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cell(cols[n]) for n in names) + " |" for label, cell in rows]
    skipped = [f"{n}: {c['skipped']}" for n, c in cols.items() if c.get("skipped")]
    if skipped:
        lines.append("")
        lines += [f"skipped: {s}" for s in skipped]
    return "\n".join(lines)
