"""Latency and throughput of Triton models: a closed-loop gRPC load generator (no perf_analyzer here).

``concurrency`` threads each keep one request of ``batch`` images in flight for ``seconds``;
every (batch size) row measures all models in interleaved rounds (model order rotated each
round), so load from other processes on a shared machine hits every model alike. Reports
p50/p95 request latency and images per second. It loads a Triton at a gRPC address;
starting one (``imgstream models eval``: ``streaming/bench/side_triton.py``) is the caller's.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import numpy as np

from streaming.contract import INPUT_DTYPE, INPUT_NAME, INPUT_TRITON_DTYPE, OUTPUT_NAME, input_shape


@dataclass(frozen=True)
class LoadResult:
    model: str
    batch: int
    concurrency: int
    requests: int
    images_per_s: float  # median over rounds
    p50_ms: float
    p95_ms: float
    vs_reference: float | None = None  # median over rounds of images_per_s / the reference model's, same round
    reference: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _worker(url: str, model: str, images: np.ndarray, stop_at: float, latencies: list, errors: list) -> None:
    import tritonclient.grpc as grpcclient

    try:
        with grpcclient.InferenceServerClient(url) as client:
            inp = grpcclient.InferInput(INPUT_NAME, list(images.shape), INPUT_TRITON_DTYPE)
            inp.set_data_from_numpy(images)
            out = [grpcclient.InferRequestedOutput(OUTPUT_NAME, class_count=5)]
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                client.infer(model, [inp], outputs=out, client_timeout=120)
                latencies.append(time.perf_counter() - start)
    except Exception as exc:  # reported by measure(); a failed load run must not look fast
        errors.append(f"{model}: {exc}")


def run_cell(url: str, model: str, image_size: int, batch: int, *, concurrency: int,
             seconds: float) -> tuple[list[float], float]:
    """One closed-loop run; returns (request latencies in s, wall seconds)."""
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, (batch, *input_shape(image_size)), dtype=INPUT_DTYPE)
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    threads = [threading.Thread(target=_worker, args=(url, model, images, start + seconds, latencies, errors))
               for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"load run failed: {errors[0]}")
    return latencies, time.perf_counter() - start


def measure(url: str, models: dict[str, int], batches: tuple[int, ...], *, concurrency: int = 2,
            rounds: int = 5, seconds: float = 1.5, references: dict[str, str] | None = None,
            log=print) -> list[LoadResult]:
    """Every model (name -> image size) at every batch size, interleaved over ``rounds``.

    ``references`` maps a model to the one it is compared with (e.g. INT8 -> FP32 of the same
    architecture): the ratio is taken within each round, then the median over rounds, so a
    burst of load from elsewhere shifts both sides of a ratio alike."""
    references = references or {}
    results = []
    names = list(models)
    for batch in batches:
        lat = {m: [] for m in names}
        tput = {m: [] for m in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for model in order:
                if r == 0:
                    run_cell(url, model, models[model], batch, concurrency=1, seconds=0.1)  # warm this shape
                latencies, elapsed = run_cell(url, model, models[model], batch, concurrency=concurrency,
                                              seconds=seconds)
                lat[model] += latencies
                tput[model].append(len(latencies) * batch / elapsed)
        for model in names:
            ms = np.array(lat[model]) * 1e3
            ref = references.get(model)
            ratio = float(np.median(np.array(tput[model]) / np.array(tput[ref]))) if ref in tput else None
            res = LoadResult(model, batch, concurrency, len(ms), float(np.median(tput[model])),
                             float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), ratio, ref)
            results.append(res)
            vs = f"  {ratio:.2f}x {ref}" if ratio is not None else ""
            log(f"  batch {batch:2d} {model:26s} {res.images_per_s:7.1f} img/s  p50 {res.p50_ms:7.1f} ms  "
                f"p95 {res.p95_ms:7.1f} ms{vs}")
    return results
