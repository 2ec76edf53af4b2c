"""The end-to-end benchmark's workloads: the photo sets a run measures.

* `large`: the mate-backgrounds JPEGs as published (1.3-4.9 MP, ~0.6 MB) and the 12 MP mosaic
  (`e2e.e2e_photos`);
* `small`: ImageNet-sized photos made from the same samples (`photos.small_photos`);
* a user's set, `--photos DIR` (image files under a folder) or `--photos s3://bucket/prefix/`
  (objects under a prefix on the stack's S3 endpoint): at most `max_files`, in name order, each
  at most `max_object_bytes`; what is skipped (too large, not an image) is listed, not fatal.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Iterable

from streaming.bench.photos import BenchPhoto

BUILTIN = ("large", "small")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MAX_FILES = 200
MAX_OBJECT_BYTES = 32 * 1024 * 1024  # PipelineConfig's default max_object_bytes


@dataclass(frozen=True)
class PhotoSource:
    """What `--photos` names: a built-in workload, a folder, or an S3 prefix."""

    kind: str  # "builtin", "folder" or "s3"
    name: str  # the workload's name in the report: "large", "small", the folder's name, "s3"
    location: str = ""  # the folder, or the bucket for "s3"
    prefix: str = ""  # the key prefix for "s3"


@dataclass(frozen=True)
class Workload:
    name: str
    photos: tuple[BenchPhoto, ...]
    source: str  # where the photos came from, for the report
    skipped: tuple[str, ...] = ()  # "name: reason"

    def summary(self) -> dict[str, Any]:
        sizes = [len(p.data) for p in self.photos]
        pixels = [p.megapixels for p in self.photos]
        return {"name": self.name, "source": self.source, "count": len(self.photos),
                "mean_bytes": round(sum(sizes) / len(sizes)) if sizes else 0,
                "mean_megapixels": round(sum(pixels) / len(pixels), 3) if pixels else 0.0,
                "min_megapixels": round(min(pixels), 3) if pixels else 0.0,
                "max_megapixels": round(max(pixels), 3) if pixels else 0.0,
                "skipped": list(self.skipped)}


def parse_source(value: str) -> PhotoSource:
    """`large`, `small`, `s3://bucket[/prefix]` or an existing folder; ValueError otherwise."""
    value = value.strip()
    if value in BUILTIN:
        return PhotoSource("builtin", value)
    if value.startswith("s3://"):
        bucket, _, prefix = value[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"--photos {value!r}: no bucket (s3://bucket/prefix/)")
        return PhotoSource("s3", "s3", bucket, prefix)
    if "://" in value:
        raise ValueError(f"--photos {value!r}: only s3:// URIs and folders are supported")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--photos {value!r}: not a folder, s3:// prefix, or one of {', '.join(BUILTIN)}")
    return PhotoSource("folder", folder.resolve().name or "photos", str(folder.resolve()))


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def collect(entries: Iterable[tuple[str, int]], read: Callable[[str], bytes], *, max_files: int = MAX_FILES,
            max_object_bytes: int = MAX_OBJECT_BYTES) -> tuple[list[BenchPhoto], list[str]]:
    """Photos from `(name, size)` entries, in name order: at most `max_files` readable images,
    each at most `max_object_bytes`; and what was skipped, with why."""
    from PIL import Image

    if max_files < 1 or max_object_bytes < 1:
        raise ValueError("max_files and max_object_bytes must be positive")
    photos: list[BenchPhoto] = []
    skipped: list[str] = []
    for name, size in sorted(entries):
        if len(photos) >= max_files:
            skipped.append(f"{name}: over the {max_files}-file limit")
            continue
        if not is_image_name(name):
            skipped.append(f"{name}: not an image file name")
            continue
        if size > max_object_bytes:
            skipped.append(f"{name}: {size} bytes > {max_object_bytes}")
            continue
        data = read(name)
        try:
            with Image.open(BytesIO(data)) as image:
                width, height = image.size
        except Exception as exc:  # any reason Pillow refuses it: listed, not fatal
            skipped.append(f"{name}: {type(exc).__name__}")
            continue
        unique = re.sub(r"[^A-Za-z0-9._-]+", "_", name)  # a safe S3 key and URI path
        if any(p.name == unique for p in photos):
            skipped.append(f"{name}: same key as another photo once made safe ({unique})")
            continue
        photos.append(BenchPhoto(unique, f"{width * height / 1e6:.1f}MP", data, width, height))
    return photos, skipped


def folder_workload(source: PhotoSource, *, max_files: int = MAX_FILES,
                    max_object_bytes: int = MAX_OBJECT_BYTES) -> Workload:
    root = Path(source.location)
    files = {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}
    photos, skipped = collect(((name, p.stat().st_size) for name, p in files.items()),
                              lambda name: files[name].read_bytes(), max_files=max_files,
                              max_object_bytes=max_object_bytes)
    return Workload(source.name, tuple(photos), source.location, tuple(skipped))


def s3_workload(source: PhotoSource, client: Any, *, max_files: int = MAX_FILES,
                max_object_bytes: int = MAX_OBJECT_BYTES) -> Workload:
    """Objects under the prefix (listed up to 10x `max_files` keys), read with `client` (boto3)."""
    entries: list[tuple[str, int]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source.location, Prefix=source.prefix):
        entries += [(item["Key"], int(item["Size"])) for item in page.get("Contents", [])]
        if len(entries) >= 10 * max_files:
            break

    def read(key: str) -> bytes:
        return client.get_object(Bucket=source.location, Key=key)["Body"].read(max_object_bytes + 1)

    photos, skipped = collect(entries, read, max_files=max_files, max_object_bytes=max_object_bytes)
    return Workload(source.name, tuple(photos), f"s3://{source.location}/{source.prefix}", tuple(skipped))


def builtin_workload(name: str, samples_dir: Path, *, smoke: bool = False) -> Workload:
    from streaming.bench.e2e import e2e_photos
    from streaming.bench.photos import small_photos

    if name == "large":
        photos = e2e_photos(samples_dir, smoke=smoke)
        return Workload("large", tuple(photos), "mate-backgrounds as published + the 12 MP mosaic")
    photos = small_photos(samples_dir)
    photos = photos[::5] if smoke else photos  # 6 of the 30, both kinds of framing
    return Workload("small", tuple(photos), "the samples at short side 375, JPEG q90")


def load_workloads(values: list[str], samples_dir: Path, *, smoke: bool = False, s3_client: Callable[[], Any] | None = None,
                   max_files: int = MAX_FILES, max_object_bytes: int = MAX_OBJECT_BYTES) -> list[Workload]:
    """The workloads `--photos` names, in order (none: `large` then `small`); ValueError on a bad
    value or a set with no usable photo. `s3_client()` makes the boto3 client for s3:// sources."""
    workloads = []
    for source in [parse_source(v) for v in values or BUILTIN]:
        if source.kind == "builtin":
            workload = builtin_workload(source.name, samples_dir, smoke=smoke)
        elif source.kind == "folder":
            workload = folder_workload(source, max_files=max_files, max_object_bytes=max_object_bytes)
        else:
            if s3_client is None:
                raise ValueError("an s3:// workload needs an S3 client")
            workload = s3_workload(source, s3_client(), max_files=max_files, max_object_bytes=max_object_bytes)
        if not workload.photos:
            raise ValueError(f"--photos {workload.source}: no usable photo ({len(workload.skipped)} skipped: "
                             f"{'; '.join(workload.skipped[:3])})")
        workloads.append(workload)
    names = [w.name for w in workloads]
    if len(set(names)) != len(names):
        raise ValueError(f"--photos: two workloads named alike ({', '.join(names)})")
    return workloads
