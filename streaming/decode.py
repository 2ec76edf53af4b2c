"""Bytes of an image -> the uint8 RGB tensor the model expects.

Preprocessing (EfficientNet-Lite, TensorFlow reference): take the centre square whose side is
`crop_fraction` (224/256) of the short side, resize it to `size` x `size` with bicubic
filtering, RGB, uint8, HWC. EXIF orientation is applied.

Two paths give the same picture:

* "turbojpeg" - JPEGs (magic FF D8 FF): libjpeg-turbo reads the header, the pixel count is
  checked, and the image is decoded with DCT scaling at the smallest factor that still gives at
  least `size` pixels across the crop; Pillow then crops and resizes that small image.
  Grayscale is decoded as one channel and replicated after the resize.
* "pillow" - everything else Pillow decodes here (PNG, WebP, GIF first frame, BMP, TIFF), CMYK
  JPEGs, and JPEGs libjpeg-turbo rejects or warns about (truncated, damaged: Pillow then
  decides, strictly). Alpha is flattened on white. JPEGs use `draft()`, Pillow's DCT scaling
  (1/2, 1/4, 1/8 only), with its bundled libjpeg-turbo.

Why PyTurboJPEG for JPEGs (`JPEG_BACKEND`): `imgstream bench preprocess` measured the two JPEG
paths equally fast (0.93-1.09x of each other over five runs at 1080p and 12 MP, baseline and
progressive; both 0.87-0.98x of libjpeg-turbo in C, as entropy decoding, which no DCT scale
skips, is most of the time; 0.93-1.10x at 800-1024 px). The tie goes to PyTurboJPEG: libjpeg-turbo's M/8
factors (3/8, 5/8, 3/4, 7/8) decode fewer pixels than Pillow's 1/2-or-full for some mid-size
photos, and it stops at the first libjpeg warning instead of returning a half-grey picture.
`jpeg_backend="pillow"` selects the other path; it is also the fallback without libturbojpeg.

Progressive JPEGs with more than 500 scans are refused on both paths before decoding
(`UnsupportedImage`): each scan is a pass over the image, so thousands make a CPU bomb.

Errors: only `ImageTooLarge` (more than `max_pixels`, checked before any pixel is decoded),
`UnsupportedImage` (not a format listed above) and `CorruptImage` (a known format that fails
to decode) leave this module. Zero bytes are `CorruptImage`: an empty object is the extreme
case of a truncated upload, not a different format.
"""
from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from streaming.errors import CorruptImage, ImageTooLarge, PipelineError, UnsupportedImage

log = logging.getLogger(__name__)

CROP_FRACTION = 224 / 256
JPEG_BACKEND = "turbojpeg"  # "auto" means this; see the benchmark in README.md
# Each thread keeps one decode buffer (up to this size) and reuses it: a fresh one per image
# costs page faults, ~6% of a 1080p decode here.
SCRATCH_MAX_BYTES = 8 * 1024 * 1024
_SCRATCH = threading.local()
# Warnings ("premature end of data") are errors; more than 500 progressive scans (a CPU-bomb) too.
TURBO_FLAGS = 8192 | 32768  # TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS
MAX_JPEG_SCANS = 500  # libjpeg-turbo's own limit, applied to both paths
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the Pillow transpose that makes the image upright (as ImageOps.exif_transpose)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class DecodedImage:
    tensor: np.ndarray  # uint8, (size, size, 3) RGB, C-contiguous, read-only
    width: int  # of the stored image, before orientation
    height: int
    decode_ms: float
    resize_ms: float
    path: str  # "turbojpeg" or "pillow"
    scale: tuple[int, int] = (1, 1)  # the DCT scaling factor the JPEG was decoded at (num, den)


def decode_to_tensor(data: bytes, size: int = 224, *, max_pixels: int,
                     crop_fraction: float = CROP_FRACTION, jpeg_backend: str = "auto") -> DecodedImage:
    """Decode, centre-crop, resize and orient one image. Raises only the typed errors above.

    `jpeg_backend` picks the JPEG path: "turbojpeg", "pillow", or "auto" (`JPEG_BACKEND`).
    """
    if size <= 0 or max_pixels <= 0 or not 0.0 < crop_fraction <= 1.0:
        raise ValueError("size and max_pixels must be positive, crop_fraction in (0, 1]")
    if jpeg_backend not in ("auto", "turbojpeg", "pillow"):
        raise ValueError(f"jpeg_backend must be auto|turbojpeg|pillow, got {jpeg_backend!r}")
    if not data:
        raise CorruptImage("empty image (0 bytes)")
    backend = JPEG_BACKEND if jpeg_backend == "auto" else jpeg_backend
    jpeg = data[:3] == b"\xff\xd8\xff"
    orientation, progressive = _jpeg_header(data) if jpeg else (1, False)
    if progressive:  # a baseline file with extra scans is refused at once by both decoders
        _check_scans(data)
    try:
        if jpeg and backend == "turbojpeg":
            turbo = _turbo()
            if turbo is not None:
                decoded = _decode_turbo(turbo, data, size, max_pixels, crop_fraction, orientation)
                if decoded is not None:
                    return decoded
        return _decode_pillow(data, size, max_pixels, crop_fraction)
    except PipelineError:
        raise
    except Exception as exc:  # a decoder failing in a way not mapped below: the data is to blame
        log.warning("unexpected decoder failure", exc_info=True)
        raise CorruptImage(f"decoding failed: {type(exc).__name__}: {exc}") from None


