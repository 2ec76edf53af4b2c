"""The JPEG marker walk the decoders' guards rely on: what a file declares before its pixels.

`jpeg_header` reads the segments before the first scan the way libjpeg's `next_marker` and
`read_markers` do: bytes that are not FF are skipped (libjpeg counts them as "extraneous data"
and goes on, and Pillow does too), FF fill bytes are skipped, SOI, RST0-7 (D0-D7) and TEM (01)
stand alone without a length, and every other marker is followed by its length. So a marker a
decoder ignores cannot hide the frame (SOF) from the guards: the old walk stopped at the first
segment it misread (an `FF D0` right after SOI) and reported a progressive bomb as baseline.

`count_scans` counts start-of-scan markers (FF DA) in the whole file: entropy-coded data stuffs
every FF as FF 00 (or is an RSTn), so FF DA only starts a scan (or sits inside a segment, which
only over-counts). It runs once for every input that starts FF D8 (~0.3 ms per MB), a MiB at a
time (its index of DA bytes would otherwise be 8 bytes per byte of a file made of them).

Both walks run at C speed on hostile filler (`bytes.find`, a regex for FF runs): a Python loop
over 32 MiB of junk took 3 s. `jpeg_header` also counts the extraneous bytes it skipped, for the
decoder to refuse a file made of them (Pillow's own header parser skips them one byte at a time).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # TEM, SOI, RST0-7: no length
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_ORIENTATION_TAG = 0x0112
_FILL = re.compile(rb"\xff+")
_INTEGER_WIDTHS = {3: 2, 4: 4, 8: 2, 9: 4}  # TIFF field types (S)SHORT, (S)LONG: Pillow reads BYTEs as bytes
_SCAN_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class JpegHeader:
    orientation: int = 1  # EXIF orientation 1-8; 1 when absent or unreadable
    progressive: bool = False  # any SOF before the first scan is progressive
    width: int = 0  # of the largest frame declared before the first scan; 0 when none was read
    height: int = 0
    # per component (horizontal, vertical) sampling factors of that frame
    sampling: tuple[tuple[int, int], ...] = ()
    extraneous: int = 0  # bytes between segments that are not markers, skipped before the first scan

    @property
    def coefficient_bytes(self) -> int:
        """The memory libjpeg needs to buffer a multi-scan image's DCT coefficients: 2 bytes per
        sample of every component (at its sampling), for the whole frame, whatever the output
        scale (progressive and multi-scan files are decoded from this whole-image buffer)."""
        if not self.sampling:
            return 0
        hmax = max(h for h, _ in self.sampling) or 1
        vmax = max(v for _, v in self.sampling) or 1
        # rounded up to whole 8x8 blocks of each component
        total = 0
        for h, v in self.sampling:
            cols = -(-self.width * h // (8 * hmax)) * 8
            rows = -(-self.height * v // (8 * vmax)) * 8
            total += cols * rows * 2
        return total


def jpeg_header(data: bytes) -> JpegHeader:
    """What the markers before the first scan declare; a few us. Never raises."""
    n = len(data)
    i = 2  # after SOI
    orientation, progressive, width, height, sampling, extraneous = 1, False, 0, 0, (), 0
    while i < n:
        if data[i] != 0xFF:  # extraneous bytes between segments: libjpeg skips them
            found = data.find(b"\xff", i)
            extraneous += (n if found < 0 else found) - i
            if found < 0:
                break
            i = found
        i = _FILL.match(data, i).end()  # FF and its fill bytes
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0x00 or marker in _STANDALONE:  # a stuffed zero, SOI, RSTn, TEM
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no header after this
            break
        if i + 2 > n:
            break
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2:
            break
        body = data[i + 2:i + length]
        if marker == 0xE1 and orientation == 1 and body[:6] == b"Exif\x00\x00":
            orientation = _tiff_orientation(memoryview(body)[6:])
        elif marker in _SOF and len(body) >= 6:
            progressive = progressive or marker in _PROGRESSIVE_SOF
            h, w, count = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"), body[5]
            if w * h >= width * height:
                width, height = w, h
                sampling = tuple((body[7 + 3 * k] >> 4, body[7 + 3 * k] & 0x0F)
                                 for k in range(count) if 8 + 3 * k <= len(body))
        i += length
    return JpegHeader(orientation, progressive, width, height, sampling, extraneous)


def count_scans(data: bytes) -> int:
    """Start-of-scan markers in the whole file (see the module docstring): the DA bytes, then
    which of them follow an FF; ~0.3 ms per MB, a third of `bytes.count(b"\\xff\\xda")`."""
    array = np.frombuffer(data, dtype=np.uint8)
    total = 0
    for start in range(0, len(array) - 1, _SCAN_CHUNK_BYTES):
        part = array[start:start + _SCAN_CHUNK_BYTES + 1]  # one byte more: a pair across the edge
        after_ff = np.flatnonzero(part[1:] == 0xDA)  # i: part[i + 1] is DA
        total += int(np.count_nonzero(part[after_ff] == 0xFF))
    return total


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
            # one SHORT or LONG (signed or not), left-justified in the value field: what the Pillow
            # path reads as an orientation (anything else it ignores, as this does)
            # (of several, the first, as Pillow takes it)
            width = _INTEGER_WIDTHS.get(int.from_bytes(tiff[entry + 2:entry + 4], order))
            count = int.from_bytes(tiff[entry + 4:entry + 8], order)
            if not width or count < 1:
                return 1
            at = entry + 8 if width * count <= 4 else int.from_bytes(tiff[entry + 8:entry + 12], order)
            value = int.from_bytes(tiff[at:at + width], order) if at + width <= len(tiff) else 0
            return value if 1 <= value <= 8 else 1
    return 1
