"""What a TIFF's first image file directory (IFD0) declares, read before Pillow opens the file.

Pillow's TIFF plugin builds one Python object per strip or tile offset while it opens the
file, before any size is known to the caller: a 64x64 image declaring 4,000,000 strips took
6 s of CPU and the decoder process's whole memory cap in `Image.open`. And libtiff allocates one
tile's buffer whatever the image's size: a 16x16 image in one 8192x8192 tile held 200 MiB. So
the guards (`decode._check_tiff`) read IFD0 first: the image's size, the strip or tile counts
and the tile size. Classic TIFF (`II*\\0`, `MM\\0*`: 2-byte entry counts, 12-byte entries, 4-byte
offsets) and BigTIFF (`II+\\0`, `MM\\0+`: 8-byte counts, 20-byte entries, 8-byte offsets).
"""
from __future__ import annotations

from dataclasses import dataclass

ORDERS = {b"II*\x00": "little", b"MM\x00*": "big", b"II+\x00": "little", b"MM\x00+": "big"}
MAX_ENTRIES = 1024  # IFD0 entries read; a real image has a few dozen
# bytes per value of each TIFF field type (BYTE ASCII SHORT LONG RATIONAL SBYTE UNDEFINED SSHORT
# SLONG SRATIONAL FLOAT DOUBLE IFD, and BigTIFF's LONG8 SLONG8 IFD8)
_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
               18: 8}
_TAGS = {256: "width", 257: "height", 259: "compression", 273: "strips", 277: "samples", 322: "tile_width",
         323: "tile_length", 324: "tiles"}


@dataclass(frozen=True)
class TiffLayout:
    width: int = 0
    height: int = 0
    samples: int = 1  # per pixel
    compression: int = 1  # 6 and 7: JPEG
    strips: int = 0  # StripOffsets entries
    tiles: int = 0  # TileOffsets entries
    tile_width: int = 0
    tile_length: int = 0
    entries: int = 0  # IFD0's entry count, as declared (only the first MAX_ENTRIES are read)


def tiff_layout(data: bytes) -> TiffLayout | None:
    """IFD0's layout fields, or None when `data` is not a TIFF. Never raises; what it cannot
    read is left at its default (Pillow then judges the file). Of a field found twice, the first
    (as Pillow takes it), but the strip and tile counts are the largest: Pillow skips an entry it
    cannot read (a type it does not know, values past the end) and takes the next."""
    order = ORDERS.get(data[:4])
    if order is None:
        return None
    big = data[2:4] in (b"+\x00", b"\x00+")
    count_bytes, entry_bytes, offset_bytes = (8, 20, 8) if big else (2, 12, 4)

    def number(at: int, width: int) -> int:
        return int.from_bytes(data[at:at + width], order) if at + width <= len(data) else 0

    ifd = number(8, 8) if big else number(4, 4)
    entries = number(ifd, count_bytes)
    found: dict[str, int] = {"entries": entries}
    for k in range(min(entries, MAX_ENTRIES)):
        entry = ifd + count_bytes + entry_bytes * k
        if entry + entry_bytes > len(data):
            break
        name = _TAGS.get(number(entry, 2))
        width = _TYPE_BYTES.get(number(entry + 2, 2), 0)
        count = number(entry + 4, offset_bytes)
        if name in ("strips", "tiles"):
            found[name] = max(found.get(name, 0), count)
            continue
        if name is None or name in found:
            continue
        value = entry + 4 + offset_bytes  # the value field: the values when they fit, else their offset
        if width in (1, 2, 4, 8) and count >= 1:  # the first value
            found[name] = number(value if width * count <= offset_bytes else number(value, offset_bytes), width)
    return TiffLayout(**found)
