"""Photos prepared the way a contract says, and the check that a wrapped model equals its original.

:func:`pixels` is what the job sends: EXIF orientation applied, RGB, the contract's centre crop
(``crop_box`` of ``crop_fraction``) or the whole image (``squash``), resized to S x S with its
filter, uint8 [S, S, 3]. :func:`reference_input` is what the user's own float pipeline feeds the
original model: the same pixels, normalised in float64 numpy (range, mean, std), in the model's
channel order and layout. :func:`compare` runs the original model on the one and the wrapped
model on the other and reports the largest difference of their outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from streaming.contract import INPUT_NAME, ModelContract, crop_box

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
BATCH = 8
TOLERANCE = {"float32": 1e-3, "float16": 1e-2}  # of probabilities / unit vectors; relative to the output's scale else


def image_files(folder: Path) -> list[Path]:
    """The images of a folder (not recursive), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pixels(path: Path, contract: ModelContract) -> np.ndarray:
    """uint8 RGB [S, S, 3]: what the job sends for this photo."""
    r = contract.resize
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        if r.mode == "center_crop":
            img = img.crop(crop_box(img.width, img.height, r.crop_fraction))
        img = img.resize((r.size, r.size), Image.Resampling[r.pil_filter])
        return np.asarray(img, dtype=np.uint8)


def reference_input(images: np.ndarray, contract: ModelContract, dtype: str) -> np.ndarray:
    """uint8 [N, S, S, 3] RGB -> what the original model takes, normalised in float64."""
    n = contract.normalize
    low, high = n.range
    x = images.astype(np.float64) * ((high - low) / 255.0) + low
    if n.channel_order == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(n.mean, np.float64)) / np.asarray(n.std, np.float64)
    if n.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x.astype(np.float16 if dtype == "float16" else np.float32))


def session(model_bytes: bytes, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def run(sess, feed_name: str, batch: np.ndarray) -> np.ndarray:
    return np.concatenate([sess.run(None, {feed_name: batch[i:i + BATCH]})[0]
                           for i in range(0, len(batch), BATCH)]).astype(np.float64)


def postprocess(raw: np.ndarray, contract: ModelContract) -> np.ndarray:
    """The original model's output as the wrapped graph returns it (softmax / L2 norm in float64)."""
    out = contract.output
    if out.kind == "classes" and out.softmax:
        e = np.exp(raw - raw.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if out.kind == "embedding" and out.l2_normalize:
        return raw / np.maximum(np.linalg.norm(raw, axis=-1, keepdims=True), 1e-12)
    return raw


@dataclass(frozen=True)
class WrapCheck:
    """The wrapped model against the original on real photos."""

    photos: int
    max_abs_diff: float
    scale: float  # the outputs' largest magnitude: 1 for probabilities and unit vectors
    tolerance: float  # of max_abs_diff / scale
    batch_diff: float = 0.0  # the wrapped model: each photo alone against in a batch (inf: other rows)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance * self.scale

    @property
    def batch_independent(self) -> bool:
        """Each image's output is its own: Triton batches requests of different clients together."""
        return self.batch_diff <= self.tolerance * self.scale

    def line(self) -> str:
        rel = "" if self.scale == 1.0 else f" (relative {self.max_abs_diff / self.scale:.2e})"
        verdict = "ok" if self.passed else "TOO LARGE"
        return (f"wrapped vs original on {self.photos} photos: max |diff| {self.max_abs_diff:.2e}{rel}, "
                f"tolerance {self.tolerance:.0e}: {verdict}")


def compare(original: bytes, wrapped: bytes, contract: ModelContract, photos: Sequence[Path],
            input_name: str, input_dtype: str) -> tuple[WrapCheck, np.ndarray]:
    """Run both models on ``photos`` (in batches, and the wrapped one on each photo alone too);
    returns the check and the wrapped model's outputs. Raises ValueError when the wrapped model
    does not return one row per photo or its shape is not the original's."""
    images = np.stack([pixels(p, contract) for p in photos])
    want = postprocess(run(session(original), input_name, reference_input(images, contract, input_dtype)), contract)
    wrapped_session = session(wrapped)
    got = run(wrapped_session, INPUT_NAME, images)
    if got.shape != want.shape or got.shape[0] != len(images):
        raise ValueError(f"the wrapped model returns {got.shape} for {len(images)} photos, the original {want.shape}")
    alone = np.concatenate([wrapped_session.run(None, {INPUT_NAME: images[i:i + 1]})[0]
                            for i in range(len(images))]).astype(np.float64)
    batch_diff = float(np.abs(alone - got).max()) if alone.shape == got.shape else float("inf")
    out = contract.output
    bounded = (out.kind == "classes" and out.softmax) or (out.kind == "embedding" and out.l2_normalize)
    scale = 1.0 if bounded else max(1.0, float(np.abs(want).max()))
    check = WrapCheck(len(photos), float(np.abs(got - want).max()), scale, TOLERANCE[input_dtype], batch_diff)
    return check, got
