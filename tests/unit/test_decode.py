"""decode_to_tensor: shapes, both decode paths, orientation, and the error codes."""
from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from streaming.contract import CROP_FRACTION, ContractError, Resize
from streaming.decode import JPEG_BACKEND, DecodedImage, _jpeg_orientation, _scaling_factor, decode_to_tensor
from streaming.errors import CorruptImage, ImageTooLarge, PipelineError, UnsupportedImage
from tests.corpus import corpus, make_images

# no decoder warning may leak out; a socket another test leaked and the garbage collector
# finalises during one of these tests is not one (it failed a decode test once in CI)
pytestmark = pytest.mark.filterwarnings("error", "default::ResourceWarning",
                                        "default::pytest.PytestUnraisableExceptionWarning")
MAX_PIXELS = 64_000_000
FAST_PATH_TOLERANCE = 4.0  # mean abs difference, grey levels, DCT-scaled decode vs full decode


# -- test images -------------------------------------------------------------------------
def photo(width: int = 1024, height: int = 768, seed: int = 0) -> Image.Image:
    """Photo-like RGB: 1/f ("pink") noise, the spectrum of natural images, plus hard edges."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    falloff = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(width, height))
    channels = []
    for _ in range(3):
        spectrum = falloff * np.exp(2j * np.pi * rng.random(falloff.shape))
        plane = np.fft.irfft2(spectrum, s=(height, width))
        plane = (plane - plane.min()) / (np.ptp(plane) or 1.0)
        channels.append(plane)
    array = (np.stack(channels, axis=2) * 255).astype(np.uint8)
    array[height // 3: height // 2, width // 4: width // 2] = (250, 30, 20)  # a sharp-edged block
    return Image.fromarray(array)


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def reference(data: bytes, size: int = 224, mode: str = "center_crop", filter: str = "bicubic") -> np.ndarray:
    """The Pillow reference: full decode, upright, then the centre crop of 224/256 or (squash)
    the whole image, resized with `filter`."""
    with Image.open(BytesIO(data)) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = image.size
    crop = int(min(width, height) * CROP_FRACTION)
    left, top = (width - crop + 1) // 2, (height - crop + 1) // 2
    box = (0, 0, width, height) if mode == "squash" else (left, top, left + crop, top + crop)
    resized = image.resize((size, size), Image.Resampling[filter.upper()], box=box)
    return np.asarray(resized)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def decode(data: bytes, size: int = 224, max_pixels: int = MAX_PIXELS,
           backend: str = "auto", **resize: str) -> DecodedImage:
    return decode_to_tensor(data, Resize(size, **resize), max_pixels=max_pixels, jpeg_backend=backend)


def assert_tensor(decoded: DecodedImage, size: int = 224) -> None:
    tensor = decoded.tensor
    assert tensor.shape == (size, size, 3)
    assert tensor.dtype == np.uint8
    assert tensor.flags.c_contiguous
    assert decoded.decode_ms >= 0 and decoded.resize_ms >= 0


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return photo()


# -- the fast path -----------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    {"quality": 90},
    {"quality": 90, "progressive": True},
    {"quality": 90, "subsampling": 0},  # 4:4:4
    {"quality": 90, "subsampling": 2},  # 4:2:0
    {"quality": 75, "subsampling": 1, "optimize": True},  # 4:2:2
], ids=["baseline", "progressive", "444", "420", "422"])
def test_jpeg_takes_turbojpeg_path_and_matches_pillow_reference(picture, options):
    data = encode(picture, **options)
    decoded = decode(data)
    assert_tensor(decoded)
    assert decoded.path == "turbojpeg"
    assert (decoded.width, decoded.height) == picture.size
    # Measured 1.6-3.1 grey levels here (1/f noise is harsh), 0.3-3.4 on real 1-18 MP photos.
    assert mean_abs_diff(decoded.tensor, reference(data)) < FAST_PATH_TOLERANCE


@pytest.mark.parametrize("options", [{"quality": 90}, {"quality": 90, "progressive": True},
                                     {"quality": 90, "subsampling": 0}])
def test_pillow_jpeg_backend_matches_the_turbojpeg_one(picture, options):
    data = encode(picture, **options)
    pillow, turbo = decode(data, backend="pillow"), decode(data, backend="turbojpeg")
    assert_tensor(pillow)
    assert (pillow.path, turbo.path) == ("pillow", "turbojpeg")
    assert mean_abs_diff(pillow.tensor, reference(data)) < FAST_PATH_TOLERANCE
    assert mean_abs_diff(pillow.tensor, turbo.tensor) < FAST_PATH_TOLERANCE


def test_auto_backend_is_the_module_default(picture):
    assert decode(encode(picture, quality=90)).path == JPEG_BACKEND


def test_unknown_backend_is_a_programming_error(picture):
    with pytest.raises(ValueError, match="jpeg_backend"):
        decode(encode(picture), backend="opencv")


@pytest.mark.parametrize("backend, width, height, mode, scale", [
    ("turbojpeg", 1024, 768, "center_crop", (3, 8)),  # crop 672 -> 252: the M/8 factors libjpeg-turbo offers
    ("pillow", 1024, 768, "center_crop", (1, 2)),  # Pillow's draft() only has 1/2, 1/4, 1/8
    ("turbojpeg", 4000, 3000, "center_crop", (1, 8)),
    ("pillow", 4000, 3000, "center_crop", (1, 8)),
    ("turbojpeg", 320, 240, "center_crop", (1, 1)),
    ("turbojpeg", 2000, 1000, "center_crop", (3, 8)),  # crop 875: 2/8 would leave 218
    ("turbojpeg", 2000, 1000, "squash", (1, 4)),  # the whole height, 1000: 2/8 leaves 250
    ("pillow", 2000, 1000, "center_crop", (1, 2)),
    ("pillow", 2000, 1000, "squash", (1, 4)),
    ("turbojpeg", 4000, 300, "squash", (3, 4)),  # both sides keep >= 224: the height 300 at 6/8 is 225
    ("pillow", 4000, 300, "squash", (1, 1)),
    ("turbojpeg", 200, 3000, "squash", (1, 1)),  # narrower than the output: widened, never scaled
])
def test_decodes_at_the_smallest_scale_that_covers_the_region(backend, width, height, mode, scale):
    data = encode(Image.new("RGB", (width, height), (10, 120, 200)), quality=80)
    decoded = decode(data, backend=backend, mode=mode)
    assert decoded.scale == scale
    assert decoded.tensor[100, 100].tolist() == pytest.approx([10, 120, 200], abs=3)
    side = min(width, height) if mode == "squash" else int(min(width, height) * CROP_FRACTION)
    assert side * scale[0] / scale[1] >= 224 or scale == (1, 1)  # small images are upscaled


def test_reused_decode_buffers_never_leak_between_images_or_threads():
    datas = [encode(photo(w, h, seed=s), quality=85)
             for s, (w, h) in enumerate([(640, 480), (1024, 768), (500, 700), (640, 480)])]
    expected = [decode(d).tensor for d in datas]
    again = [decode(d).tensor for d in reversed(datas)][::-1]  # other order, other buffer sizes
    assert all(np.array_equal(a, b) for a, b in zip(expected, again))
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            results = list(pool.map(lambda d: decode(d).tensor, datas * 4))
            assert all(np.array_equal(r, expected[i % 4]) for i, r in enumerate(results))


@pytest.mark.parametrize("size", [224, 96, 300])
def test_output_size_follows_argument(picture, size):
    data = encode(picture, quality=90)
    decoded = decode(data, size=size)
    assert_tensor(decoded, size)
    assert mean_abs_diff(decoded.tensor, reference(data, size)) < FAST_PATH_TOLERANCE


def test_small_jpeg_is_upscaled():
    data = encode(photo(40, 30), quality=95)
    decoded = decode(data)
    assert_tensor(decoded)
    assert mean_abs_diff(decoded.tensor, reference(data)) < 1.0


def test_grayscale_jpeg_is_replicated_to_rgb(picture):
    data = encode(picture.convert("L"), quality=90)
    decoded = decode(data)
    assert_tensor(decoded)
    assert decoded.path == "turbojpeg"
    tensor = decoded.tensor
    assert np.array_equal(tensor[..., 0], tensor[..., 1])
    assert np.array_equal(tensor[..., 0], tensor[..., 2])
    assert mean_abs_diff(tensor, reference(data)) < FAST_PATH_TOLERANCE


def test_cmyk_jpeg_falls_back_to_pillow(picture):
    data = encode(picture.convert("CMYK"), quality=90)
    decoded = decode(data)
    assert_tensor(decoded)
    assert decoded.path == "pillow"
    assert mean_abs_diff(decoded.tensor, reference(data)) < 2.5


_UPRIGHT_TO_STORED = {  # the inverse of the transpose each EXIF orientation asks for
    1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("mode", ["center_crop", "squash"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation, fmt, mode):
    """Squash too: 5-8 store the picture on its side (300x400 for a 400x300 one); the output is
    the upright picture squashed, as exif_transpose then resize gives."""
    upright = Image.new("RGB", (400, 300), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 200, 150))  # red top-left quadrant
    upright.paste((0, 255, 0), (200, 150, 400, 300))  # green bottom-right quadrant
    inverse = _UPRIGHT_TO_STORED[orientation]
    stored = upright.transpose(inverse) if inverse is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    decoded = decode(data, mode=mode)
    assert_tensor(decoded)
    assert decoded.path == ("turbojpeg" if fmt == "JPEG" else "pillow")
    tensor = decoded.tensor.astype(int)
    assert tensor[20, 20].tolist() == pytest.approx([255, 0, 0], abs=12)  # top-left: red
    assert tensor[200, 200].tolist() == pytest.approx([0, 255, 0], abs=12)  # bottom-right: green
    assert tensor[20, 200].tolist() == pytest.approx([0, 0, 255], abs=12)  # top-right: blue
    assert mean_abs_diff(decoded.tensor, reference(data, mode=mode)) < 2.0


@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
@pytest.mark.parametrize("mode", ["center_crop", "squash"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_gives_the_upright_reference(orientation, mode, backend):
    """160x120 stored: the centre square's offsets are odd (27.5, 7.5), rounded up in the upright
    picture as the reference does, whichever way the stored axes run."""
    data = make_images.exif_rotated(orientation)
    decoded = decode(data, backend=backend, mode=mode, filter="bilinear")
    assert mean_abs_diff(decoded.tensor, reference(data, mode=mode, filter="bilinear")) < 1.0


def test_jpeg_orientation_parser_reads_exif_and_tolerates_junk():
    exif = Image.Exif()
    exif[0x0112] = 6
    assert _jpeg_orientation(encode(Image.new("RGB", (8, 8)), exif=exif)) == 6
    assert _jpeg_orientation(encode(Image.new("RGB", (8, 8)))) == 1
    assert _jpeg_orientation(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\xff\xff\xff\xff") == 1
    assert _jpeg_orientation(b"\xff\xd8\xff\xe1\x00") == 1


@pytest.mark.parametrize("crop, expected", [(945, (1, 4)), (1890, (1, 8)), (300, (3, 4)),
                                            (224, (1, 1)), (100, (1, 1)), (448, (1, 2))])
def test_scaling_factor_is_smallest_that_keeps_size(crop, expected):
    from turbojpeg import TurboJPEG
    assert _scaling_factor(TurboJPEG().scaling_factors, crop, 224) == expected


# -- what the contract's Resize asks for: squash, bilinear -------------------------------
# The corpus' pictures (160x120; transparency left out: the reference drops it, the decoder flattens it).
CORPUS_PICTURES = ["baseline.jpg", "progressive.jpg", "exif-rotated-6.jpg", "gray.jpg", "cmyk.jpg",
                   "png-rgb.png", "png-16bit-rgb.png", "gif.gif", "webp-lossy.webp", "tiff.tiff", "bmp.bmp"]
RESIZES = [("squash", "bicubic"), ("squash", "bilinear"), ("center_crop", "bilinear")]


@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
@pytest.mark.parametrize("size", [224, 48], ids=["upscaled", "dct-scaled"])  # 48: every JPEG at 1/2
@pytest.mark.parametrize("mode, filter", RESIZES, ids=["-".join(r) for r in RESIZES])
@pytest.mark.parametrize("name", CORPUS_PICTURES)
def test_corpus_pictures_match_the_pillow_reference_for_each_resize(name, mode, filter, size, backend):
    data = (corpus.IMAGES / name).read_bytes()
    decoded = decode(data, size, backend=backend, mode=mode, filter=filter)
    assert_tensor(decoded, size)
    jpeg = name.endswith(".jpg")
    assert decoded.path == (backend if jpeg and name != "cmyk.jpg" else "pillow")
    assert decoded.scale == ((1, 2) if jpeg and size == 48 else (1, 1))
    assert mean_abs_diff(decoded.tensor, reference(data, size, mode, filter)) < (2.0 if size == 48 else 1.0)


@pytest.fixture(scope="module")
def large_photos() -> dict[str, Image.Image]:
    return {"wide": photo(2400, 1800, seed=7), "thin": photo(300, 2400, seed=8)}


@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("filter", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape", ["wide", "thin"])
def test_squash_of_a_large_photo_matches_the_pillow_reference(large_photos, shape, filter, fmt, backend):
    """DCT-scaled (JPEG) and reduced by a different whole factor on each axis (both paths)."""
    data = encode(large_photos[shape], fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    decoded = decode(data, backend=backend, mode="squash", filter=filter)
    assert_tensor(decoded)
    assert mean_abs_diff(decoded.tensor, reference(data, mode="squash", filter=filter)) < FAST_PATH_TOLERANCE


@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_bilinear_is_not_bicubic(picture, backend):
    data = encode(picture, quality=90)
    bilinear, bicubic = (decode(data, backend=backend, filter=f).tensor for f in ("bilinear", "bicubic"))
    assert mean_abs_diff(bilinear, reference(data, filter="bilinear")) < mean_abs_diff(bicubic, reference(
        data, filter="bilinear"))


def test_an_unknown_resize_cannot_reach_the_decoder():
    with pytest.raises(ContractError, match="input.resize"):
        Resize(224, "letterbox")
    with pytest.raises(ContractError, match="input.interpolation"):
        Resize(224, filter="lanczos")
    with pytest.raises(ContractError, match="input.crop_fraction"):
        Resize(224, crop_fraction=0.0)
    with pytest.raises(TypeError, match="contract.Resize"):  # the old (data, size) call
        decode_to_tensor(encode(photo(64, 48)), 224, max_pixels=MAX_PIXELS)


BOMBS = [e for e in corpus.manifest()["images"] if "bomb" in e["file"]]


@pytest.mark.parametrize("mode", ["center_crop", "squash"])
@pytest.mark.parametrize("entry", BOMBS, ids=[e["file"] for e in BOMBS])
def test_corpus_bombs_are_refused_whatever_the_resize(entry, mode):
    with pytest.raises(PipelineError) as caught:
        decode_to_tensor((corpus.IMAGES / entry["file"]).read_bytes(), Resize(224, mode),
                         max_pixels=corpus.JOB_SETTINGS["max_pixels"])
    assert caught.value.code == entry["expect"]


# -- the Pillow path ---------------------------------------------------------------------
def test_png_alpha_is_flattened_on_white():
    image = Image.new("RGBA", (300, 300), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 0, 255, 255), (0, 0, 150, 300))  # opaque blue left half
    decoded = decode(encode(image, "PNG"))
    assert_tensor(decoded)
    assert decoded.path == "pillow"
    assert decoded.tensor[112, 5].tolist() == [0, 0, 255]
    assert decoded.tensor[112, 218].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt, mode, options", [
    ("PNG", "RGB", {}), ("PNG", "L", {}), ("PNG", "P", {}), ("PNG", "LA", {}),
    ("GIF", "P", {}), ("GIF", "P", {"transparency": 0}), ("BMP", "RGB", {}),
    ("TIFF", "RGB", {}), ("TIFF", "CMYK", {}), ("WEBP", "RGB", {"quality": 90}),
    ("WEBP", "RGBA", {"lossless": True}),
])
def test_other_formats_decode_with_pillow(picture, fmt, mode, options):
    image = picture.resize((320, 240))
    image = image.convert(mode) if mode != "P" else image.quantize(64)
    data = encode(image, fmt, **options)
    decoded = decode(data)
    assert_tensor(decoded)
    assert decoded.path == "pillow"
    assert (decoded.width, decoded.height) == (320, 240)


def test_gif_uses_first_frame():
    frames = [Image.new("P", (64, 64), i) for i in (1, 2)]
    for frame, colour in zip(frames, ((255, 0, 0), (0, 255, 0))):
        frame.putpalette([0, 0, 0, *colour, *colour] + [0] * 759)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode(data).tensor[100, 100].tolist() == [255, 0, 0]


def test_16_bit_grayscale_png_is_scaled_to_8_bits():
    image = Image.fromarray(np.full((64, 64), 0x8000, dtype=np.uint16))
    assert image.mode.startswith("I;16")
    assert decode(encode(image, "PNG")).tensor[0, 0].tolist() == [128, 128, 128]


# -- errors ------------------------------------------------------------------------------
def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def scan_bomb(scans: int) -> bytes:
    return make_images.scan_bomb(scans, photo(640, 480))


@pytest.mark.parametrize("mode", ["center_crop", "squash"])
@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_progressive_scan_bomb_is_refused_before_decoding(backend, mode):
    with pytest.raises(UnsupportedImage, match="501 scans"):
        decode(scan_bomb(500), backend=backend, mode=mode)  # 500 refinement scans + the DC scan
    with pytest.raises(UnsupportedImage, match="20001 scans"):  # decoding it would take seconds
        decode(scan_bomb(20_000), backend=backend, mode=mode)


def jpeg_with_declared_size(width: int, height: int, progressive: bool = False) -> bytes:
    data = bytearray(encode(Image.new("RGB", (16, 16)), quality=90, progressive=progressive))
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("mode", ["center_crop", "squash"])
@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_error_cases_give_their_codes(picture, backend, mode):
    jpeg = encode(picture, quality=90)
    progressive = encode(picture, quality=90, progressive=True)
    png = encode(picture.resize((200, 150)), "PNG")
    webp = encode(picture.resize((200, 150)), "WEBP")
    gif = encode(picture.resize((200, 150)).quantize(32), "GIF")
    cases = [
        (progressive[: len(progressive) // 2], CorruptImage),  # truncated progressive JPEG
        (progressive[:300], CorruptImage),
        (webp[: len(webp) // 2], CorruptImage),
        (gif[:40], CorruptImage),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(30), CorruptImage),
        (b"GIF89a" + bytes(20), CorruptImage),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", UnsupportedImage),  # JPEG 2000
        (b"\x00\x00\x00\x1cftypavif", UnsupportedImage),  # AVIF
        (jpeg_with_declared_size(20_000, 20_000, progressive=True), ImageTooLarge),
        (b"", CorruptImage),  # zero bytes: an empty (truncated) upload
        (np.random.default_rng(1).bytes(5000), UnsupportedImage),
        (b"%PDF-1.4 not an image", UnsupportedImage),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", UnsupportedImage),
        (jpeg[: len(jpeg) // 2], CorruptImage),  # truncated JPEG
        (jpeg[:200], CorruptImage),  # truncated inside the headers
        (b"\xff\xd8\xff" + bytes(500), CorruptImage),  # JPEG magic, garbage after
        (png[: len(png) // 2], CorruptImage),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), CorruptImage),
        (png_header(100_000, 100_000), ImageTooLarge),  # the 10-gigapixel PNG bomb
        (jpeg_with_declared_size(60_000, 60_000), ImageTooLarge),
    ]
    for data, error in cases:
        with pytest.raises(error) as caught:
            decode(data, backend=backend, mode=mode)
        assert caught.value.code == error.code and caught.value.stage == "decode"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_max_pixels_is_checked(picture, fmt):
    data = encode(picture, fmt)
    with pytest.raises(ImageTooLarge, match="1024x768"):
        decode(data, max_pixels=1024 * 768 - 1)
    assert_tensor(decode(data, max_pixels=1024 * 768))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_only_typed_errors_leave_decode(data):
    base = data.draw(st.sampled_from(_SMALL_IMAGES))
    position = data.draw(st.integers(0, len(base)))
    garbage = data.draw(st.binary(max_size=64))
    cut = data.draw(st.booleans())
    mutated = base[:position] + garbage + (b"" if cut else base[position + len(garbage):])
    try:
        decoded = decode(mutated, size=32, max_pixels=1_000_000)
    except PipelineError as exc:
        assert isinstance(exc, (CorruptImage, UnsupportedImage, ImageTooLarge))
    else:
        assert_tensor(decoded, 32)


_SMALL = photo(48, 40, seed=3)
_SMALL_IMAGES = [encode(_SMALL, quality=80), encode(_SMALL, quality=80, progressive=True),
                 encode(_SMALL, "PNG"), encode(_SMALL.quantize(16), "GIF"),
                 encode(_SMALL, "WEBP"), encode(_SMALL, "BMP"), encode(_SMALL, "TIFF")]


# -- memory: the budget, and no full-size copies on the Pillow path ---------------------
def flattened_reference(image: Image.Image, size: int = 224) -> np.ndarray:
    """Full size: alpha on white, then the reference crop and resize."""
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return reference(encode(Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"), "PNG"), size)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_large_image_with_alpha_is_reduced_then_flattened_like_the_full_size_reference(mode):
    base = photo(2400, 1800, seed=5).convert("RGBA")
    base.putalpha(Image.linear_gradient("L").resize(base.size))
    image = base.convert(mode) if mode != "P" else base.quantize(64)
    if mode == "P":
        image.info["transparency"] = 0
    data = encode(image, "PNG")
    decoded = decode(data)
    assert_tensor(decoded)
    with Image.open(BytesIO(data)) as reopened:
        want = flattened_reference(reopened)
    assert mean_abs_diff(decoded.tensor, want) < FAST_PATH_TOLERANCE


def test_long_thin_image_is_cropped_before_it_is_converted():
    image = Image.new("RGBA", (300, 40_000), (0, 0, 255, 255))
    image.paste((255, 0, 0, 0), (0, 20_000, 300, 40_000))  # lower half transparent
    decoded = decode(encode(image, "PNG"))
    assert decoded.tensor[10, 112].tolist() == [0, 0, 255]  # the crop is the middle 262 rows
    assert decoded.tensor[220, 112].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode", ["center_crop", "squash"])
@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_max_decode_bytes_is_checked_before_decoding(picture, backend, mode):
    jpeg, png = encode(picture, quality=90), encode(picture.convert("RGBA"), "PNG")
    progressive = encode(photo(1600, 1200), quality=90, progressive=True)
    resize = Resize(224, mode)
    for data in (jpeg, png, progressive):
        assert_tensor(decode_to_tensor(data, resize, max_pixels=MAX_PIXELS, jpeg_backend=backend))
    with pytest.raises(ImageTooLarge, match="max_decode_bytes"):
        decode_to_tensor(png, resize, max_pixels=MAX_PIXELS, jpeg_backend=backend, max_decode_bytes=20 * 2**20)
    # a progressive file buffers its whole-image coefficients (6 bytes a pixel at 4:4:4... here 4:2:0: 3)
    with pytest.raises(ImageTooLarge, match="max_decode_bytes"):
        decode_to_tensor(progressive, resize, max_pixels=MAX_PIXELS, jpeg_backend=backend,
                         max_decode_bytes=28 * 2**20)
    assert_tensor(decode_to_tensor(encode(photo(1600, 1200), quality=90), resize, max_pixels=MAX_PIXELS,
                                   jpeg_backend=backend, max_decode_bytes=28 * 2**20))  # baseline: no buffer
