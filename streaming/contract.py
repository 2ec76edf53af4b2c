"""The model contract: what the decoder makes, the models take and Triton returns, in one place.

The decoder (`streaming/decode.py`), the Triton client (`streaming/infer.py`), the model
builders (`triton_models/`) and the benchmarks (`streaming/bench/`) import these; none writes
its own copy. Numpy and the standard library only, so the engine, the builders and the
tooling can all import it.

Input: one RGB image as uint8 `[size, size, 3]` (NHWC in a batch), the centre square whose
side is `crop_fraction` of the short side (TensorFlow's EfficientNet eval preprocessing,
offsets rounded up), resized with `RESIZE_FILTER`. Normalisation `(x - PIXEL_MEAN) / PIXEL_STD`
is inside the ONNX graph, so clients send raw pixels. Output: `PROBABILITIES`, float32
`[N, NUM_CLASSES]`; Triton's classification extension returns the top k of them as
"score:index:label" with the labels of `LABELS_PATH` (index i = class i).

`triton_models/python_backend/model.py` runs inside Triton, where this package is not
importable: it keeps its own copy of the two tensor names (a unit test checks they agree).
"""
from __future__ import annotations

import difflib
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

INPUT_SIZE = 224  # EfficientNet-Lite0's side (Lite1: 240, Lite2: 260); PipelineConfig.input_size
CROP_PADDING = 32  # TensorFlow's: the crop is size / (size + 32) of the short side
CROP_FRACTION = INPUT_SIZE / (INPUT_SIZE + CROP_PADDING)  # 224 / 256: what the engine crops, at any size
RESIZE_FILTER = "BICUBIC"  # a PIL.Image.Resampling member name (Pillow is not imported here)

INPUT_NAME = "IMAGE"
INPUT_DTYPE = np.uint8
INPUT_TRITON_DTYPE = "UINT8"  # the same, as Triton names it
CHANNELS = 3  # RGB, last axis (NHWC)
OUTPUT_NAME = "PROBABILITIES"
OUTPUT_DTYPE = np.float32
NUM_CLASSES = 1000  # ImageNet-1k
# TensorFlow efficientnet-lite preprocessing (MEAN_RGB = 127, STDDEV_RGB = 128), in the ONNX graph.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0

# triton_models/ ships the list (package data); both packages are installed side by side.
LABELS_PATH = Path(__file__).resolve().parent.parent / "triton_models" / "labels" / "imagenet_labels.txt"


def input_shape(size: int = INPUT_SIZE) -> tuple[int, int, int]:
    """One image's input shape: (size, size, 3)."""
    return size, size, CHANNELS


def reference_crop_fraction(size: int) -> float:
    """TensorFlow's crop for a model of input side `size`: size / (size + 32) (224: 0.875).

    The model builders calibrate and evaluate with it; the engine crops `CROP_FRACTION` at
    every size (the two agree at 224)."""
    return size / (size + CROP_PADDING)


def crop_side(width: int, height: int, fraction: float = CROP_FRACTION) -> int:
    """The centre square's side: `fraction` of the short side, at least 1 pixel."""
    return max(1, int(min(width, height) * fraction))


def crop_box(width: int, height: int, fraction: float = CROP_FRACTION) -> tuple[int, int, int, int]:
    """(left, upper, right, lower) of the centre square, offsets rounded up as TensorFlow does."""
    side = crop_side(width, height, fraction)
    left, top = (width - side + 1) // 2, (height - side + 1) // 2
    return left, top, left + side, top + side


def load_labels(path: Path = LABELS_PATH) -> list[str]:
    """The class labels, index i = class i."""
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------------------------
# The per-model contract: what a model in the Triton repository takes and returns, stored beside
# it (config.pbtxt `parameters { key: "imgstream_contract" }`, JSON) and read by the job from
# Triton at start-up and whenever the served version changes. Every model on the wire takes
# `INPUT_NAME` uint8 [N, S, S, 3] RGB (importing wraps the user's graph so the normalisation,
# the channel order and the layout run inside it) and returns `OUTPUT_NAME` (classes) or
# `EMBEDDING_OUTPUT` (embeddings), float32.
# ---------------------------------------------------------------------------------------------
CONTRACT_PARAMETER = "imgstream_contract"
EMBEDDING_OUTPUT = "EMBEDDING"
RESIZE_MODES = ("center_crop", "squash")
FILTERS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR"}  # contract name -> PIL.Image.Resampling member
CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")
OUTPUT_KINDS = ("classes", "embedding")
EMBEDDING_DTYPES = ("float16", "float32")
MAX_INPUT_SIZE = 1024  # of a contract's side: bounds the tensor a request can make (3 MiB)
MAX_TOP_K = 100
MAX_EMBEDDING_DIM = 16384  # float32: 64 KiB of result, a quarter of events.MAX_RESULT_BYTES as base64


