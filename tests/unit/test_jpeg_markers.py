"""The JPEG marker walk (streaming/jpeg_markers.py) against libjpeg's own header parse
(PyTurboJPEG's decode_header) and Pillow's (JpegImagePlugin): markers a decoder skips (RSTn,
TEM, fill bytes, extraneous bytes) may not hide the frame from the guards, and the scan limit
holds for every input that starts FF D8, whichever path decodes it."""
from __future__ import annotations

import warnings
from io import BytesIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from streaming.decode import decode_to_tensor
from streaming.errors import CorruptImage, ImageTooLarge, UnsupportedImage
from streaming.jpeg_markers import count_scans, jpeg_header
from tests.corpus import make_images

# no decoder warning may leak out; a socket another test leaked and the garbage collector
# finalises during one of these tests is not one (it failed a decode test once in CI)
pytestmark = pytest.mark.filterwarnings("error", "default::ResourceWarning",
                                        "default::pytest.PytestUnraisableExceptionWarning")
RST = [bytes([0xFF, 0xD0 + n]) for n in range(8)]
TEM = b"\xff\x01"
FILL = b"\xff"  # an extra FF before a marker
JUNK = b"\x00\x17\x42"  # not FF: libjpeg warns (extraneous data) and skips it, Pillow too


def jpeg(width: int, height: int, **options: object) -> bytes:
    return make_images.save(make_images.picture((width, height)), "JPEG", **options)


def segment_starts(data: bytes) -> list[int]:
    """Offsets of the markers before the first scan (the places a producer can insert bytes)."""
    starts, i = [2], 2
    while data[i + 1] != 0xDA:
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        starts.append(i)
    return starts


def insert(data: bytes, inserts: list[tuple[int, bytes]]) -> bytes:
    starts = segment_starts(data)
    out, last = [], 0
    for index, blob in sorted(((i % len(starts), b) for i, b in inserts), key=lambda t: t[0]):
        out += [data[last:starts[index]], blob]
        last = starts[index]
    return b"".join(out) + data[last:]


def turbo_header(data: bytes) -> tuple[int, int] | None:
    from turbojpeg import TurboJPEG
    try:
        width, height, _, _ = TurboJPEG().decode_header(data)
    except OSError:
        return None
    return width, height


def pillow_header(data: bytes) -> tuple[int, int, bool] | None:
    try:
        with Image.open(BytesIO(data), formats=("JPEG",)) as image:
            return image.size[0], image.size[1], bool(image.info.get("progressive"))
    except (OSError, SyntaxError):
        return None


BASES = [jpeg(64, 48, quality=80), jpeg(64, 48, quality=80, progressive=True),
         jpeg(200, 120, quality=70, subsampling=0), jpeg(33, 17, quality=90, progressive=True)]
SKIPPED = st.sampled_from(RST + [TEM, FILL, FILL * 3])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(BASES), inserts=st.lists(st.tuples(st.integers(0, 20), SKIPPED), min_size=1, max_size=6))
def test_markers_decoders_skip_do_not_change_what_the_walk_reads(base, inserts):
    data = insert(base, inserts)
    header = jpeg_header(data)
    clean = jpeg_header(base)
    assert (header.width, header.height, header.progressive) == (clean.width, clean.height, clean.progressive)
    turbo = turbo_header(data)
    if turbo is not None:  # libjpeg's own parse, where it accepts the file
        assert turbo == (header.width, header.height)
    pillow = pillow_header(data)
    if pillow is not None:  # Pillow refuses TEM; where it accepts, it agrees
        assert pillow == (header.width, header.height, header.progressive)
    assert turbo is not None or pillow is not None or TEM in data


@settings(max_examples=100, deadline=None)
@given(base=st.sampled_from(BASES), inserts=st.lists(st.tuples(st.integers(0, 20), st.just(JUNK)), min_size=1, max_size=3))
def test_extraneous_bytes_between_segments_are_skipped_as_pillow_does(base, inserts):
    later = len(segment_starts(base)) - 1
    data = insert(base, [(1 + i % later, blob) for i, blob in inserts])  # not before the first
    # segment: Pillow only opens files that start FF D8 FF (the decode guards look at FF D8)
    header = jpeg_header(data)
    pillow = pillow_header(data)
    assert pillow is not None and pillow == (header.width, header.height, header.progressive)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_the_walk_never_raises_and_reads_only_what_is_there(data):
    header = jpeg_header(b"\xff\xd8" + data)
    assert 1 <= header.orientation <= 8 and header.width >= 0 and header.height >= 0
    assert header.coefficient_bytes >= 0


@pytest.mark.parametrize("prefix", [RST[0], TEM, FILL * 5, RST[7] + TEM + RST[3], JUNK])
@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_the_scan_bomb_is_refused_whatever_hides_its_frame(prefix, backend):
    bomb = make_images.scan_bomb(2000)
    hidden = bomb[:2] + prefix + bomb[2:]
    assert jpeg_header(hidden).progressive
    with pytest.raises(UnsupportedImage, match="2001 scans"):
        decode_to_tensor(hidden, max_pixels=64_000_000, jpeg_backend=backend)


