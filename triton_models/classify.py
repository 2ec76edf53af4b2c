"""Classify photos with the exported ONNX model on onnxruntime (no Triton needed).

    python -m triton_models.classify --model triton_models/repository/efficientnet_lite0/1/model.onnx \
        photo1.jpg photo2.png [--top 5] [--bench]

Prints the top-k labels per photo; ``--bench`` also times batch 1 and 16.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from streaming.contract import INPUT_DTYPE, INPUT_NAME, input_shape, load_labels
from triton_models.preprocess import load_image


def make_session(model_path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])


def top_k(probs: np.ndarray, labels: list[str], k: int = 5) -> list[tuple[str, float]]:
    idx = np.argsort(-probs)[:k]
    return [(labels[i], float(probs[i])) for i in idx]


def image_size(session) -> int:
    """The model's input side (224 for Lite0, 240 for Lite1, 260 for Lite2)."""
    return int(session.get_inputs()[0].shape[1])


def bench(session, batch: int, runs: int = 20) -> float:
    """Median seconds per ``session.run`` for a batch of random images."""
    size = image_size(session)
    x = np.random.default_rng(0).integers(0, 256, (batch, *input_shape(size)), dtype=INPUT_DTYPE)
    session.run(None, {INPUT_NAME: x})  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {INPUT_NAME: x})
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="top-k ImageNet labels with the exported ONNX model")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    ap.add_argument("--bench", action="store_true", help="also time batch 1 and 16")
    ap.add_argument("photos", nargs="*", type=Path)
    args = ap.parse_args(argv)
    session = make_session(args.model, args.threads)
    labels = load_labels()
    if args.photos:
        batch = np.stack([load_image(p, image_size(session)) for p in args.photos])
        probs = session.run(None, {INPUT_NAME: batch})[0]
        for path, row in zip(args.photos, probs):
            preds = ", ".join(f"{label} {p:.3f}" for label, p in top_k(row, labels, args.top))
            print(f"{path.name}: {preds}")
    if args.bench:
        for b in (1, 16):
            t = bench(session, b)
            print(f"batch {b:2d}: {t * 1e3:.1f} ms/run, {t * 1e3 / b:.2f} ms/image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