class ContractError(ValueError):
    """A model contract that cannot be served; `field` is its dotted name (e.g. "input.size")."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


_INPUT_KEYS = ("size", "resize", "crop_fraction", "interpolation", "range", "mean", "std", "channel_order", "layout")
_OUTPUT_KEYS = ("kind", "top_k", "num_classes", "softmax", "dim", "l2_normalize", "dtype")
_CLASSES_KEYS = ("top_k", "num_classes", "softmax")
_EMBEDDING_KEYS = ("dim", "l2_normalize", "dtype")


def _check(ok: bool, field_name: str, reason: str) -> None:
    if not ok:
        raise ContractError(field_name, reason)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML's true is not 1


def _known(table: Mapping[str, Any], section: str, keys: tuple[str, ...]) -> None:
    for key in table:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(keys)})"
            raise ContractError(f"{section}.{key}", "unknown key" + hint)


def _number(table: Mapping[str, Any], key: str, section: str, default: float) -> float:
    value = table.get(key, default)
    _check(_real(value), f"{section}.{key}", f"must be a number, got {value!r}")
    return float(value)


def _numbers(table: Mapping[str, Any], key: str, section: str, default: tuple[float, ...]) -> tuple[float, ...]:
    value = table.get(key, default)
    _check(isinstance(value, (list, tuple)) and all(map(_real, value)), f"{section}.{key}",
           f"must be a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Resize:
    """What the decoder makes for a model: a `size` x `size` RGB image, from the centre square of
    `crop_fraction` of the short side (`center_crop`, TensorFlow/torchvision eval style: resize the
    short side to size / crop_fraction, crop size) or the whole image (`squash`), with `filter`."""

    size: int = INPUT_SIZE
    mode: str = "center_crop"
    crop_fraction: float = CROP_FRACTION
    filter: str = "bicubic"

    def __post_init__(self) -> None:
        _check(_integer(self.size) and 1 <= self.size <= MAX_INPUT_SIZE, "input.size",
               f"must be an integer in [1, {MAX_INPUT_SIZE}], got {self.size!r}")
        _check(self.mode in RESIZE_MODES, "input.resize", f"must be one of {RESIZE_MODES}, got {self.mode!r}")
        _check(_real(self.crop_fraction) and 0.0 < self.crop_fraction <= 1.0, "input.crop_fraction",
               f"must be in (0, 1], got {self.crop_fraction!r}")
        _check(self.filter in FILTERS, "input.interpolation", f"must be one of {tuple(FILTERS)}, got {self.filter!r}")

    @property
    def pil_filter(self) -> str:
        return FILTERS[self.filter]


@dataclass(frozen=True)
class Normalize:
    """How the model wants its pixels (applied inside the wrapped graph, never by the job):
    0..255 mapped linearly onto `range`, then `(x - mean) / std` per channel, in `channel_order`,
    laid out as `layout`."""

    range: tuple[float, float] = (0.0, 255.0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        _check(len(self.range) == 2 and all(map(_real, self.range)) and self.range[0] != self.range[1],
               "input.range", f"must be two different numbers [low, high], got {list(self.range)!r}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            _check(len(values) == CHANNELS and all(map(_real, values)), f"input.{name}",
                   f"must be {CHANNELS} numbers (one per channel), got {list(values)!r}")
        _check(all(s > 0 for s in self.std), "input.std", f"must be positive, got {list(self.std)!r}")
        scale, offset = (np.full(CHANNELS, (self.range[1] - self.range[0]) / 255.0) / np.asarray(self.std),
                         (self.range[0] - np.asarray(self.mean)) / np.asarray(self.std))
        with np.errstate(over="ignore", under="ignore"):  # float32 is what the wrapped graph computes in
            scale32, offset32 = scale.astype(np.float32), offset.astype(np.float32)
        _check(bool(np.isfinite(scale32).all() and (scale32 != 0).all() and np.isfinite(offset32).all()),
               "input.std", f"with range {list(self.range)!r} and mean {list(self.mean)!r} gives pixel scale "
                            f"{scale.tolist()!r} and offset {offset.tolist()!r}: not finite non-zero float32 numbers")
        _check(self.channel_order in CHANNEL_ORDERS, "input.channel_order",
               f"must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}")
        _check(self.layout in LAYOUTS, "input.layout", f"must be one of {LAYOUTS}, got {self.layout!r}")

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset), float32 per channel in the model's channel order: x_model = pixel * scale + offset."""
        low, high = self.range
        span = (high - low) / 255.0
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        return (np.full(CHANNELS, span) / std).astype(np.float32), ((low - mean) / std).astype(np.float32)


