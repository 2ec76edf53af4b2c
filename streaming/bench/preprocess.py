"""`imgstream bench preprocess`: JPEG bytes -> 224x224 model input, this engine against what
users would otherwise write and against libjpeg-turbo in C, on the same photos in one run.

Speed is images per CPU-second of the measuring process ("per core"): on a machine shared
with other work, CPU time is far steadier than wall time. Methods are measured in rounds, in a
rotated order, so that drift of the machine hits them alike. The fetch-included row also
reports wall time (the server's latency is part of it) and the scaling runs are wall time
only, with the CPU share the workers got. The decoder-process pool's row (what the job runs:
`streaming.decoder_pool`, one worker) counts the CPU of this process and of the worker, so
`pool_overhead` (per group: 1 - pool / in-process engine, per core) is what the pipes cost.
"""
from __future__ import annotations

import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from streaming.bench import methods as m
from streaming.bench.climit import CLimit
from streaming.bench.measure import Sample, WorkerPool, measure
from streaming.bench.photos import GROUPS, BenchPhoto
from streaming.bench.stores import PhotoStore
from streaming.contract import INPUT_DTYPE, Resize, input_shape
from streaming.decode import JPEG_BACKEND
from streaming.decoder_pool import DecoderPool

METHODS = (  # key, label; in the table's order
    ("naive", "(a) Pillow naive: full decode + convert('RGB') + resize"),
    ("pillow_draft", "(b) Pillow draft() + resize"),
    ("opencv_full", "(c) OpenCV imdecode full + INTER_AREA"),
    ("opencv_reduced", "(c) OpenCV IMREAD_REDUCED_* + INTER_AREA"),
    ("engine_turbojpeg", "(d) engine, PyTurboJPEG path, fetch excluded"),
    ("engine_pillow", "(d) engine, Pillow-draft path, fetch excluded"),
    ("engine_fetch", "(d) engine, fetch included"),
    ("engine_pool", "(d) engine in the decoder-process pool (CPU of both processes)"),
    ("c_limit", "(e) C limit: TurboJPEG loop, same scale"),
)
ENGINE = f"engine_{JPEG_BACKEND}"  # the engine's default path, the one the targets apply to
TARGET_VS_C = 0.85
TARGET_SCALING = 1.9
TARGET_MAD = 2.0
TARGET_POOL_OVERHEAD = 0.03  # the decoder-process pool's CPU cost over the in-process engine
OPENCV_MISSING = "OpenCV not installed (pip install 'imgstream[bench]')"


