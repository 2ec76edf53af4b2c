"""What a TIFF's first image file directory (IFD0) declares, read before Pillow opens the file.

Pillow's TIFF plugin builds one Python object per strip or tile offset while it opens the
file, before any size is known to the caller: a 64x64 image declaring 4,000,000 strips took
6 s of CPU and the decoder process's whole memory cap in `Image.open`. And libtiff allocates one
tile's buffer whatever the image's size: a 16x16 image in one 8192x8192 tile held 200 MiB. So
the guards (`decode._check_tiff`) read IFD0 first: the image's size, the strip or tile counts
and the tile size. Only classic TIFF (`II*\\0`, `MM\\0*`) is read; BigTIFF is not decoded.
"""
from __future__ import annotations

from dataclasses import dataclass

CLASSIC = {b"II*\x00": "little", b"MM\x00*": "big"}
BIG = (b"II+\x00", b"MM\x00+")
MAX_ENTRIES = 1024  # IFD0 entries read; a real image has a few dozen
# bytes per value of each TIFF field type (BYTE ASCII SHORT LONG RATIONAL SBYTE UNDEFINED SSHORT
# SLONG SRATIONAL FLOAT DOUBLE IFD)
_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
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


def tiff_layout(data: bytes) -> TiffLayout | None:
    """IFD0's layout fields, or None when `data` is not a classic TIFF. Never raises; what it
    cannot read is left at its default (Pillow then judges the file)."""
    order = CLASSIC.get(data[:4])
    if order is None:
        return None

    def number(at: int, width: int) -> int:
        return int.from_bytes(data[at:at + width], order) if at + width <= len(data) else 0

    ifd = number(4, 4)
    found: dict[str, int] = {}
    for k in range(min(number(ifd, 2), MAX_ENTRIES)):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(data):
            break
        name = _TAGS.get(number(entry, 2))
        width = _TYPE_BYTES.get(number(entry + 2, 2), 0)
        count = number(entry + 4, 4)
        if name is None or name in found:
            continue
        if name in ("strips", "tiles"):
            found[name] = count
        elif width in (1, 2, 4) and count >= 1:  # the first value: in the entry when it fits, else at its offset
            at = entry + 8 if width * count <= 4 else number(entry + 8, 4)
            found[name] = number(at, width)
    return TiffLayout(**found)