# -- the turbojpeg path ----------------------------------------------------------------
def _decode_turbo(turbo: Any, data: bytes, size: int, max_pixels: int,
                  fraction: float, orientation: int) -> DecodedImage | None:
    """Decode a JPEG with libjpeg-turbo, or None to let Pillow try."""
    import turbojpeg as tj

    start = time.perf_counter()
    try:
        width, height, _subsample, colorspace = turbo.decode_header(data)
    except OSError:
        return None
    _check_pixels(width, height, max_pixels)
    if colorspace in (tj.TJCS_CMYK, tj.TJCS_YCCK):
        return None
    crop = _crop_side(width, height, fraction)
    num, den = _scaling_factor(turbo.scaling_factors, crop, size)
    gray = colorspace == tj.TJCS_GRAY
    scratch = None if gray else _scratch((-(-height * num // den), -(-width * num // den), 3))
    try:
        pixels = turbo.decode(data, pixel_format=tj.TJPF_GRAY if gray else tj.TJPF_RGB,
                              scaling_factor=(num, den), flags=TURBO_FLAGS, dst=scratch)
    except OSError as exc:
        log.debug("turbojpeg refused the image (%s); trying Pillow", exc)
        return None
    # fromarray copies RGB (Pillow stores it as RGBX), so the scratch buffer is free again
    image = Image.fromarray(pixels[:, :, 0] if gray else pixels)
    decoded = time.perf_counter()
    tensor = _crop_resize(image, width, height, num / den, size, fraction,
                          orientation)
    done = time.perf_counter()
    return DecodedImage(tensor, width, height, (decoded - start) * 1e3, (done - decoded) * 1e3,
                        "turbojpeg", (num, den))


def _scratch(shape: tuple[int, int, int]) -> np.ndarray | None:
    """This thread's decode buffer as an array of `shape` (grown as needed), or None when
    the image is too big to keep a buffer for."""
    need = shape[0] * shape[1] * shape[2]
    if need > SCRATCH_MAX_BYTES:
        return None
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.size < need:
        buffer = _SCRATCH.buffer = np.empty(max(need, 1 << 20), dtype=np.uint8)
    return buffer[:need].reshape(shape)


def _scaling_factor(factors: Any, crop: int, size: int) -> tuple[int, int]:
    """The smallest DCT scaling factor (<= 1) that keeps at least `size` pixels across the crop."""
    for num, den in _downscales(frozenset(factors)):
        if crop * num / den >= size:
            return num, den
    return 1, 1


@functools.lru_cache(maxsize=4)
def _downscales(factors: frozenset[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted((f for f in factors if f[0] <= f[1]), key=lambda f: f[0] / f[1]))


class _StrictTurboJPEGMixin:
    """PyTurboJPEG 1.8.3 only *warns* on libjpeg warnings such as "Premature end of JPEG file"
    and returns a half-grey picture. Raising instead sends such JPEGs to Pillow, which decodes
    damaged-but-complete ones and rejects truncated ones. (Overrides the name-mangled private
    method; pinned version, covered by the truncated-JPEG test.)"""

    def _TurboJPEG__report_error(self, handle: Any) -> None:
        raise OSError(self._TurboJPEG__get_error_string(handle))  # type: ignore[attr-defined]


_TURBO: Any = None
_TURBO_LOADED = False


def _turbo() -> Any:
    """The shared TurboJPEG instance (thread-safe: each call makes its own handle), or None."""
    global _TURBO, _TURBO_LOADED
    if not _TURBO_LOADED:
        try:
            from turbojpeg import TurboJPEG

            _TURBO = type("StrictTurboJPEG", (_StrictTurboJPEGMixin, TurboJPEG), {})()
        except (ImportError, OSError, RuntimeError) as exc:
            log.warning("libturbojpeg unavailable (%s): decoding every image with Pillow", exc)
        _TURBO_LOADED = True
    return _TURBO


def _jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) from a JPEG's APP1 segment; 1 when absent or unreadable."""
    return _jpeg_header(data)[0]


_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


def _jpeg_header(data: bytes) -> tuple[int, bool]:
    """(EXIF orientation, progressive?) from the markers before the first scan; a few us."""
    view = memoryview(data)
    i, n = 2, len(data)
    orientation, progressive = 1, False
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no metadata after this
            break
        length = int.from_bytes(view[i + 2:i + 4], "big")
        if length < 2:
            break
        if marker == 0xE1 and orientation == 1 and bytes(view[i + 4:i + 10]) == b"Exif\x00\x00":
            orientation = _tiff_orientation(view[i + 10:i + 2 + length])
        elif marker in _PROGRESSIVE_SOF:
            progressive = True
        i += 2 + length
    return orientation, progressive


def _tiff_orientation(tiff: memoryview) -> int:
    order = {b"II": "little", b"MM": "big"}.get(bytes(tiff[:2]))
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for k in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            break
        if int.from_bytes(tiff[entry:entry + 2], order) == _ORIENTATION_TAG:
            value = int.from_bytes(tiff[entry + 8:entry + 10], order)  # SHORT, left-justified
            return value if 1 <= value <= 8 else 1
    return 1


# -- the Pillow path -------------------------------------------------------------------
def _decode_pillow(data: bytes, size: int, max_pixels: int, fraction: float) -> DecodedImage:
    _disable_pillow_bomb_check()
    start = time.perf_counter()
    try:
        image = Image.open(BytesIO(data), formats=PILLOW_FORMATS)
    except UnidentifiedImageError:
        if data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise CorruptImage("image header is damaged") from None
        raise UnsupportedImage("not an image format we decode "
                               f"({', '.join(PILLOW_FORMATS)})") from None
    with image:
        width, height = image.size
        _check_pixels(width, height, max_pixels)
        if width == 0 or height == 0:
            raise CorruptImage(f"image has no pixels ({width}x{height})")
        den = 1
        crop = _crop_side(width, height, fraction)
        if image.format in ("JPEG", "MPO") and crop > size:
            want = (math.ceil(width * size / crop), math.ceil(height * size / crop))
            if image.draft(None, want) is not None:
                den = round(width / image.size[0])  # DCT scaling is exactly 1/1, 1/2, 1/4 or 1/8
        try:
            image.load()
            orientation = _pillow_orientation(image)
            rgb = _to_rgb(image)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            raise CorruptImage(f"{image.format} image is truncated or damaged: {exc}") from None
    decoded = time.perf_counter()
    tensor = _crop_resize(rgb, width, height, 1.0 / den, size, fraction, orientation)
    done = time.perf_counter()
    return DecodedImage(tensor, width, height, (decoded - start) * 1e3, (done - decoded) * 1e3,
                        "pillow", (1, den))


def _disable_pillow_bomb_check() -> None:
    """Pillow only *warns* between MAX_IMAGE_PIXELS and twice that. This module checks every
    image against `max_pixels` itself (raising ImageTooLarge) before any pixel is decoded, so
    Pillow's own, looser check is switched off: a bomb is an error, never a warning."""
    Image.MAX_IMAGE_PIXELS = None


def _pillow_orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # unreadable EXIF is not a reason to reject the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB; transparent pixels flattened on white; 16-bit grey scaled down."""
    if image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


# -- shared geometry -------------------------------------------------------------------
def _check_scans(data: bytes) -> None:
    """Refuse a JPEG with more than MAX_JPEG_SCANS start-of-scan markers, before decoding.

    Each progressive scan is a pass over the whole image, so a small file of thousands of
    tiny scans costs seconds to minutes. TJFLAG_LIMITSCANS stops libjpeg-turbo, but not the
    Pillow path (which has no limit). Counting FF DA is exact enough (entropy-coded data
    stuffs every FF byte as FF 00); it costs ~0.4 ms per MB, so only progressive files pay it
    (under 2% of their decode)."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise UnsupportedImage(f"JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are decoded")


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels, "
                            f"limit {max_pixels}")


def _crop_side(width: int, height: int, fraction: float) -> int:
    return max(1, int(min(width, height) * fraction))


def _crop_resize(image: Image.Image, width: int, height: int, scale: float, size: int,
                 fraction: float, orientation: int) -> np.ndarray:
    """Centre-crop (in the original image's coordinates, as TensorFlow's reference does) the
    image, which was decoded at `scale` of `width` x `height`; bicubic resize; orient."""
    crop = _crop_side(width, height, fraction)
    left, top = (width - crop + 1) // 2, (height - crop + 1) // 2
    box = (left * scale, top * scale, (left + crop) * scale, (top + crop) * scale)
    out = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if orientation in _TRANSPOSE:
        out = out.transpose(_TRANSPOSE[orientation])
    array = np.asarray(out)
    if array.ndim == 2:  # grayscale JPEG: replicate after the resize, 3x less work
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    array.setflags(write=False)
    return array