def test_the_corpus_rst0_bomb_was_decodable_by_pillow():
    """What made the bypass: Pillow skips the RST0 and would decode every scan."""
    bomb = make_images.rst0_after_soi(make_images.scan_bomb(2000))
    assert pillow_header(bomb) == (64, 64, True)
    assert count_scans(bomb) == 2001


@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_a_baseline_file_with_extra_scans_is_refused(backend):
    data = bytearray(make_images.scan_bomb(700))
    sof = data.index(b"\xff\xc2")
    data[sof + 1] = 0xC0  # the same scans behind a baseline frame header
    assert not jpeg_header(bytes(data)).progressive
    with pytest.raises(UnsupportedImage, match="701 scans"):
        decode_to_tensor(bytes(data), max_pixels=64_000_000, jpeg_backend=backend)


@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_pixels_times_scans_is_bounded_below_the_scan_limit(backend):
    data = make_images.scan_bomb(400, make_images.picture((640, 480)))
    with pytest.raises(UnsupportedImage, match="pixel passes"):  # 307,200 px x 401 scans > 16 x 7 M
        decode_to_tensor(data, max_pixels=7_000_000, jpeg_backend=backend)
    assert decode_to_tensor(data, max_pixels=64_000_000, jpeg_backend=backend).tensor.shape == (224, 224, 3)


def test_largest_frame_is_the_one_checked():
    data = bytearray(jpeg(16, 16, quality=90))
    sof = data.index(b"\xff\xc0")
    second = bytes(data[sof:sof + 2 + int.from_bytes(data[sof + 2:sof + 4], "big")])
    big = bytearray(second)
    big[5:9] = (30_000).to_bytes(2, "big") + (30_000).to_bytes(2, "big")
    doubled = bytes(data[:sof]) + bytes(big) + bytes(data[sof:])  # a huge SOF, then the real one
    assert (jpeg_header(doubled).width, jpeg_header(doubled).height) == (30_000, 30_000)
    with pytest.raises((ImageTooLarge, CorruptImage)):
        decode_to_tensor(doubled, max_pixels=64_000_000, jpeg_backend="pillow")


def test_coefficient_buffer_follows_the_sampling():
    for options, per_pixel in (({"subsampling": 0}, 6.0), ({"subsampling": 2}, 3.0)):
        header = jpeg_header(jpeg(800, 640, quality=80, progressive=True, **options))
        assert header.coefficient_bytes == pytest.approx(800 * 640 * per_pixel, rel=0.02)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(st.sampled_from([b"\xff", b"\xda", b"\x00", b"\xff\xda", b"x"]), max_size=60).map(b"".join))
def test_scan_count_is_the_count_of_ff_da(data):
    assert count_scans(data) == data.count(b"\xff\xda")


def test_scans_are_counted_across_the_edges_of_the_pieces_and_in_bounded_memory():
    from streaming.jpeg_markers import _SCAN_CHUNK_BYTES as PIECE
    data = bytearray(3 * PIECE)
    for at in (PIECE - 1, 2 * PIECE - 2, 2 * PIECE):  # a pair split by an edge, one just before, one after
        data[at:at + 2] = b"\xff\xda"
    assert count_scans(bytes(data)) == 3 == bytes(data).count(b"\xff\xda")
    assert count_scans(b"\xda" * (4 * PIECE)) == 0  # once 8 bytes of index per byte: now a piece at a time


@pytest.mark.parametrize("kind, width, order, read, count", [
    (3, 2, "big", 6, 1), (4, 4, "big", 6, 1), (3, 2, "little", 6, 1), (4, 4, "little", 6, 1), (9, 4, "big", 6, 1),
    (1, 1, "big", 1, 1), (3, 2, "little", 6, 2)])
def test_an_exif_orientation_of_any_integer_type_is_read_as_pillow_reads_it(kind, width, order, read, count):
    from streaming.decode import _pillow_orientation

    import struct

    mark = b"MM" if order == "big" else b"II"
    end = ">" if order == "big" else "<"
    value = ((6).to_bytes(width, order) * count).ljust(4, b"\0")  # of several values, the first counts
    tiff = mark + struct.pack(end + "HI", 42, 8) + struct.pack(end + "H", 1) \
        + struct.pack(end + "HHI", 0x0112, kind, count) + value + b"\0\0\0\0"
    exif = b"Exif\x00\x00" + tiff
    data = b"\xff\xd8\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg(64, 48)[2:]
    assert jpeg_header(data).orientation == read
    with Image.open(BytesIO(data)) as image, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns of a count of 2 ("too many entries"), then takes the first
        assert _pillow_orientation(image) == read  # the other path's reading (a BYTE it reads as bytes)


