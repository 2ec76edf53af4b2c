"""What a TIFF's first directory declares (streaming/tiff_ifd.py), read before Pillow opens the file:
the same size Pillow reads, the strip and tile counts of hand-built files, nothing from other
formats, and never an exception whatever the bytes."""
from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from streaming.tiff_ifd import TiffLayout, tiff_layout
from tests.corpus import make_images


@pytest.mark.parametrize("mode, size, compression", [("RGB", (160, 120), "tiff_lzw"), ("L", (33, 7), None),
                                                     ("RGBA", (64, 300), "tiff_deflate")])
def test_the_size_and_samples_are_what_pillow_reads(mode, size, compression):
    data = make_images.save(Image.new(mode, size, 9), "TIFF", compression=compression)
    layout = tiff_layout(data)
    with Image.open(io.BytesIO(data)) as image:
        assert (layout.width, layout.height) == image.size
        assert layout.samples == len(image.getbands()) and 1 <= layout.strips <= size[1]


def test_hand_built_strip_and_tile_layouts():
    assert tiff_layout(make_images.tiff_strip_bomb(300)) == TiffLayout(64, 64, 1, 1, strips=300, entries=10)
    tiled = tiff_layout(make_images.tiff_tile_bomb(64))
    assert (tiled.width, tiled.height, tiled.compression, tiled.tiles, tiled.tile_width, tiled.tile_length) == \
        (16, 16, 8, 1, 64, 64)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n"])
def test_other_formats_are_not_read(data):
    assert tiff_layout(data) is None


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_a_bigtiff_is_read_as_pillow_reads_it(compression):
    data = make_images.save(make_images.picture((300, 200)), "TIFF", big_tiff=True, compression=compression)
    layout = tiff_layout(data)
    with Image.open(io.BytesIO(data)) as opened:
        assert (layout.width, layout.height, layout.samples) == (*opened.size, 3) and 1 <= layout.strips <= 200


@pytest.mark.parametrize("side, tile", [(100, 256), (64, 128), (300, 256), (1000, 512), (16, 1024)])
def test_tiles_larger_than_a_small_image_as_writers_make_them_decode(side, tile):
    # GDAL writes 256x256 tiles, libvips 128x128, whatever the image's size
    import zlib

    from streaming.decode import decode_to_tensor

    payload = zlib.compress(bytes(range(256)) * (tile * tile * 3 // 256))
    tiles = (-(-side // tile)) ** 2
    data = make_images.tiff_by_hand(side, side, 3, [(259, 3, [8]), (322, 4, [tile]), (323, 4, [tile]),
                                                    (324, 4, [8] * tiles), (325, 4, [len(payload)] * tiles)], payload)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()  # Pillow decodes it
    assert decode_to_tensor(data, max_pixels=10**7).tensor.shape == (224, 224, 3)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_after_a_tiff_header_are_read_without_raising(data):
    layout = tiff_layout(b"II*\x00" + data)
    assert layout is not None and layout.width >= 0 and layout.strips >= 0


def test_a_strip_bomb_behind_more_entries_than_are_read_is_refused():
    """The walk reads MAX_ENTRIES entries; Pillow reads them all: 4 M strips after 1,100 others
    took Pillow 16 s and 1.2 GB."""
    import struct

    from streaming.decode import decode_to_tensor
    from streaming.errors import CorruptImage
    from streaming.tiff_ifd import MAX_ENTRIES

    strips = 100_000
    fields = [(256, 64), (257, 64), (258, 8), (259, 1), (262, 1), (277, 1), (278, 1)]
    fields += [(700 + k, 0) for k in range(MAX_ENTRIES)]  # unsorted: Pillow does not mind
    count = len(fields) + 2
    values = 8 + 2 + 12 * count + 4
    ifd = struct.pack("<H", count) + b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in fields)
    ifd += struct.pack("<HHII", 273, 4, strips, values) + struct.pack("<HHII", 279, 4, strips, values)
    data = b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + struct.pack("<I", 8) * strips
    layout = tiff_layout(data)
    assert layout.entries == MAX_ENTRIES + 9 and layout.strips == 0  # not read: past the entries read
    with pytest.raises(CorruptImage, match="entries"):
        decode_to_tensor(data, max_pixels=10**6)


def test_a_strip_count_pillow_takes_from_a_second_entry_is_the_one_checked():
    """Pillow skips an entry of a type it does not know and takes the next StripOffsets."""
    import struct

    from streaming.decode import decode_to_tensor
    from streaming.errors import CorruptImage

    data = make_images.tiff_by_hand(64, 64, 1, [(273, 4, [8]), (273, 4, [8] * 300), (278, 4, [1]),
                                                (279, 4, [1] * 300)], b"\0" * 16)
    first = struct.pack("<HHI", 273, 4, 1) + struct.pack("<I", 8)
    assert data.count(first) == 1
    data = data.replace(first, struct.pack("<HHI", 273, 14, 1) + struct.pack("<I", 8))  # type 14: unknown
    with Image.open(io.BytesIO(data)) as opened:
        assert len(opened.tag_v2[273]) == 300  # what Pillow builds its strips from
    assert tiff_layout(data).strips == 300
    with pytest.raises(CorruptImage, match="300 strips"):
        decode_to_tensor(data, max_pixels=10**6)


def test_strips_are_bounded_whatever_the_rows():
    """One strip per row of a 1 x 70,000 image: Pillow builds and decodes 70,000 strips (4 s and
    370 MiB for 1,000,000 in a 3.8 MiB file)."""
    from streaming.decode import MAX_TIFF_STRIPS, decode_to_tensor
    from streaming.errors import CorruptImage

    rows = MAX_TIFF_STRIPS + 4464
    data = make_images.tiff_by_hand(1, rows, 1, [(273, 4, [8] * rows), (278, 4, [1]), (279, 4, [1] * rows)],
                                    b"\0" * 16)
    with pytest.raises(CorruptImage, match=f"at most {MAX_TIFF_STRIPS}"):
        decode_to_tensor(data, max_pixels=10**6)
