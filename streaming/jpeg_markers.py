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
over 32 MiB of junk took 3 s. `jpeg_header` also counts the extraneous and fill bytes it skipped,
for the decoder to refuse a file made of them (Pillow's own header parser skips both one byte at
a time: 6.6 s for 32 MiB of fill). Its loop does run once per marker, so it stops after
`MAX_SEGMENTS` of them: 32 MiB of 4-byte segments (or of RSTn, or of stuffed zeros) took it 3-5 s,
and Pillow's parser 5-10 s more. It also counts the Exif APP1 segments (Pillow joins them all
into one `bytes` a segment at a time, quadratic: 4 s for 200,000 tiny ones in 3.8 MiB) and the
bytes of the frame and quantization-table segments (Pillow reads them a value at a time).
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
# Markers read before the first scan, at most (a photo has a few dozen; an ICC profile split in its
# 255 chunks, a few hundred); `JpegHeader.segments` is this + 1 when there were more
MAX_SEGMENTS = 4096


@dataclass(frozen=True)
class JpegHeader:
    orientation: int = 1  # EXIF orientation 1-8; 1 when absent or unreadable
    progressive: bool = False  # any SOF before the first scan is progressive
    width: int = 0  # of the largest frame declared before the first scan; 0 when none was read
    height: int = 0
    # per component (horizontal, vertical) sampling factors of that frame
    sampling: tuple[tuple[int, int], ...] = ()
    # bytes between segments that are not markers (junk, and FF fill before a marker), skipped
    # before the first scan
    extraneous: int = 0
    # markers before the first scan (SOI, RSTn, TEM and stuffed zeros too); MAX_SEGMENTS + 1: more,
    # and the walk stopped there (what follows was not read)
    segments: int = 0
    exif_segments: int = 0  # APP1 segments starting Exif\0\0 (the orientation is read from the first)
    # bytes of the SOF and DQT segments: Pillow's parser reads them a value at a time, whatever
    # the frame's component count (0.5 s for 100 SOF segments of 64 KiB)
    table_bytes: int = 0

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
    """What the markers before the first scan declare; a few us, at most `MAX_SEGMENTS` markers.
    Never raises."""
    n = len(data)
    i = 2  # after SOI
    orientation, progressive, extraneous, segments, exif_segments, table_bytes = 1, False, 0, 0, 0, 0
    width, height, frame = 0, 0, b""
    while i < n:
        if data[i] != 0xFF:  # extraneous bytes between segments: libjpeg skips them
            found = data.find(b"\xff", i)
            extraneous += (n if found < 0 else found) - i
            if found < 0:
                break
            i = found
        end = _FILL.match(data, i).end()  # FF and its fill bytes
        extraneous += end - i - 1
        i = end
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no header after this
            break
        segments += 1
        if segments > MAX_SEGMENTS:
            break
        if marker == 0x00 or marker in _STANDALONE:  # a stuffed zero, SOI, RSTn, TEM
            continue
        if i + 2 > n:
            break
        length = int.from_bytes(data[i:i + 2], "big")
        if length < 2:
            break
        if marker == 0xE1 and length >= 8 and data[i + 2:i + 8] == b"Exif\x00\x00":
            exif_segments += 1
            if exif_segments == 1:  # Pillow reads the first one's directory (it appends the others)
                orientation = _tiff_orientation(memoryview(data)[i + 8:i + length])
        if marker in _SOF or marker == 0xDB:
            table_bytes += length
        if marker in _SOF and len(body := data[i + 2:i + length]) >= 6:
            progressive = progressive or marker in _PROGRESSIVE_SOF
            h, w = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            if w * h >= width * height:
                width, height, frame = w, h, body
        i += length
    sampling = tuple((frame[7 + 3 * k] >> 4, frame[7 + 3 * k] & 0x0F)
                     for k in range(frame[5]) if 8 + 3 * k <= len(frame)) if frame else ()
    return JpegHeader(orientation, progressive, width, height, sampling, extraneous, segments, exif_segments,
                      table_bytes)


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
