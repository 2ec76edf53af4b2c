"""The photos the preprocessing benchmark decodes: real JPEGs, grouped by size and coding.

* "1080p": Storm.jpg (1920x1280) and RainDrops.jpg (1920x1200) from Debian's
  `mate-backgrounds`, as published (baseline, 4:2:0).
* "12MP": no Debian package ships a ~12 MP photograph (the large wallpapers of
  plasma-workspace-wallpapers, ukui-wallpapers and gnome-backgrounds are renders), so one is
  assembled from real ones: the centre 2000x1500 of four 2560x1600 mate-backgrounds photos
  tiled 2x2 into 4000x3000, at native resolution (no upscaling, so the detail per pixel, which
  drives entropy-decoding cost, is a real photo's), encoded by Pillow at quality 92, 4:2:0.
* progressive twins: the same pixels re-encoded progressive with the same quantisation tables
  (Pillow `quality="keep"`) for 1080p, the same settings for 12MP.

`tiny_photos` makes small synthetic stand-ins with the same group names, for smoke tests.

`small_photos` is the end-to-end benchmark's "small" workload, ImageNet-sized: every sample
photo (the 12 mate-backgrounds and the 6 scikit-image photos) scaled to a short side of 375
(aspect kept: 600x375 for a 16:10 wallpaper, 500x375 for 4:3), plus a 4:3 detail of each
mate photo (its centre, half the width, scaled to 500x375), JPEG quality 90, 4:2:0: 30
distinct photos of 0.14-0.23 MP and 17-74 KB (mean 38 KB). Same sample files and Pillow, same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

GROUPS = ("1080p baseline", "1080p progressive", "12MP baseline", "12MP progressive")
HD_SOURCES = ("Storm.jpg", "RainDrops.jpg")
MOSAIC_SOURCES = ("LadyBird.jpg", "TwoWings.jpg", "Garden.jpg", "YellowFlower.jpg")
MOSAIC_TILE = (2000, 1500)
MOSAIC_QUALITY = 92
SMALL_SHORT_SIDE = 375
SMALL_DETAIL = (500, 375)
SMALL_QUALITY = 90


@dataclass(frozen=True)
class BenchPhoto:
    name: str  # unique, used as the file name and the S3 key
    group: str
    data: bytes
    width: int
    height: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def sample_photos(mate_dir: Path) -> list[BenchPhoto]:
    """The benchmark set built from the mate-backgrounds samples (see the module docstring)."""
    photos: list[BenchPhoto] = []
    for name in HD_SOURCES:
        data = (mate_dir / name).read_bytes()
        stem = Path(name).stem
        photos.append(_photo(f"{stem}-1080p-baseline.jpg", "1080p baseline", data))
        with Image.open(BytesIO(data)) as image:
            photos.append(_photo(f"{stem}-1080p-progressive.jpg", "1080p progressive",
                                 _encode(image, quality="keep", progressive=True)))
    mosaic = _mosaic([mate_dir / name for name in MOSAIC_SOURCES])
    photos.append(_photo("mosaic-12MP-baseline.jpg", "12MP baseline",
                         _encode(mosaic, quality=MOSAIC_QUALITY, subsampling=2)))
    photos.append(_photo("mosaic-12MP-progressive.jpg", "12MP progressive",
                         _encode(mosaic, quality=MOSAIC_QUALITY, subsampling=2, progressive=True)))
    return photos


def tiny_photos() -> list[BenchPhoto]:
    """Small synthetic photos under the same group names: for smoke tests, not for numbers."""
    rng = np.random.default_rng(7)
    photos = []
    for group, (width, height) in zip(GROUPS, ((480, 320), (480, 320), (800, 600), (800, 600))):
        smooth = rng.random((height // 8, width // 8, 3)) * 255
        image = Image.fromarray(smooth.astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
        data = _encode(image, quality=90, progressive="progressive" in group)
        photos.append(_photo(f"tiny-{group.replace(' ', '-')}.jpg", group, data))
    return photos


def small_photos(samples_dir: Path) -> list[BenchPhoto]:
    """The small workload (see the module docstring), sorted by name; deterministic."""
    photos = []
    for path in sorted([*samples_dir.glob("mate-backgrounds/*.jpg"), *samples_dir.glob("python3-skimage/*.*")]):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        stem = path.stem.lower()
        photos.append(_small(f"small-{stem}.jpg", _scale_short_side(image, SMALL_SHORT_SIDE)))
        if path.parent.name == "mate-backgrounds":
            photos.append(_small(f"small-{stem}-detail.jpg", _detail(image, SMALL_DETAIL)))
    return photos


def _scale_short_side(image: Image.Image, short: int) -> Image.Image:
    width, height = image.size
    scale = short / min(width, height)
    return image.resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)


def _detail(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The centre 4:3 region half as wide as the photo, scaled to `size`."""
    width, height = image.size
    crop_w = width // 2
    crop_h = crop_w * size[1] // size[0]
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.LANCZOS)


def _small(name: str, image: Image.Image) -> BenchPhoto:
    data = _encode(image, quality=SMALL_QUALITY, subsampling=2)
    return _photo(name, f"{image.width * image.height / 1e6:.2f}MP small", data)


def _mosaic(paths: list[Path]) -> Image.Image:
    tile_w, tile_h = MOSAIC_TILE
    canvas = Image.new("RGB", (2 * tile_w, 2 * tile_h))
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            width, height = image.size
            left, top = (width - tile_w) // 2, (height - tile_h) // 2
            tile = image.convert("RGB").crop((left, top, left + tile_w, top + tile_h))
        canvas.paste(tile, ((i % 2) * tile_w, (i // 2) * tile_h))
    return canvas


def _encode(image: Image.Image, **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _photo(name: str, group: str, data: bytes) -> BenchPhoto:
    with Image.open(BytesIO(data)) as image:
        width, height = image.size
    return BenchPhoto(name, group, data, width, height)
