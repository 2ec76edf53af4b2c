"""INT8 for an imported model: static QDQ quantization of the wrapped graph, and how far it strays.

The recipe is the built-in models' CPU one (:func:`triton_models.quantize.quantize_qdq`, u8s8,
per-channel int8 weights, MinMax) calibrated on the user's photos prepared by the contract; the
wrap's own output nodes (softmax, L2 normalisation) stay float. The report compares INT8 with
FP32 on the same photos: for classes, FP32's top-1 kept on the photos where FP32 is confident
(top-1 probability >= 0.5) and the overlap of the two top-5 sets; for embeddings, the cosine
similarity of the two vectors (mean and 5th percentile).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from streaming.contract import INPUT_NAME, ModelContract
from triton_models import contract_images, quantize
from triton_models.onnx_validate import ModelImportError
from triton_models.onnx_wrap import BACK_NODES

CONFIDENT_P = 0.5
TOP = 5


@dataclass(frozen=True)
class Int8Report:
    """INT8 against FP32 on the calibration photos. Classes: ``confident`` photos (FP32 top-1 p >= 0.5),
    ``top1_kept`` (share of them where INT8's top-1 is FP32's), ``top5_overlap`` (mean share of FP32's
    top-5 in INT8's top-5, all photos). Embeddings: ``cosine_mean`` and ``cosine_p5``. NaN: not measured."""

    model: str
    kind: str
    photos: int
    confident: int = 0
    top1_kept: float = math.nan
    top5_overlap: float = math.nan
    cosine_mean: float = math.nan
    cosine_p5: float = math.nan

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}

    def table(self) -> str:
        if self.kind == "classes":
            rows = [("photos", str(self.photos)), (f"FP32 confident (p >= {CONFIDENT_P})", str(self.confident)),
                    ("top-1 kept (confident)", f"{self.top1_kept:.1%}"), ("top-5 overlap (all)", f"{self.top5_overlap:.1%}")]
        else:
            rows = [("photos", str(self.photos)), ("cosine to FP32, mean", f"{self.cosine_mean:.4f}"),
                    ("cosine to FP32, p5", f"{self.cosine_p5:.4f}")]
        width = max(len(k) for k, _ in rows)
        return "\n".join([f"INT8 {self.model} vs FP32"] + [f"  {k:<{width}}  {v}" for k, v in rows])


def agreement(name: str, contract: ModelContract, fp32: np.ndarray, int8: np.ndarray) -> Int8Report:
    if contract.output.kind == "classes":
        top1_32, top1_8 = fp32.argmax(axis=1), int8.argmax(axis=1)
        confident = fp32.max(axis=1) >= CONFIDENT_P
        kept = float((top1_32 == top1_8)[confident].mean()) if confident.any() else math.nan
        k = min(TOP, fp32.shape[1])
        top5_32, top5_8 = np.argsort(-fp32, axis=1)[:, :k], np.argsort(-int8, axis=1)[:, :k]
        overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top5_32, top5_8)]))
        return Int8Report(name, "classes", len(fp32), int(confident.sum()), kept, overlap)
    norms = np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1)
    cosine = (fp32 * int8).sum(axis=1) / np.maximum(norms, 1e-12)
    return Int8Report(name, "embedding", len(fp32), cosine_mean=float(cosine.mean()),
                      cosine_p5=float(np.percentile(cosine, 5)))


def calibrate(wrapped_path: Path, name: str, contract: ModelContract,
              photos: Sequence[Path]) -> tuple[onnx.ModelProto, Int8Report]:
    """The INT8 model of the wrapped FP32 model at ``wrapped_path`` and its agreement with FP32 on ``photos``."""
    if len(photos) < quantize.CALIBRATION_BATCH:
        raise ModelImportError("calibrate", f"{len(photos)} images; INT8 calibration needs at least "
                                            f"{quantize.CALIBRATION_BATCH}")
    images = np.stack([contract_images.pixels(p, contract) for p in photos])
    int8 = quantize.quantize_qdq(wrapped_path, images, recipe="u8s8", nodes_to_exclude=BACK_NODES)
    int8.doc_string = f"{int8.doc_string}; INT8 QDQ u8s8 per-channel, MinMax calibration on {len(images)} images"
    onnx.checker.check_model(int8)
    fp32_out = contract_images.run(contract_images.session(wrapped_path.read_bytes()), INPUT_NAME, images)
    int8_out = contract_images.run(contract_images.session(int8.SerializeToString()), INPUT_NAME, images)
    return int8, agreement(f"{name}_int8", contract, fp32_out, int8_out)
