"""Real photos for quantization calibration and evaluation, from Debian 12 packages (pinned).

Two disjoint sets, never mixed:

* **calibration** (113 photos): GCompris' ``categorization`` activity: fish, tools,
  renewable-energy sites and household objects (its monuments are left out, since
  ``explore_monuments`` shows some of the same buildings).
* **evaluation** (138 photos): the sample folders the caller passes (the local stack's sample
  photos, ``mate-backgrounds`` and ``python3-skimage``, ``streaming/stack/samples.py``), the
  photographic wallpapers of
  ``lomiri-wallpapers-16.04`` / ``-20.04``, and GCompris' animal and monument photos
  (``erase``, ``explore_farm_animals``, ``explore_world_animals``, ``explore_monuments``).

GCompris keeps its images inside Qt resource files; :mod:`triton_models.qt_rcc` reads them.
Packages are fetched with ``apt-get download`` + ``dpkg-deb -x`` (like the samples); each
package's copyright file is kept as ``<root>/<package>.COPYRIGHT``. A stamp per source makes
:func:`ensure_photos` a no-op once done.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from triton_models import qt_rcc
from triton_models.hand_labels import HAND_LABELS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
GCOMPRIS = ("gcompris-qt-data", "3.1-2")
LOMIRI_16 = ("lomiri-wallpapers-16.04", "20.04.0-2")
LOMIRI_20 = ("lomiri-wallpapers-20.04", "20.04.0-2")
RCC_DIR = "usr/share/gcompris-qt/rcc"


@dataclass(frozen=True)
class PhotoSource:
    """Photos taken from one Debian package: files of a folder, or images inside a Qt ``.rcc``."""

    name: str  # folder under the photo root, and the prefix of each photo's id
    package: str
    version: str
    member: str  # a folder inside the package, or a .rcc file
    include: tuple[str, ...] = ()  # file names (folder) or path fragments (rcc); empty: every image
    role: str = "eval"  # "eval" or "calibration"

    @property
    def stamp(self) -> str:
        spec = json.dumps([self.package, self.version, self.member, list(self.include)])
        return hashlib.sha256(spec.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Photo:
    id: str  # "<source>/<file name>", e.g. "gcompris-erase/penguin.webp"
    path: Path
    labels: frozenset[str] = frozenset()  # acceptable ImageNet labels, hand-assigned; empty: unlabelled


SOURCES = (
    PhotoSource("gcompris-categorization", *GCOMPRIS, f"{RCC_DIR}/categorization.rcc",
                ("images/fishes/", "images/others/", "images/renewable/", "images/tools/"), role="calibration"),
    PhotoSource("gcompris-erase", *GCOMPRIS, f"{RCC_DIR}/erase.rcc"),
    PhotoSource("gcompris-farm-animals", *GCOMPRIS, f"{RCC_DIR}/explore_farm_animals.rcc"),
    PhotoSource("gcompris-world-animals", *GCOMPRIS, f"{RCC_DIR}/explore_world_animals.rcc"),
    PhotoSource("gcompris-monuments", *GCOMPRIS, f"{RCC_DIR}/explore_monuments.rcc"),
    PhotoSource("lomiri-wallpapers-16.04", *LOMIRI_16, "usr/share/backgrounds", (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg", "life_by_Aitzol_Berasategi.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
        "sunset_by_Aitzol_Berasategi.jpg")),  # the package's other images are renders, not photos
    PhotoSource("lomiri-wallpapers-20.04", *LOMIRI_20, "usr/share/backgrounds",
                ("Infinite-Sea_by_Aury88.jpg", "Kleiber_by_Lukas_Baubkus.jpg")),
)


def ensure_photos(root: Path) -> None:
    """Download and unpack every source unless already there."""
    root.mkdir(parents=True, exist_ok=True)
    todo = [s for s in SOURCES if _read(root / f"{s.name}.complete") != s.stamp]
    for package, version in sorted({(s.package, s.version) for s in todo}):
        with tempfile.TemporaryDirectory() as tmp:
            tree = _unpack_deb(package, version, Path(tmp))
            shutil.copy2(tree / "usr/share/doc" / package / "copyright", root / f"{package}.COPYRIGHT")
            for source in (s for s in todo if s.package == package):
                _extract(source, tree, root / source.name)
                (root / f"{source.name}.complete").write_text(source.stamp)


def calibration_photos(root: Path) -> list[Photo]:
    return _collect(root, [s for s in SOURCES if s.role == "calibration"])


def eval_photos(root: Path, sample_folders: Sequence[Path] = ()) -> list[Photo]:
    """The evaluation set: the photos of `sample_folders` (ids "<folder name>/<file name>"), then
    the other eval sources."""
    photos = []
    for folder in sample_folders:
        photos += _photos_in(Path(folder), Path(folder).name)
    return photos + _collect(root, [s for s in SOURCES if s.role == "eval"])


def _collect(root: Path, sources: list[PhotoSource]) -> list[Photo]:
    photos = []
    for source in sources:
        if _read(root / f"{source.name}.complete") != source.stamp:
            raise FileNotFoundError(f"photo source {source.name} is not unpacked under {root}; "
                                    "run `imgstream models build` (or triton_models.photos.ensure_photos)")
        photos += _photos_in(root / source.name, source.name)
    return photos


def _photos_in(folder: Path, prefix: str) -> list[Photo]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [Photo(f"{prefix}/{p.name}", p, frozenset(HAND_LABELS.get(f"{prefix}/{p.name}", ()))) for p in files]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _unpack_deb(package: str, version: str, tmp: Path) -> Path:
    os.chmod(tmp, 0o755)  # apt's _apt user downloads into it
    subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=tmp, check=True,
                   stdout=subprocess.DEVNULL)
    deb = next(tmp.glob("*.deb"))
    tree = tmp / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return tree


def _extract(source: PhotoSource, tree: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    member = tree / source.member
    if member.suffix == ".rcc":
        written = qt_rcc.extract(member, dest, suffixes=IMAGE_SUFFIXES, include=source.include)
    else:
        names = source.include or tuple(p.name for p in member.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        written = [Path(shutil.copy2(member / name, dest / name)) for name in names]
    if not written:
        raise FileNotFoundError(f"{source.package}: no images under {source.member}")
