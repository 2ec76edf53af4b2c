"""Accuracy of every variant on the real evaluation photos, and agreement with FP32.

Runs the repository's ONNX files directly on onnxruntime (the integration test checks that
Triton returns the same answers). For each variant, against FP32 of the same architecture:

* ``agree_top1``: share of all photos where the variant's top-1 equals FP32's top-1;
* ``confident``: the same over photos where FP32's top probability is >= 0.3;
* ``fp32_top1_in_top5``: share of confident photos where FP32's top-1 is in the variant's top-5;
* ``top1_acc`` / ``top5_acc``: against the hand labels (:mod:`triton_models.hand_labels`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from streaming.contract import INPUT_NAME
from triton_models.photos import Photo
from triton_models.preprocess import load_image
from triton_models.variants import Variant

CONFIDENT_P = 0.3
BATCH = 16
TARGET_CONFIDENT_AGREEMENT = 0.95  # INT8 keeps FP32's top-1 on >= 95% of confident photos
TARGET_TOP5_CONTAINS_FP32 = 1.0  # ... and FP32's top-1 is in INT8's top-5 on all of them


@dataclass(frozen=True)
class Accuracy:
    variant: str
    photos: int
    agree_top1: float
    confident: int
    agree_confident: float
    fp32_top1_in_top5: float
    labelled: int
    top1_acc: float
    top5_acc: float
    disagreements: tuple[str, ...]  # confident photos whose top-1 changed: "id: fp32 -> variant"

    def as_dict(self) -> dict:
        return asdict(self)


def load_images(photos: list[Photo], size: int) -> np.ndarray:
    return np.stack([load_image(p.path, size) for p in photos])


def predict(onnx_path: Path, images: np.ndarray, threads: int = 0) -> np.ndarray:
    """Probabilities [n, 1000] from onnxruntime, in batches of 16."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: images[i:i + BATCH]})[0]
                           for i in range(0, len(images), BATCH)])


def compare(variant: Variant, probs: np.ndarray, fp32: np.ndarray, photos: list[Photo],
            labels: list[str]) -> Accuracy:
    ref_top1 = fp32.argmax(axis=1)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    top1 = top5[:, 0]
    agree = top1 == ref_top1
    confident = fp32.max(axis=1) >= CONFIDENT_P
    in_top5 = np.array([r in row for r, row in zip(ref_top1, top5)])
    labelled = [i for i, p in enumerate(photos) if p.labels]
    hit1 = [labels[top1[i]] in photos[i].labels for i in labelled]
    hit5 = [any(labels[j] in photos[i].labels for j in top5[i]) for i in labelled]
    changed = tuple(f"{photos[i].id}: {labels[ref_top1[i]]} -> {labels[top1[i]]}"
                    for i in np.flatnonzero(confident & ~agree))
    return Accuracy(
        variant=variant.name, photos=len(photos), agree_top1=_mean(agree),
        confident=int(confident.sum()), agree_confident=_mean(agree[confident]),
        fp32_top1_in_top5=_mean(in_top5[confident]), labelled=len(labelled),
        top1_acc=_mean(hit1), top5_acc=_mean(hit5), disagreements=changed)


def evaluate(variants: list[Variant], onnx_paths: dict[str, Path], photos: list[Photo],
             labels: list[str]) -> list[Accuracy]:
    """Accuracy of each variant; FP32 of each architecture is the reference (and compared to itself)."""
    results, cache = [], {}
    for variant in sorted(variants, key=lambda v: (v.arch, v.precision != "fp32")):
        if variant.arch not in cache:
            images = load_images(photos, variant.image_size)
            ref = Variant(variant.arch, "fp32")
            cache[variant.arch] = (images, predict(onnx_paths[ref.name], images))
        images, fp32 = cache[variant.arch]
        probs = fp32 if variant.precision == "fp32" else predict(onnx_paths[variant.name], images)
        results.append(compare(variant, probs, fp32, photos, labels))
    return results


def accuracy_failures(results: list[Accuracy]) -> list[str]:
    """The INT8 accuracy targets each result misses (empty: all met)."""
    failures = []
    for r in results:
        if not r.variant.endswith("_int8"):
            continue
        if r.agree_confident < TARGET_CONFIDENT_AGREEMENT:
            failures.append(f"{r.variant}: keeps FP32 top-1 on {r.agree_confident:.1%} of confident photos "
                            f"(target >= {TARGET_CONFIDENT_AGREEMENT:.0%})")
        if r.fp32_top1_in_top5 < TARGET_TOP5_CONTAINS_FP32:
            failures.append(f"{r.variant}: FP32 top-1 inside top-5 on {r.fp32_top1_in_top5:.1%} of confident "
                            "photos (target 100%)")
    return failures


def _mean(values) -> float:
    values = np.asarray(values, dtype=bool)
    return float(values.mean()) if values.size else float("nan")
