"""INT8 static QDQ quantization of an exported EfficientNet-Lite ONNX model (onnxruntime.quantization).

Two recipes, both per-channel int8 weights, MinMax-calibrated on real photos
(:func:`triton_models.photos.calibration_photos`, never the evaluation photos):

* ``u8s8`` (CPU): uint8 activations (asymmetric), int8 weights. ~2x FP32 on an AVX-512 VNNI
  CPU. The graph's input normalisation ``(x - 127) / 128`` quantizes with scale 1/128 and
  zero point 127, which is the raw pixel itself, so the float ``Cast/Sub/Div/QuantizeLinear``
  prefix is replaced by ``Transpose(IMAGE) -> DequantizeLinear``: same numbers, ~8% faster.
* ``s8s8`` (TensorRT): int8 activations with zero point 0 (TensorRT only takes symmetric
  Q/DQ). Slower than FP32 on the CPU, so it is built only for the GPU repository.

In both, the final Gemm's output stays float (``OpTypesToExcludeOutputQuantization``) and
Softmax is not quantized, so confident logits are not clipped and probabilities are not
rounded to 1/255 steps.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from streaming import contract
from triton_models import export_onnx

RECIPES = ("u8s8", "s8s8")
QUANT_REVISION = "2"  # bump when the recipe or the graph rewrite changes
CALIBRATION_BATCH = 8
EXCLUDED_NODES = ("softmax",)


class _Reader:
    """onnxruntime CalibrationDataReader over an in-memory uint8 image array."""

    def __init__(self, images: np.ndarray, batch: int):
        self._batches = iter([{contract.INPUT_NAME: images[i:i + batch]}
                              for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # onnxruntime calls it for some calibrators; MinMax reads once
        raise NotImplementedError


def quantize(fp32_path: Path, out_path: Path, images: np.ndarray, *, recipe: str = "u8s8",
             props: dict[str, str] | None = None) -> Path:
    """Write the INT8 QDQ model of the Lite graph ``fp32_path`` calibrated on ``images`` (uint8 [n, S, S, 3])."""
    model = quantize_qdq(fp32_path, images, recipe=recipe, nodes_to_exclude=EXCLUDED_NODES)
    if recipe == "u8s8":
        feed_pixels_as_quantized(model)
    model.doc_string = f"{model.doc_string}; INT8 QDQ {recipe} per-channel, MinMax calibration"
    existing = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**existing, **(props or {})})
    onnx.checker.check_model(model)
    return export_onnx.save_atomic(model, out_path)


def quantize_qdq(fp32_path: Path, images: np.ndarray, *, recipe: str = "u8s8",
                 nodes_to_exclude: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Static QDQ quantization (per-channel int8 weights, MinMax) of a model that takes uint8
    ``IMAGE`` [n, S, S, 3], calibrated on ``images``; the Gemm outputs and ``nodes_to_exclude`` stay float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}")
    if images.ndim != 4 or images.dtype != contract.INPUT_DTYPE or len(images) < CALIBRATION_BATCH:
        raise ValueError("calibration images must be uint8 [n >= 8, S, S, 3]")
    images = images[: len(images) - len(images) % CALIBRATION_BATCH]  # equal batches
    symmetric = recipe == "s8s8"
    fp32_path = Path(fp32_path)
    tmp = fp32_path.with_name(f"{fp32_path.name}.{os.getpid()}.q.tmp")
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # quantize_static logs a "consider pre-processing" hint per call
    try:
        quantize_static(
            str(fp32_path), str(tmp), _Reader(images, CALIBRATION_BATCH),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=not symmetric,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm"], "ActivationSymmetric": symmetric,
                           "WeightSymmetric": True},
        )
        return onnx.load(str(tmp))
    finally:
        root_logger.setLevel(level)
        tmp.unlink(missing_ok=True)


def feed_pixels_as_quantized(model: onnx.ModelProto) -> None:
    """Replace ``IMAGE -> Cast -> Sub -> Div -> Transpose -> QuantizeLinear`` by ``IMAGE -> Transpose``.

    With scale 1/128 and zero point 127, ``Q((x - 127) / 128) == x`` for every uint8 x, so
    the DequantizeLinear that followed the QuantizeLinear reads the transposed pixels as is."""
    g = model.graph
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    chain = []
    name = contract.INPUT_NAME
    for op in ("Cast", "Sub", "Div", "Transpose", "QuantizeLinear"):
        (node,) = [n for n in consumers.get(name, []) if n.op_type == op] or [None]
        if node is None or len(consumers[name]) != 1:
            raise ValueError(f"unexpected graph prefix at {name!r}: wanted a single {op}")
        chain.append(node)
        name = node.output[0]
    transpose, qlinear = chain[3], chain[4]
    inits = {t.name: t for t in g.initializer}
    scale = numpy_helper.to_array(inits[qlinear.input[1]])
    zero = numpy_helper.to_array(inits[qlinear.input[2]])
    if scale.size != 1 or not np.isclose(float(scale), 1 / contract.PIXEL_STD, rtol=1e-6) \
            or zero.dtype != np.uint8 or int(zero) != int(contract.PIXEL_MEAN):
        raise ValueError(f"input quantization is scale={scale}, zero point={zero}; expected 1/128, 127")
    for dq in consumers[qlinear.output[0]]:
        if dq.op_type != "DequantizeLinear":
            raise ValueError("QuantizeLinear of the input feeds something other than DequantizeLinear")
        inits[dq.input[1]].CopyFrom(numpy_helper.from_array(np.array(1 / contract.PIXEL_STD, np.float32),
                                                            dq.input[1]))
    new_transpose = onnx.helper.make_node("Transpose", [contract.INPUT_NAME], [qlinear.output[0]],
                                          name="to_nchw_uint8", perm=list(transpose.attribute[0].ints))
    keep = [n for n in g.node if n not in chain]
    del g.node[:]
    g.node.extend([new_transpose, *keep])
    used = {i for n in g.node for i in n.input}
    unused = [t for t in g.initializer if t.name not in used]
    for t in unused:
        g.initializer.remove(t)
