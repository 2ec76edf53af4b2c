"""Reference image preprocessing for the EfficientNet-Lite0 model (Pillow only).

Mirrors the TensorFlow EfficientNet eval pipeline: take the centre square whose
side is ``int(224 / 256 * short_side)`` (offsets rounded up as in TF's
``_decode_and_center_crop``), then bicubic-resize it to 224x224.  The result is
the uint8 RGB ``[224, 224, 3]`` array the model's ``IMAGE`` input expects;
normalisation ((x - 127) / 128) happens inside the ONNX graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SIZE = 224
CROP_PADDING = 32  # 224 / (224 + 32) = 0.875 of the short side


def center_crop_box(width: int, height: int, image_size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """(left, upper, right, lower) of the centre crop, TF rounding."""
    side = int(image_size / (image_size + CROP_PADDING) * min(width, height))
    side = max(side, 1)
    top = (height - side + 1) // 2
    left = (width - side + 1) // 2
    return left, top, left + side, top + side


def preprocess(img: Image.Image, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """PIL image -> uint8 RGB array ``[image_size, image_size, 3]``."""
    img = img.convert("RGB")
    img = img.crop(center_crop_box(img.width, img.height, image_size))
    img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def load_image(path: str | Path, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Read an image file and :func:`preprocess` it."""
    with Image.open(path) as img:
        return preprocess(img, image_size)
