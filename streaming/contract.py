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

from pathlib import Path

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