def run(photos: list[BenchPhoto], store: Callable[[list[BenchPhoto], Path], PhotoStore], *,
        seconds: float = 0.5, rounds: int = 3, scaling_seconds: float = 2.0,
        workers: tuple[int, ...] = (1, 2), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything; returns the report (see `report.py` for its table and targets)."""
    groups = [g for g in GROUPS if any(p.group == g for p in photos)]
    with tempfile.TemporaryDirectory(prefix="imgstream-bench-") as tmp:
        folder = Path(tmp)
        for photo in photos:
            (folder / photo.name).write_bytes(photo.data)
        log(f"photos: {', '.join(f'{p.name} {p.width}x{p.height}' for p in photos)}")
        photo_store = store(photos, folder)
        fetcher = photo_store.fetcher()
        c_limit = CLimit()
        pool = DecoderPool(1, max_decode_ms=60_000)
        try:
            calls = _calls(photos, photo_store, fetcher, pool)
            mad = _correctness(photos, calls, log)
            samples = _rounds(photos, groups, calls, c_limit, folder, seconds, rounds, log, pool)
            scaling = _scaling(photos, groups, folder, workers, scaling_seconds, log)
        finally:
            fetcher.close()
            c_limit.close()
            pool.close()
    summaries = {g: _summarise(g, photos, samples, mad, c_limit.unavailable) for g in groups}
    overhead = {g: _pool_overhead(rows) for g, rows in summaries.items()}
    log("decoder-process pool overhead (1 - pool / in-process, per core): "
        + ", ".join(f"{g} {v:.1%}" if v is not None else f"{g} n/a" for g, v in overhead.items()))
    return {
        "benchmark": "preprocess",
        "settings": {"seconds": seconds, "rounds": rounds, "scaling_seconds": scaling_seconds,
                     "workers": list(workers), "store": photo_store.kind, "engine_default": JPEG_BACKEND},
        "machine": _machine(),
        "photos": [{"name": p.name, "group": p.group, "width": p.width, "height": p.height,
                    "bytes": len(p.data), "engine_scale": list(m.engine_scale(p.data))} for p in photos],
        "methods": {key: label for key, label in METHODS},
        "groups": summaries,
        "pool_overhead": {g: None if v is None else round(v, 4) for g, v in overhead.items()},
        "scaling": scaling,
    }


def _pool_overhead(rows: dict[str, Any]) -> float | None:
    pool, engine = rows.get("engine_pool", {}), rows.get(ENGINE, {})
    if "images_per_core_s" not in pool or not engine.get("images_per_core_s"):
        return None
    return 1.0 - pool["images_per_core_s"] / engine["images_per_core_s"]


# -- what each method does, per photo --------------------------------------------------
def _calls(photos: list[BenchPhoto], store: PhotoStore, fetcher: Any,
           pool: DecoderPool) -> dict[str, dict[str, Callable[[], np.ndarray]]]:
    from streaming.prepare import fetch_decode

    calls: dict[str, dict[str, Callable[[], np.ndarray]]] = {key: {} for key, _ in METHODS if key != "c_limit"}
    if not m.have_opencv():
        del calls["opencv_full"], calls["opencv_reduced"]
    for p in photos:
        data = p.data
        reduced = m.opencv_reduced(m.opencv_reduction(p.width, p.height))
        ref = store.refs[p.name]
        calls["naive"][p.name] = lambda data=data: m.naive_pillow(data)
        calls["pillow_draft"][p.name] = lambda data=data: m.pillow_draft(data)
        if "opencv_full" in calls:
            calls["opencv_full"][p.name] = lambda data=data: m.opencv_full(data)
            calls["opencv_reduced"][p.name] = lambda data=data, f=reduced: f(data)
        calls["engine_turbojpeg"][p.name] = lambda data=data: m.engine("turbojpeg")(data)
        calls["engine_pillow"][p.name] = lambda data=data: m.engine("pillow")(data)
        calls["engine_fetch"][p.name] = lambda ref=ref: fetch_decode(
            fetcher, ref, resize=Resize(m.SIZE), max_pixels=m.MAX_PIXELS).tensor
        calls["engine_pool"][p.name] = lambda data=data: pool.decode(
            data, Resize(m.SIZE), max_pixels=m.MAX_PIXELS, jpeg_backend=JPEG_BACKEND).tensor
    return calls


def _correctness(photos: list[BenchPhoto], calls: dict, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """Mean absolute difference (0-255) of each method's output against full decode + area
    resize, per photo. Also the warm-up: every call runs once before any timing."""
    mad: dict[str, dict[str, float]] = {key: {} for key in calls}
    for p in photos:
        want = m.reference(p.data)
        for key, per_photo in calls.items():
            got = per_photo[p.name]()
            if got.shape != input_shape(m.SIZE) or got.dtype != INPUT_DTYPE:
                raise AssertionError(f"{key} made {got.shape} {got.dtype} from {p.name}")
            mad[key][p.name] = m.mean_abs_diff(got, want)
    log("correctness checked (mean absolute difference vs full decode + area resize)")
    return mad


def _rounds(photos: list[BenchPhoto], groups: list[str], calls: dict, c_limit: CLimit, folder: Path,
            seconds: float, rounds: int, log: Callable[[str], None],
            pool: DecoderPool) -> dict[tuple[str, str], list[Sample]]:
    samples: dict[tuple[str, str], list[Sample]] = {}
    keys = [key for key, _ in METHODS]
    for r in range(rounds):
        for group in groups:
            members = [p for p in photos if p.group == group]
            order = keys[r % len(keys):] + keys[:r % len(keys)]  # rotated each round
            for key in order:
                if key == "c_limit":
                    sample = _c_sample(c_limit, members, folder, seconds)
                    if sample is None:
                        continue
                elif key not in calls:
                    continue
                elif key == "engine_pool":
                    sample = _pool_sample(pool, [(calls[key][p.name], p.megapixels) for p in members], seconds)
                else:
                    sample = measure([(calls[key][p.name], p.megapixels) for p in members], seconds)
                samples.setdefault((group, key), []).append(sample)
        log(f"round {r + 1}/{rounds} done")
    return samples


def _pool_sample(pool: DecoderPool, calls: list[tuple[Callable[[], object], float]], seconds: float) -> Sample:
    """As `measure`, counting the CPU time of the pool's worker with this process's."""
    images, megapixels = 0, 0.0
    cpu0, wall0 = time.process_time() + pool.cpu_seconds(), time.perf_counter()
    while True:
        for call, mp in calls:
            call()
            images += 1
            megapixels += mp
        cpu = time.process_time() + pool.cpu_seconds() - cpu0
        if cpu >= seconds and images >= 2:
            return Sample(images, megapixels, cpu, time.perf_counter() - wall0)


def _c_sample(c_limit: CLimit, members: list[BenchPhoto], folder: Path, seconds: float) -> Sample | None:
    if c_limit.binary is None:
        return None
    run = c_limit.run([(folder / p.name, m.engine_scale(p.data, "turbojpeg")) for p in members], seconds)
    rounds = run.iterations // len(members)
    return Sample(run.iterations, rounds * sum(p.megapixels for p in members), run.cpu_s, run.wall_s)


def _scaling(photos: list[BenchPhoto], groups: list[str], folder: Path, workers: tuple[int, ...],
             seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    """The engine (fetch excluded) in 1..N worker processes at once, alternating N, twice."""
    out: dict[str, Any] = {}
    pool = WorkerPool(max(workers))
    try:
        for group in groups:
            paths = [str(folder / p.name) for p in photos if p.group == group]
            runs = {n: [] for n in workers}
            for _ in range(2):
                for n in workers:
                    runs[n].append(pool.run(n, paths, JPEG_BACKEND, seconds))
            best = {n: max(rs, key=lambda r: r.throughput) for n, rs in runs.items()}
            base, base_core = best[workers[0]].throughput, best[workers[0]].per_core
            out[group] = {str(n): {"images_per_s": round(best[n].throughput, 2),
                                   "speedup": round(best[n].throughput / base, 3) if base else None,
                                   "cpu_share": round(best[n].cpu_share, 3),
                                   "per_core_efficiency": round(best[n].per_core / base_core, 3)
                                   if base_core else None,
                                   "runs_images_per_s": [round(r.throughput, 2) for r in runs[n]]}
                          for n in workers}
        log("scaling runs done")
    finally:
        pool.close()
    return out


def _summarise(group: str, photos: list[BenchPhoto], samples: dict, mad: dict,
               c_unavailable: str | None) -> dict[str, Any]:
    members = [p.name for p in photos if p.group == group]
    rows: dict[str, Any] = {}
    for key, _label in METHODS:
        runs = samples.get((group, key), [])
        if not runs:
            reason = c_unavailable if key == "c_limit" else OPENCV_MISSING if "opencv" in key else None
            rows[key] = {"unavailable": reason or "not measured"}
            continue
        per_core = statistics.median(s.per_core for s in runs)
        mp_per_image = sum(s.megapixels for s in runs) / sum(s.images for s in runs)
        row = {"images_per_core_s": round(per_core, 2),
               "mp_per_core_s": round(per_core * mp_per_image, 1),
               "images_per_wall_s": round(sum(s.images for s in runs) / sum(s.wall_s for s in runs), 2),
               "rounds_images_per_core_s": [round(s.per_core, 2) for s in runs],
               "images": sum(s.images for s in runs)}
        if key in mad:
            row["mad_max"] = round(max(mad[key][name] for name in members), 3)
        rows[key] = row
    return rows


def _machine() -> dict[str, Any]:
    from PIL import features

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import os
        info["cpus"] = os.cpu_count()
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
        model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        info["cpu"] = model[0] if model else platform.processor()
    except OSError:
        pass
    info["pillow_libjpeg_turbo"] = features.version("libjpeg_turbo")
    info["libturbojpeg"] = _dpkg_version("libturbojpeg0")
    try:
        import cv2
        info["opencv"] = cv2.__version__
    except ImportError:
        info["opencv"] = None
    info["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return info


def _dpkg_version(package: str) -> str | None:
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() or None