@dataclass(frozen=True)
class Output:
    """`classes`: probabilities over `num_classes` labels, the job keeps the best `top_k`.
    `softmax`: the model returns logits; the wrapped graph applies softmax.
    `embedding`: a `dim` vector (L2-normalised in the graph when `l2_normalize`), sent in results
    as base64 little-endian `dtype`."""

    kind: str = "classes"
    top_k: int = 5
    num_classes: int = 0  # classes: the label count
    softmax: bool = False  # classes: the graph outputs logits; softmax runs in the wrapped graph
    dim: int = 0  # embedding: the vector's length
    l2_normalize: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check(self.kind in OUTPUT_KINDS, "output.kind", f"must be one of {OUTPUT_KINDS}, got {self.kind!r}")
        if self.kind == "classes":
            _check(_integer(self.num_classes) and self.num_classes >= 1, "output.num_classes",
                   f"must be a positive integer, got {self.num_classes!r}")
            _check(_integer(self.top_k) and 1 <= self.top_k <= min(MAX_TOP_K, self.num_classes),
                   "output.top_k", f"must be in [1, {min(MAX_TOP_K, self.num_classes)}], got {self.top_k!r}")
        else:
            _check(_integer(self.dim) and 1 <= self.dim <= MAX_EMBEDDING_DIM, "output.dim",
                   f"must be an integer in [1, {MAX_EMBEDDING_DIM}], got {self.dim!r}")
            _check(self.dtype in EMBEDDING_DTYPES, "output.dtype",
                   f"must be one of {EMBEDDING_DTYPES}, got {self.dtype!r}")

    @property
    def tensor_name(self) -> str:
        return OUTPUT_NAME if self.kind == "classes" else EMBEDDING_OUTPUT


@dataclass(frozen=True)
class ModelContract:
    """One model's contract; `from_mapping` reads the TOML/JSON form:

        [input]  size, resize, crop_fraction, interpolation, range, mean, std, channel_order, layout
        [output] kind, top_k, num_classes, softmax | dim, l2_normalize, dtype
    """

    resize: Resize = Resize()
    normalize: Normalize = Normalize()
    output: Output = Output(num_classes=NUM_CLASSES)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "ModelContract":
        _check(isinstance(data, Mapping), "contract", "must be a table with [input] and [output]")
        unknown = sorted(set(data) - {"input", "output"})
        _check(not unknown, unknown[0] if unknown else "", "unknown section (known: input, output)")
        inp, out = data.get("input"), data.get("output")
        _check(isinstance(inp, Mapping), "input", "missing [input] table")
        _check(isinstance(out, Mapping), "output", "missing [output] table")
        _known(inp, "input", _INPUT_KEYS)
        _known(out, "output", _OUTPUT_KEYS)
        _check("size" in inp, "input.size", "missing (the side of the square image the model takes)")
        _check("kind" in out, "output.kind", f"missing (one of {OUTPUT_KINDS})")
        resize = Resize(size=inp["size"], mode=inp.get("resize", "center_crop"),
                        crop_fraction=_number(inp, "crop_fraction", "input", CROP_FRACTION),
                        filter=inp.get("interpolation", "bicubic"))
        normalize = Normalize(range=_numbers(inp, "range", "input", (0.0, 255.0)),
                              mean=_numbers(inp, "mean", "input", (0.0,) * CHANNELS),
                              std=_numbers(inp, "std", "input", (1.0,) * CHANNELS),
                              channel_order=inp.get("channel_order", "RGB"), layout=inp.get("layout", "NCHW"))
        for flag in ("l2_normalize", "softmax"):
            _check(isinstance(out.get(flag, False), bool), f"output.{flag}", "must be true or false")
        other = _EMBEDDING_KEYS if out["kind"] == "classes" else _CLASSES_KEYS if out["kind"] == "embedding" else ()
        for key in other:  # a key of the other kind is a mistaken contract, not one to ignore
            _check(key not in out, f"output.{key}", f"is not a key of kind = {out['kind']!r}")
        output = Output(kind=out["kind"], top_k=out.get("top_k", 5), num_classes=out.get("num_classes", 0),
                        softmax=out.get("softmax", False), dim=out.get("dim", 0), l2_normalize=out.get("l2_normalize", False),
                        dtype=out.get("dtype", "float32"))
        return cls(resize, normalize, output)

    def to_mapping(self) -> dict[str, Any]:
        r, n, o = self.resize, self.normalize, self.output
        out: dict[str, Any] = {"kind": o.kind}
        if o.kind == "classes":
            out.update(top_k=o.top_k, num_classes=o.num_classes, softmax=o.softmax)
        else:
            out.update(dim=o.dim, l2_normalize=o.l2_normalize, dtype=o.dtype)
        return {"input": {"size": r.size, "resize": r.mode, "crop_fraction": r.crop_fraction,
                          "interpolation": r.filter, "range": list(n.range), "mean": list(n.mean),
                          "std": list(n.std), "channel_order": n.channel_order, "layout": n.layout},
                "output": out}

    def to_json(self) -> str:
        return json.dumps(self.to_mapping(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ModelContract":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ContractError("contract", f"not JSON: {exc}") from None
        return cls.from_mapping(data)

    @classmethod
    def from_toml(cls, path: Path) -> "ModelContract":
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ContractError("contract", f"cannot read {path}: {exc}") from None
        return cls.from_mapping(data)


def lite_contract(size: int = INPUT_SIZE) -> ModelContract:
    """The built-in EfficientNet-Lite models' contract (TensorFlow's eval preprocessing)."""
    return ModelContract(Resize(size, "center_crop", reference_crop_fraction(size), "bicubic"),
                         Normalize((0.0, 255.0), (PIXEL_MEAN,) * CHANNELS, (PIXEL_STD,) * CHANNELS, "RGB", "NHWC"),
                         Output("classes", top_k=5, num_classes=NUM_CLASSES))
