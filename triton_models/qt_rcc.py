"""Read files out of a Qt binary resource file (``.rcc``), the way GCompris ships its photos.

Format (qtbase ``src/corelib/io/qresource.cpp``, versions 1-3): a ``qres`` header with the
offsets of the tree, the data and the names; tree nodes of 14 bytes (22 from version 2,
which adds a modification time); a directory node holds its child count and first child
index, a file node the offset of its data (a big-endian size, then the bytes, zlib with a
4-byte length prefix when flag 1 is set, zstd when flag 4 is set). Names are UTF-16BE.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Iterator

MAGIC = b"qres"
FLAG_COMPRESSED = 0x1
FLAG_DIRECTORY = 0x2
FLAG_COMPRESSED_ZSTD = 0x4


class RccError(ValueError):
    """The file is not a Qt resource file this reader understands."""


def iter_files(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Every file in the resource as ``(path, bytes)``; paths use ``/`` and have no leading slash."""
    if data[:4] != MAGIC:
        raise RccError("not a Qt resource file (no 'qres' magic)")
    version, tree, payload, names = struct.unpack(">4I", data[4:20])
    if version not in (1, 2, 3):
        raise RccError(f"unsupported rcc version {version}")
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset:names + offset + 2])
        start = names + offset + 6  # u16 length, u32 hash
        return data[start:start + 2 * length].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        node = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[node:node + 6])
        name = name_at(name_offset) if index else ""
        if flags & FLAG_DIRECTORY:
            count, first = struct.unpack(">II", data[node + 6:node + 14])
            child_prefix = f"{prefix}{name}/" if index else ""
            stack.extend((child, child_prefix) for child in reversed(range(first, first + count)))
            continue
        (offset,) = struct.unpack(">I", data[node + 10:node + 14])
        start = payload + offset
        (size,) = struct.unpack(">I", data[start:start + 4])
        blob = data[start + 4:start + 4 + size]
        if flags & FLAG_COMPRESSED_ZSTD:
            raise RccError(f"{prefix}{name}: zstd-compressed entries are not supported")
        if flags & FLAG_COMPRESSED:
            blob = zlib.decompress(blob[4:])
        yield prefix + name, blob


def extract(rcc_path: Path, dest: Path, *, suffixes: tuple[str, ...], include: tuple[str, ...] = ()) -> list[Path]:
    """Write the files whose names end with ``suffixes`` (and whose path contains one of
    ``include``, when given) into ``dest`` under their base names; returns the written paths."""
    written = []
    for path, blob in iter_files(Path(rcc_path).read_bytes()):
        if not path.lower().endswith(suffixes):
            continue
        if include and not any(part in path for part in include):
            continue
        out = dest / path.rsplit("/", 1)[-1]
        if out in written:
            raise RccError(f"{rcc_path}: two entries named {out.name}")
        out.write_bytes(blob)
        written.append(out)
    return written
