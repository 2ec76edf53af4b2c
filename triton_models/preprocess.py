"""Reference image preprocessing for the EfficientNet-Lite models (Pillow only).

Mirrors the TensorFlow EfficientNet eval pipeline: take the centre square whose side is
``size / (size + 32)`` of the short side (224: 224/256; offsets rounded up as in TF's
``_decode_and_center_crop``), then resize it to ``size`` x ``size`` with the contract's
filter (bicubic). The result is the uint8 RGB ``[size, size, 3]`` array the model's
``IMAGE`` input expects; normalisation ((x - 127) / 128) happens inside the ONNX graph.
Geometry, filter and names: :mod:`streaming.contract`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from streaming.contract import INPUT_DTYPE, INPUT_SIZE, RESIZE_FILTER, crop_box, reference_crop_fraction


def center_crop_box(width: int, height: int, image_size: int = INPUT_SIZE) -> tuple[int, int, int, int]:
    """(left, upper, right, lower) of the centre crop for a model of side ``image_size``, TF rounding."""
    return crop_box(width, height, reference_crop_fraction(image_size))


def preprocess(img: Image.Image, image_size: int = INPUT_SIZE) -> np.ndarray:
    """PIL image -> uint8 RGB array ``[image_size, image_size, 3]``."""
    img = img.convert("RGB")
    img = img.crop(center_crop_box(img.width, img.height, image_size))
    img = img.resize((image_size, image_size), Image.Resampling[RESIZE_FILTER])
    return np.asarray(img, dtype=INPUT_DTYPE)


def load_image(path: str | Path, image_size: int = INPUT_SIZE) -> np.ndarray:
    """Read an image file and :func:`preprocess` it."""
    with Image.open(path) as img:
        return preprocess(img, image_size)
