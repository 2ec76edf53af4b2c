"""Bytes of an image -> the uint8 RGB tensor the model expects.

Preprocessing: what the model's `contract.Resize` says, RGB, uint8, HWC, EXIF orientation
applied. The region is the centre square whose side is `crop_fraction` of the short side
(`center_crop`, TensorFlow's EfficientNet reference: 224/256, offsets rounded up) or the whole
image (`squash`: aspect ratio not kept, torchvision's `Resize((S, S))`); it is resized to
`size` x `size` with `filter` (bicubic or bilinear). The region is cut from the stored image
and the output oriented after the resize: the same picture as orienting first (the output is
square; the centre square is placed as it is in the upright picture, offsets rounded up there).

Two paths give the same picture:

* "turbojpeg" - JPEGs (magic FF D8 FF): libjpeg-turbo reads the header, the pixel count is
  checked, and the image is decoded with DCT scaling at the smallest factor that still gives at
  least `size` pixels across the region's short side (both its sides keep >= `size`); Pillow
  then resizes the region of that small image (`reduce()` first when it is still over
  `REDUCING_GAP` x `size` on an axis, as on the Pillow path).
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

Bounded before decoding, for every input (whichever path decodes it):

* pixels: more than `max_pixels` declared is `ImageTooLarge`;
* JPEG markers (every input that starts FF D8): more than `MAX_SEGMENTS` before the first scan,
  more than `MAX_JPEG_EXTRANEOUS_BYTES` of junk or fill between them, more than
  `MAX_JPEG_EXIF_SEGMENTS` Exif segments or `MAX_JPEG_TABLE_BYTES` of SOF and DQT segments is
  `CorruptImage` (Pillow's header parser walks them in Python, a byte, a marker or a value at a
  time, and joins the Exif segments one copy at a time);
* JPEG scans (every input that starts FF D8, baseline or progressive; the marker walk in
  `jpeg_markers` skips what libjpeg skips): more than 500 scans, or more than
  `MAX_PIXEL_PASSES` x `max_pixels` pixels x scans, is `UnsupportedImage` (each scan is a pass
  over the image, so thousands make a CPU bomb in a small file);
* memory: `decode_budget` estimates what the chosen path will hold at once (the decoded image
  at the scale it decodes to, the decoder's own copies, libjpeg's whole-image coefficient
  buffer for multi-scan JPEGs, and the working copies below); over `max_decode_bytes` is
  `ImageTooLarge`. A MemoryError (the decoder process's RLIMIT_AS, see `decoder_pool`) is too.

The Pillow path never copies the whole image: it cuts the region in strips of
`STRIP_BYTES`, converts each strip to RGB(A)/L, shrinks it with `reduce()` by the largest
whole factor per axis that keeps the region at least `REDUCING_GAP` x the output side, and
flattens alpha on white only on that small image (before, a full-size RGBA, white canvas, composite
and RGB were made: 1.2 GiB for a 264 KB 8000x8000 PNG). Animations give their first frame
only, so frames do not multiply the cost.

Errors: only `ImageTooLarge`, `UnsupportedImage` (not a format listed above, or a JPEG over
the scan limits) and `CorruptImage` (a known format that fails to decode) leave this module.
Zero bytes are `CorruptImage`: an empty object is the extreme case of a truncated upload,
not a different format. `max_decode_ms` is enforced around this function by `decoder_pool`.
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

from streaming.contract import Resize, crop_box
from streaming.errors import CorruptImage, ImageTooLarge, PipelineError, UnsupportedImage
from streaming.jpeg_markers import MAX_SEGMENTS, JpegHeader, count_scans, jpeg_header
from streaming.tiff_ifd import MAX_ENTRIES, tiff_layout

log = logging.getLogger(__name__)

JPEG_BACKEND = "turbojpeg"  # "auto" means this; see the benchmark in README.md
DEFAULT_MAX_DECODE_BYTES = 256 * 1024 * 1024  # PipelineConfig.max_decode_bytes
# Each thread keeps one decode buffer (up to this size) and reuses it: a fresh one per image
# costs page faults, ~6% of a 1080p decode here.
SCRATCH_MAX_BYTES = 8 * 1024 * 1024
_SCRATCH = threading.local()
# Warnings ("premature end of data") are errors; more than 500 progressive scans (a CPU-bomb) too.
TURBO_FLAGS = 8192 | 32768  # TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS
MAX_JPEG_SCANS = 500  # libjpeg-turbo's own limit, applied to both paths
# pixels x scans of one JPEG, at most this many full passes of a max_pixels image (a 12 MP
# progressive photo has ~10 scans: 120 M; 500 empty scans of a 2048x2048 frame: 2.1 G, ~1.2 s)
MAX_PIXEL_PASSES = 16
# Bytes that are not markers between a JPEG's segments (junk, FF fill), before its first scan: a
# writer's slip leaves a few; 32 MiB of them cost Pillow's byte-at-a-time header parser 4-7 s of CPU
MAX_JPEG_EXTRANEOUS_BYTES = 64 * 1024
# Exif APP1 segments before the first scan: Pillow appends each to the first (one copy of the whole
# so far per segment: 4 s of CPU for 200,000 tiny ones); a camera writes one
MAX_JPEG_EXIF_SEGMENTS = 16
# Bytes of SOF and DQT segments before the first scan: a photo has < 1 KiB of them; Pillow's parser
# reads every value (a component per 3 bytes of SOF, however many the frame declares: 2.7 s for 32 MiB)
MAX_JPEG_TABLE_BYTES = 64 * 1024
MAX_TIFF_SAMPLES = 16  # per pixel; Pillow's TIFF modes have at most 5
# A tile's side: at most the image's (rounded up to 16, as the format asks) or this, whichever is
# larger (writers use 128-512 whatever the image: GDAL 256, libvips 128); libtiff allocates a tile
MAX_TIFF_TILE_SIDE = 1024
# Strips or tiles of one TIFF, at most (whatever the image's rows): Pillow builds an object per strip
# and decodes each with a call of its own (4 s and 370 MiB for a 1x1,000,000 image in 1,000,000
# strips, a 3.8 MiB file); a 64 MP photo in 256x256 tiles has ~1,000, with a strip per row 8,000
MAX_TIFF_STRIPS = 1 << 16
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Copies of the full decoded image a Pillow plugin holds at once (its own buffers and the
# image): libwebp's canvas and previous canvas, the frame bytes handed to Pillow, the image;
# GIF keeps the frame and the image; libtiff may decode through an RGBA raster.
DECODER_COPIES = {"WEBP": 4, "GIF": 2, "TIFF": 2}
REDUCING_GAP = 2  # reduce() while the region stays >= 2x the output side; the filter does the rest
STRIP_BYTES = 4 * 1024 * 1024  # the Pillow path converts and reduces the crop in strips of this
WORK_OVERHEAD_BYTES = 8 * 1024 * 1024  # decoder state, tables, the output: a fixed allowance
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00",
          b"MM\x00+")
_ORIENTATION_TAG = 0x0112
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")
# EXIF orientation -> the Pillow transpose that makes the image upright (as ImageOps.exif_transpose)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
# EXIF orientation -> whether the stored x and y axes run backwards in the upright picture
_REVERSED = {2: (True, False), 3: (True, True), 4: (False, True), 6: (False, True), 7: (True, True),
             8: (True, False)}


@dataclass(frozen=True)
class DecodedImage:
    tensor: np.ndarray  # uint8, (size, size, 3) RGB, C-contiguous, read-only
    width: int  # of the stored image, before orientation
    height: int
    decode_ms: float
    resize_ms: float
    path: str  # "turbojpeg" or "pillow"
    scale: tuple[int, int] = (1, 1)  # the scaling factor the image was decoded at (num, den)


@dataclass(frozen=True)
class _Limits:
    resize: Resize
    max_pixels: int
    max_bytes: int


def decode_to_tensor(data: bytes, resize: Resize = Resize(), *, max_pixels: int, jpeg_backend: str = "auto",
                     max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES) -> DecodedImage:
    """Decode one image, make what `resize` says of it and orient it. Raises only the typed
    errors above (and ValueError/TypeError for bad arguments: the caller's bug).

    `jpeg_backend` picks the JPEG path: "turbojpeg", "pillow", or "auto" (`JPEG_BACKEND`).
    """
    if not isinstance(resize, Resize):
        raise TypeError(f"resize must be a contract.Resize, got {type(resize).__name__}")
    if max_pixels <= 0 or max_decode_bytes <= 0:
        raise ValueError("max_pixels and max_decode_bytes must be positive")
    if jpeg_backend not in ("auto", "turbojpeg", "pillow"):
        raise ValueError(f"jpeg_backend must be auto|turbojpeg|pillow, got {jpeg_backend!r}")
    if not data:
        raise CorruptImage("empty image (0 bytes)")
    limits = _Limits(resize, max_pixels, max_decode_bytes)
    backend = JPEG_BACKEND if jpeg_backend == "auto" else jpeg_backend
    try:
        header, coefficients = _check_jpeg(data, max_pixels) if data[:2] == b"\xff\xd8" else (None, 0)
        if header is not None and data[2:3] == b"\xff" and backend == "turbojpeg":
            turbo = _turbo()
            if turbo is not None:
                decoded = _decode_turbo(turbo, data, limits, header, coefficients)
                if decoded is not None:
                    return decoded
        return _decode_pillow(data, limits, coefficients)
    except PipelineError:
        raise
    except MemoryError:
        pass  # raised below, once the exception and the frames holding the memory are gone
    except Exception as exc:  # a decoder failing in a way not mapped below: the data is to blame
        log.warning("unexpected decoder failure", exc_info=True)
        raise CorruptImage(f"decoding failed: {type(exc).__name__}: {exc}") from None
    raise ImageTooLarge(f"decoding needs more memory than this decoder may use (max_decode_bytes={max_decode_bytes})")


def _check_jpeg(data: bytes, max_pixels: int) -> tuple[JpegHeader, int]:
    """The guards every input starting FF D8 passes, whichever path decodes it. Returns the
    header and the bytes of libjpeg's coefficient buffer (0 for a single-scan file)."""
    header = jpeg_header(data)
    if header.extraneous > MAX_JPEG_EXTRANEOUS_BYTES:  # libjpeg warns of these; Pillow crawls through them
        raise CorruptImage(f"JPEG has {header.extraneous} bytes that are not markers before its first scan")
    if header.segments > MAX_SEGMENTS:  # the walk stopped there; Pillow's parser would go on, in Python
        raise CorruptImage(f"JPEG has more than {MAX_SEGMENTS} markers before its first scan")
    if header.exif_segments > MAX_JPEG_EXIF_SEGMENTS:
        raise CorruptImage(f"JPEG has {header.exif_segments} Exif segments; at most {MAX_JPEG_EXIF_SEGMENTS} "
                           "are read")
    if header.table_bytes > MAX_JPEG_TABLE_BYTES:
        raise CorruptImage(f"JPEG has {header.table_bytes} bytes of frame and quantization-table segments "
                           "before its first scan")
    scans = count_scans(data)
    if scans > MAX_JPEG_SCANS:
        raise UnsupportedImage(f"JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are decoded")
    _check_pixels(header.width, header.height, max_pixels)
    passes = header.width * header.height * scans
    if passes > MAX_PIXEL_PASSES * max_pixels:
        raise UnsupportedImage(f"JPEG has {scans} scans of {header.width}x{header.height} pixels; at most "
                               f"{MAX_PIXEL_PASSES} x max_pixels = {MAX_PIXEL_PASSES * max_pixels} "
                               "pixel passes are decoded")
    return header, header.coefficient_bytes if header.progressive or scans > 1 else 0


def decode_budget(decoded_pixels: int, bytes_per_pixel: int, *, copies: int = 1,
                  coefficient_bytes: int = 0, crop_pixels: int = 0) -> int:
    """The bytes one decode holds at once: `copies` of the image as decoded (at its reduced
    scale), libjpeg's coefficient buffer, the strips and the reduced region (`crop_pixels`, see
    `_work_pixels`: RGBA, a white canvas, the composite and RGB, or the resampler's pass), and a
    fixed allowance."""
    return (decoded_pixels * bytes_per_pixel * copies + coefficient_bytes
            + 4 * STRIP_BYTES + 4 * 4 * crop_pixels + WORK_OVERHEAD_BYTES)


def _check_budget(need: int, limit: int, what: str) -> None:
    if need > limit:
        raise ImageTooLarge(f"decoding {what} needs ~{need // 2**20} MiB, "
                            f"limit max_decode_bytes={limit // 2**20} MiB")


# -- the turbojpeg path ----------------------------------------------------------------
def _decode_turbo(turbo: Any, data: bytes, limits: _Limits, header: JpegHeader,
                  coefficients: int) -> DecodedImage | None:
    """Decode a JPEG with libjpeg-turbo, or None to let Pillow try."""
    import turbojpeg as tj

    start = time.perf_counter()
    try:
        width, height, _subsample, colorspace = turbo.decode_header(data)
    except OSError:
        return None
    _check_pixels(width, height, limits.max_pixels)
    if colorspace in (tj.TJCS_CMYK, tj.TJCS_YCCK):
        return None
    box = _region(width, height, limits.resize, header.orientation)
    num, den = _scaling_factor(turbo.scaling_factors, _short_side(box), limits.resize.size)
    gray = colorspace == tj.TJCS_GRAY
    out_h, out_w = -(-height * num // den), -(-width * num // den)
    work = _work_pixels(*_reduction(box, num / den, (out_w, out_h), limits.resize.size), limits.resize.size)
    _check_budget(decode_budget(out_w * out_h, 2 if gray else 3 + 4, coefficient_bytes=coefficients,
                                crop_pixels=work),
                  limits.max_bytes, f"this {width}x{height} JPEG at {num}/{den}")
    scratch = None if gray else _scratch((out_h, out_w, 3))
    try:
        pixels = turbo.decode(data, pixel_format=tj.TJPF_GRAY if gray else tj.TJPF_RGB,
                              scaling_factor=(num, den), flags=TURBO_FLAGS, dst=scratch)
    except OSError as exc:
        log.debug("turbojpeg refused the image (%s); trying Pillow", exc)
        return None
    # fromarray copies RGB (Pillow stores it as RGBX), so the scratch buffer is free again
    image = Image.fromarray(pixels[:, :, 0] if gray else pixels)
    decoded = time.perf_counter()
    tensor = _resize_region(image, box, num / den, limits.resize, header.orientation)
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


def _scaling_factor(factors: Any, side: int, size: int) -> tuple[int, int]:
    """The smallest DCT scaling factor (<= 1) that keeps at least `size` pixels across `side`
    (the region's short side)."""
    for num, den in _downscales(frozenset(factors)):
        if side * num / den >= size:
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
    return jpeg_header(data).orientation


# -- the Pillow path -------------------------------------------------------------------
def _decode_pillow(data: bytes, limits: _Limits, coefficients: int) -> DecodedImage:
    _disable_pillow_bomb_check()
    start = time.perf_counter()
    _check_webp_canvas(data, limits)  # Pillow's WebP plugin allocates the canvas in open()
    _check_tiff(data, limits)  # and its TIFF plugin a Python object per strip
    try:
        image = Image.open(BytesIO(data), formats=PILLOW_FORMATS)
    except UnidentifiedImageError:
        if data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise CorruptImage("image header is damaged") from None
        raise UnsupportedImage("not an image format we decode "
                               f"({', '.join(PILLOW_FORMATS)})") from None
    with image:
        width, height = image.size
        _check_pixels(width, height, limits.max_pixels)
        if width == 0 or height == 0:
            raise CorruptImage(f"image has no pixels ({width}x{height})")
        den, size = 1, limits.resize.size
        box = _region(width, height, limits.resize)  # its size; the orientation is read with the pixels
        side = _short_side(box)
        if image.format in ("JPEG", "MPO") and side > size:
            want = (math.ceil(width * size / side), math.ceil(height * size / side))
            if image.draft(None, want) is not None:
                den = round(width / image.size[0])  # DCT scaling is exactly 1/1, 1/2, 1/4 or 1/8
        bounds, factors = _reduction(box, 1.0 / den, image.size, size)
        need = decode_budget(image.size[0] * image.size[1], _stored_bytes_per_pixel(image.mode),
                             copies=DECODER_COPIES.get(image.format, 1), coefficient_bytes=coefficients,
                             crop_pixels=_work_pixels(bounds, factors, size))
        _check_budget(need, limits.max_bytes, f"this {width}x{height} {image.format} ({image.mode})")
        try:
            image.load()
            orientation = _pillow_orientation(image)
            decoded = time.perf_counter()
            box = _region(width, height, limits.resize, orientation)
            tensor = _pillow_tensor(image, box, 1.0 / den, limits.resize, orientation)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            raise CorruptImage(f"{image.format} image is truncated or damaged: {exc}") from None
    done = time.perf_counter()
    return DecodedImage(tensor, width, height, (decoded - start) * 1e3, (done - decoded) * 1e3,
                        "pillow", (1, den))


def _check_webp_canvas(data: bytes, limits: _Limits) -> None:
    """The canvas a WebP declares (VP8X, or the single VP8/VP8L frame), checked before Pillow's
    plugin allocates it: `max_pixels`, and the decoder's copies against the budget."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return
    chunk = data[12:16]
    if chunk == b"VP8X":
        width, height = 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    elif chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 ":
        width, height = int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    else:
        return
    _check_pixels(width, height, limits.max_pixels)
    _check_budget(decode_budget(width * height, 4, copies=DECODER_COPIES["WEBP"]), limits.max_bytes,
                  f"this {width}x{height} WebP canvas")


def _check_tiff(data: bytes, limits: _Limits) -> None:
    """A TIFF's IFD0 (`tiff_ifd`) checked before Pillow opens it: at most `MAX_ENTRIES` entries
    (all read), `max_pixels`, at most one strip per row (per sample), tiles no larger than
    `MAX_TIFF_TILE_SIDE` or the image (rounded up to 16) and no more of them than cover it, and
    never more than `MAX_TIFF_STRIPS` strips or tiles."""
    layout = tiff_layout(data)
    if layout is None:
        return
    if layout.entries > MAX_ENTRIES:  # the rest were not read: a strip bomb could hide there
        raise CorruptImage(f"TIFF's first directory has {layout.entries} entries; at most {MAX_ENTRIES} are read")
    width, height, samples = layout.width, layout.height, max(1, layout.samples)
    _check_pixels(width, height, limits.max_pixels)
    if samples > MAX_TIFF_SAMPLES:
        raise UnsupportedImage(f"TIFF has {samples} samples per pixel; at most {MAX_TIFF_SAMPLES} are decoded")
    if layout.tiles:
        tile_width, tile_length = layout.tile_width, layout.tile_length
        if not (0 < tile_width <= max(-(-width // 16) * 16, MAX_TIFF_TILE_SIDE)
                and 0 < tile_length <= max(-(-height // 16) * 16, MAX_TIFF_TILE_SIDE)):
            raise CorruptImage(f"TIFF has tiles of {tile_width}x{tile_length} for a {width}x{height} image")
        most = -(-width // tile_width) * -(-height // tile_length) * samples
    else:
        most = max(1, height) * samples
    most = min(most, MAX_TIFF_STRIPS)
    if max(layout.strips, layout.tiles) > most:
        raise CorruptImage(f"TIFF declares {max(layout.strips, layout.tiles)} strips or tiles for a {width}x{height} "
                           f"image (at most {most})")


def _stored_bytes_per_pixel(mode: str) -> int:
    """What Pillow stores per pixel: 1 byte for 8-bit single-band modes, 2 for I;16, else 4."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


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


def _reduce_factor(extent: float, size: int) -> int:
    """Pillow's `reducing_gap` rule: the whole factor that keeps `extent` >= REDUCING_GAP x size."""
    return max(1, int(extent // (size * REDUCING_GAP)))


def _pillow_tensor(image: Image.Image, box: tuple[int, int, int, int], scale: float, resize: Resize,
                   orientation: int) -> np.ndarray:
    """The region `box` (stored coordinates) of an image decoded at `scale`, cut and converted
    in strips, reduced by whole factors, alpha flattened on white (on the small image), then
    resized and oriented: no full-size copy is ever made."""
    (x0, y0, x1, y1), (fx, fy) = _reduction(box, scale, image.size, resize.size)
    alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    mode = "RGBA" if alpha else "L" if image.mode in ("L", "1") or image.mode.startswith("I;16") else "RGB"
    rows = max(fy, STRIP_BYTES // (4 * (x1 - x0)) // fy * fy)
    work = Image.new(mode, (-(-(x1 - x0) // fx), -(-(y1 - y0) // fy)))
    for y in range(y0, y1, rows):
        piece = _convert(image.crop((x0, y, x1, min(y1, y + rows))), mode)
        work.paste(piece.reduce((fx, fy)) if (fx, fy) != (1, 1) else piece, (0, (y - y0) // fy))
    if alpha:
        white = Image.new("RGBA", work.size, (255, 255, 255, 255))
        work = Image.alpha_composite(white, work).convert("RGB")
    left, top, right, bottom = (v * scale for v in box)
    inside = ((left - x0) / fx, (top - y0) / fy,
              min((right - x0) / fx, work.width), min((bottom - y0) / fy, work.height))
    return _resize_region(work, inside, 1.0, resize, orientation)


def _convert(piece: Image.Image, mode: str) -> Image.Image:
    """One strip in the working mode: RGBA, L (16-bit grey scaled down) or RGB."""
    if piece.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(piece).astype(np.uint16) >> 8).astype(np.uint8))
    return piece if piece.mode == mode else piece.convert(mode)


# -- shared geometry -------------------------------------------------------------------
def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels, "
                            f"limit {max_pixels}")


def _region(width: int, height: int, resize: Resize, orientation: int = 1) -> tuple[int, int, int, int]:
    """(left, upper, right, lower) of what the output shows, in the stored image's pixels: all
    of it (`squash`) or the centre square of the upright picture (`contract.crop_box`: offsets
    rounded up there, which is down on a stored axis that runs backwards)."""
    if resize.mode == "squash":
        return 0, 0, width, height
    left, top, right, _bottom = crop_box(width, height, resize.crop_fraction)
    side = right - left
    backwards_x, backwards_y = _REVERSED.get(orientation, (False, False))
    left = (width - side) // 2 if backwards_x else left
    top = (height - side) // 2 if backwards_y else top
    return left, top, left + side, top + side


def _short_side(box: tuple[int, int, int, int]) -> int:
    return min(box[2] - box[0], box[3] - box[1])


def _reduction(box: tuple[int, int, int, int], scale: float, bounds: tuple[int, int],
               size: int) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The pixels of an image decoded at `scale` (`bounds` wide and high) that hold `box`, and
    the whole factors per axis that reduce them while they keep >= REDUCING_GAP x size."""
    left, top, right, bottom = box
    x0, y0 = math.floor(left * scale), math.floor(top * scale)
    x1 = min(bounds[0], max(x0 + 1, math.ceil(right * scale)))
    y1 = min(bounds[1], max(y0 + 1, math.ceil(bottom * scale)))
    factors = _reduce_factor((right - left) * scale, size), _reduce_factor((bottom - top) * scale, size)
    return (x0, y0, x1, y1), factors


def _work_pixels(pixels: tuple[int, int, int, int], factors: tuple[int, int], size: int) -> int:
    """The reduced region's pixels, counted at least `size` wide: the resampler's intermediate
    can be `size` wide and as high as the region (a thin image squashed is widened)."""
    x0, y0, x1, y1 = pixels
    return max(-(-(x1 - x0) // factors[0]), size) * -(-(y1 - y0) // factors[1])


def _resize_region(image: Image.Image, box: tuple[float, float, float, float], scale: float, resize: Resize,
                   orientation: int) -> np.ndarray:
    """Resize the region `box` of `image` (which is the image `box` is measured in, decoded at
    `scale`) to the output with the contract's filter, reducing it first by whole factors per
    axis as the Pillow path does (Pillow's `reducing_gap`), so that the resampler never spans
    more than ~4x the output side on either axis (a thin image squashed); orient."""
    scaled = tuple(v * scale for v in box)
    out = image.resize((resize.size, resize.size), Image.Resampling[resize.pil_filter], box=scaled,
                       reducing_gap=REDUCING_GAP)
    return _finish(out, orientation)


def _finish(out: Image.Image, orientation: int) -> np.ndarray:
    if orientation in _TRANSPOSE:
        out = out.transpose(_TRANSPOSE[orientation])
    array = np.asarray(out)
    if array.ndim == 2:  # grayscale: replicate after the resize, 3x less work
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    array.setflags(write=False)
    return array
