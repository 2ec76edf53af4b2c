"""What the preprocessing benchmark compares: each turns JPEG bytes into the same 224x224 RGB
uint8 centre crop (224/256 of the short side: `streaming.contract`), the way its users would write it.

The reference for correctness is a full decode + area (box) resize of the same crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from io import BytesIO
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from streaming.contract import INPUT_SIZE, RESIZE_FILTER, Resize, crop_box
from streaming.decode import decode_to_tensor

SIZE = INPUT_SIZE
RESIZE = Image.Resampling[RESIZE_FILTER]
MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    decode: Callable[[bytes], np.ndarray] | None  # None: measured another way (C limit, fetch)


def reference(data: bytes, size: int = SIZE) -> np.ndarray:
    """Full decode, upright, centre crop, area resize: what "correct" means here."""
    with Image.open(BytesIO(data)) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    box = crop_box(*image.size)
    return np.asarray(image.resize((size, size), Image.Resampling.BOX, box=box))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# -- (a) the naive baseline -----------------------------------------------------------
def naive_pillow(data: bytes, size: int = SIZE) -> np.ndarray:
    image = Image.open(BytesIO(data)).convert("RGB")  # full decode
    return np.asarray(image.resize((size, size), RESIZE, box=crop_box(*image.size)))


# -- (b) Pillow with draft() -----------------------------------------------------------
def pillow_draft(data: bytes, size: int = SIZE) -> np.ndarray:
    image = Image.open(BytesIO(data))
    width, height = image.size
    left, top, right, bottom = crop_box(width, height)
    crop = right - left
    image.draft("RGB", (math.ceil(width * size / crop), math.ceil(height * size / crop)))
    scale = image.size[0] / width
    image = image.convert("RGB")
    box = (left * scale, top * scale, right * scale, bottom * scale)
    return np.asarray(image.resize((size, size), RESIZE, box=box))


# -- (c) OpenCV --------------------------------------------------------------------------
def have_opencv() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # per-core numbers: one thread, like the others
    return cv2


def opencv_full(data: bytes, size: int = SIZE) -> np.ndarray:
    cv2 = _cv2()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return _cv2_crop_resize(cv2, bgr, bgr.shape[1], bgr.shape[0], 1, size)


def opencv_reduced(reduction: int) -> Callable[[bytes], np.ndarray]:
    """`IMREAD_REDUCED_COLOR_{reduction}`: libjpeg-turbo's DCT scaling by 1/2, 1/4 or 1/8."""
    def decode(data: bytes, size: int = SIZE) -> np.ndarray:
        cv2 = _cv2()
        flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}[reduction]
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        return _cv2_crop_resize(cv2, bgr, bgr.shape[1] * reduction, bgr.shape[0] * reduction,
                                reduction, size)
    return decode


def opencv_reduction(width: int, height: int, size: int = SIZE) -> int:
    """The largest of 1, 2, 4, 8 that still leaves `size` pixels across the crop (what a
    careful OpenCV user picks, given the image size)."""
    crop = crop_box(width, height)[2] - crop_box(width, height)[0]
    return max(r for r in (1, 2, 4, 8) if crop / r >= size)


def _cv2_crop_resize(cv2, bgr: np.ndarray, width: int, height: int, reduction: int,
                     size: int) -> np.ndarray:
    left, top, right, bottom = (v // reduction for v in crop_box(width, height))
    crop = bgr[top:bottom, left:right]
    resized = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


# -- (d) this engine -------------------------------------------------------------------
def engine(backend: str) -> Callable[[bytes], np.ndarray]:
    def decode(data: bytes, size: int = SIZE) -> np.ndarray:
        return decode_to_tensor(data, Resize(size), max_pixels=MAX_PIXELS, jpeg_backend=backend).tensor
    return decode


def engine_scale(data: bytes, backend: str = "turbojpeg") -> tuple[int, int]:
    """The DCT scaling factor the engine decodes this photo at."""
    return decode_to_tensor(data, Resize(SIZE), max_pixels=MAX_PIXELS, jpeg_backend=backend).scale
