"""``imgstream models eval``: accuracy/agreement on real photos + Triton latency/throughput, one report.

Steps: fetch the photos (pinned Debian packages), build an evaluation repository with every
CPU-runnable variant (FP16 included, response cache off), compute accuracy with onnxruntime
(:mod:`triton_models.evaluate`), start a Triton serving it (``serve``, given by the caller:
``imgstream models eval`` starts one of its own on ports 28000-28002) and load it
(:mod:`triton_models.loadgen`). Prints two tables, writes JSON, and lists missed targets.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Sequence

from streaming.contract import load_labels
from triton_models import build, evaluate, loadgen, photos
from triton_models.variants import ALL_VARIANTS, ArtifactStore, Variant

TARGET_INT8_SPEEDUP_BATCH8 = 1.8


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    variants: tuple[Variant, ...] = ALL_VARIANTS
    batches: tuple[int, ...] = (1, 8, 32)
    concurrency: int = 2
    rounds: int = 5
    seconds: float = 1.5
    triton: bool = True  # False: accuracy only


def run(store: ArtifactStore, repo: Path, options: EvalOptions, *, sample_folders: Sequence[Path] = (),
        serve: Callable[[Path], ContextManager[str]] | None = None, log=print) -> dict:
    """Build the evaluation repository ``repo`` from ``store``, measure accuracy on the eval photos
    (``sample_folders`` first), and with ``options.triton`` the load on the Triton that
    ``serve(repo)`` starts (a context manager yielding its gRPC address)."""
    if options.triton and serve is None:
        raise ValueError("options.triton needs serve: something that starts a Triton on the repository")
    photos.ensure_photos(store.photos_dir)
    eval_photos = photos.eval_photos(store.photos_dir, sample_folders)
    variants = _with_references(options.variants)
    start = time.monotonic()
    build.build_repository(repo, variants=variants, response_cache=False, store=store)
    log(f"evaluation repository ({len(variants)} models) ready in {time.monotonic() - start:.1f}s: {repo}")

    log(f"accuracy on {len(eval_photos)} real photos "
        f"({sum(1 for p in eval_photos if p.labels)} hand-labelled), onnxruntime")
    paths = {v.name: repo / v.name / build.MODEL_VERSION / build.ONNX_FILE for v in variants}
    accuracy = evaluate.evaluate(list(variants), paths, eval_photos, load_labels())
    report = {"photos": [p.id for p in eval_photos], "accuracy": [a.as_dict() for a in accuracy],
              "load": [], "machine": {"cpus": _cpus(), "platform": platform.platform()},
              "load_settings": {"concurrency": options.concurrency, "rounds": options.rounds,
                                "seconds_per_cell": options.seconds}}
    if options.triton:
        log(f"Triton load: closed loop, concurrency {options.concurrency}, {options.rounds} interleaved rounds "
            f"x {options.seconds:.1f}s per model and batch size")
        with serve(repo) as url:
            load = loadgen.measure(url, {v.name: v.image_size for v in variants}, options.batches,
                                   concurrency=options.concurrency, rounds=options.rounds,
                                   seconds=options.seconds, log=log,
                                   references={v.name: Variant(v.arch, "fp32").name for v in variants
                                               if v.precision != "fp32"})
        report["load"] = [r.as_dict() for r in load]
    report["failures"] = evaluate.accuracy_failures(accuracy) + speed_failures(report["load"])
    return report


def speed_failures(load: list[dict]) -> list[str]:
    """INT8 must reach 1.8x the throughput of FP32 (same architecture, same round) at batch 8."""
    failures = []
    for r in load:
        if r["batch"] == 8 and r["model"].endswith("_int8") and r["vs_reference"] is not None \
                and r["vs_reference"] < TARGET_INT8_SPEEDUP_BATCH8:
            failures.append(f"{r['model']}: {r['vs_reference']:.2f}x FP32 throughput at batch 8 "
                            f"(target >= {TARGET_INT8_SPEEDUP_BATCH8}x)")
    return failures


def format_tables(report: dict) -> str:
    lines = ["| model | top-1 = FP32 (all) | top-1 = FP32 (FP32 p>=0.3) | FP32 top-1 in top-5 | "
             "hand labels top-1 / top-5 |", "|---|---|---|---|---|"]
    for a in report["accuracy"]:
        lines.append(f"| {a['variant']} | {_pct(a['agree_top1'])} of {a['photos']} | "
                     f"{_pct(a['agree_confident'])} of {a['confident']} | {_pct(a['fp32_top1_in_top5'])} | "
                     f"{_pct(a['top1_acc'])} / {_pct(a['top5_acc'])} of {a['labelled']} |")
    if report["load"]:
        batches = sorted({r["batch"] for r in report["load"]})
        models = list(dict.fromkeys(r["model"] for r in report["load"]))
        cell = {(r["model"], r["batch"]): r for r in report["load"]}
        lines += ["", "| model | " + " | ".join(f"batch {b}: img/s (p50 ms)" for b in batches)
                  + " | " + " | ".join(f"vs FP32, batch {b}" for b in batches) + " |",
                  "|---|" + "---|" * (2 * len(batches))]
        for m in models:
            cols = [f"{cell[m, b]['images_per_s']:.1f} ({cell[m, b]['p50_ms']:.0f})" for b in batches]
            ratios = [f"{cell[m, b]['vs_reference']:.2f}x" if cell[m, b]["vs_reference"] else "" for b in batches]
            lines.append(f"| {m} | " + " | ".join(cols + ratios) + " |")
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def _with_references(variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
    """The variants plus FP32 of each of their architectures (the reference), FP32 first."""
    wanted = set(variants) | {Variant(v.arch, "fp32") for v in variants}
    return tuple(v for v in ALL_VARIANTS if v in wanted)


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.1%}"


def _cpus() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{os.cpu_count()} x {model}"