def test_a_jpeg_made_of_extraneous_bytes_is_walked_at_c_speed_and_refused_before_pillow():
    base = jpeg(64, 48)
    data = base[:20] + b"\x17" * (32 << 20) + base[20:]
    assert jpeg_header(data).extraneous == 32 << 20
    with pytest.raises(CorruptImage, match="not markers"):
        decode_to_tensor(data, max_pixels=10**6, jpeg_backend="pillow")


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


EMPTY_APP0 = segment(0xE0, b"")


@pytest.mark.parametrize("filler", [EMPTY_APP0, RST[0], TEM, b"\xff\x00"])
@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_the_walk_stops_after_max_segments_and_the_file_is_refused(filler, backend):
    """32 MiB of 4-byte segments (or RSTn, or stuffed zeros) took the walk 3-5 s and Pillow's parser
    5-10 s more, a marker at a time: the walk stops at the limit, and the file is refused."""
    from streaming.jpeg_markers import MAX_SEGMENTS

    base = jpeg(64, 48)
    data = base[:2] + filler * (20 * MAX_SEGMENTS) + base[2:]
    header = jpeg_header(data)
    assert header.segments == MAX_SEGMENTS + 1  # stopped there, not at the 81,920th
    with pytest.raises(CorruptImage, match=f"more than {MAX_SEGMENTS} markers"):
        decode_to_tensor(data, max_pixels=10**6, jpeg_backend=backend)


def test_a_jpeg_just_under_the_marker_limit_decodes():
    from streaming.jpeg_markers import MAX_SEGMENTS

    base = jpeg(64, 48)
    data = base[:2] + EMPTY_APP0 * (MAX_SEGMENTS - jpeg_header(base).segments) + base[2:]
    assert jpeg_header(data).segments == MAX_SEGMENTS
    for backend in ("turbojpeg", "pillow"):
        assert decode_to_tensor(data, max_pixels=10**6, jpeg_backend=backend).tensor.shape == (224, 224, 3)


@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_fill_bytes_count_as_extraneous(backend):
    """Pillow's parser steps over FF fill a byte at a time (6.6 s for 32 MiB); libjpeg does not mind."""
    base = jpeg(64, 48)
    data = base[:2] + FILL * 70_000 + base[2:]
    assert jpeg_header(data).extraneous == 70_000
    with pytest.raises(CorruptImage, match="not markers"):
        decode_to_tensor(data, max_pixels=10**6, jpeg_backend=backend)


def exif_app1(entries: bytes = b"", count: int = 0) -> bytes:
    import struct
    return segment(0xE1, b"Exif\x00\x00" + b"II" + struct.pack("<HIH", 42, 8, count) + entries + b"\0\0\0\0")


@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_many_exif_segments_are_refused(backend):
    """Pillow appends every Exif APP1 to the first, copying all of it each time: quadratic."""
    from streaming.decode import MAX_JPEG_EXIF_SEGMENTS

    base = jpeg(64, 48)
    data = base[:2] + exif_app1() * (MAX_JPEG_EXIF_SEGMENTS + 1) + base[2:]
    assert jpeg_header(data).exif_segments == MAX_JPEG_EXIF_SEGMENTS + 1
    with pytest.raises(CorruptImage, match="Exif segments"):
        decode_to_tensor(data, max_pixels=10**6, jpeg_backend=backend)
    allowed = base[:2] + exif_app1() * MAX_JPEG_EXIF_SEGMENTS + base[2:]
    assert decode_to_tensor(allowed, max_pixels=10**6, jpeg_backend=backend).tensor.shape == (224, 224, 3)


def test_the_orientation_is_read_from_the_first_exif_segment_as_pillow_reads_it():
    import struct

    from streaming.decode import _pillow_orientation

    rotated = exif_app1(struct.pack("<HHI", 0x0112, 3, 1) + (6).to_bytes(4, "little"), 1)
    data = b"\xff\xd8" + exif_app1() + rotated + jpeg(64, 48)[2:]
    with Image.open(BytesIO(data)) as image:
        assert jpeg_header(data).orientation == _pillow_orientation(image) == 1


@pytest.mark.parametrize("marker, body", [
    (0xC0, bytes([8, 0, 48, 0, 64, 3]) + bytes([1, 0x11, 0]) * 21_000),  # a frame of 21,000 components
    (0xDB, (b"\x00" + bytes(range(1, 65))) * 1_000)])  # 1,000 quantization tables
@pytest.mark.parametrize("backend", ["turbojpeg", "pillow"])
def test_large_frame_and_table_segments_are_refused(marker, body, backend):
    """Pillow's parser reads them a value at a time (0.5 s for 100 SOF segments of 64 KiB)."""
    base = jpeg(64, 48)
    data = base[:2] + segment(marker, body) * 2 + base[2:]
    assert jpeg_header(data).table_bytes > 120_000
    with pytest.raises(CorruptImage, match="quantization-table"):
        decode_to_tensor(data, max_pixels=10**6, jpeg_backend=backend)
