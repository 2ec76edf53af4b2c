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
    assert tiff_layout(make_images.tiff_strip_bomb(300)) == TiffLayout(64, 64, 1, 1, strips=300)
    tiled = tiff_layout(make_images.tiff_tile_bomb(64))
    assert (tiled.width, tiled.height, tiled.compression, tiled.tiles, tiled.tile_width, tiled.tile_length) == \
        (16, 16, 8, 1, 64, 64)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", make_images.bigtiff()])
def test_other_formats_and_bigtiff_are_not_read(data):
    assert tiff_layout(data) is None


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_after_a_tiff_header_are_read_without_raising(data):
    layout = tiff_layout(b"II*\x00" + data)
    assert layout is not None and layout.width >= 0 and layout.strips >= 0
