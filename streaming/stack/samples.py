"""Sample photos: real JPEGs (and a few PNGs) that ship in Debian packages.

Fetched with `apt-get download` + `dpkg-deb -x` at pinned versions; each package's
copyright file (its licence) is kept beside its folder as `<package>.COPYRIGHT`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SamplePackage:
    name: str
    version: str
    folder: str  # inside the package
    files: tuple[str, ...]  # empty: every *.jpg in folder


PACKAGES = (
    SamplePackage("mate-backgrounds", "1.26.0-1", "usr/share/backgrounds/mate/nature", ()),
    SamplePackage("python3-skimage", "0.19.3-8", "usr/lib/python3/dist-packages/skimage/data",
                  ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png",
                   "hubble_deep_field.jpg")),
)


def sample_folders(dest: Path) -> list[Path]:
    """The folder of each package under `dest` (`dest/<package>`), in `PACKAGES` order."""
    return [dest / pkg.name for pkg in PACKAGES]


def ensure_samples(dest: Path) -> list[Path]:
    """Download and unpack the sample photos into dest/<package>/ unless already there."""
    photos: list[Path] = []
    for pkg in PACKAGES:
        target = dest / pkg.name
        stamp = dest / f"{pkg.name}.complete"
        wanted = f"{pkg.name}={pkg.version}"
        if not stamp.exists() or stamp.read_text().strip() != wanted:
            _unpack(pkg, target)
            stamp.write_text(wanted + "\n")
        photos += sorted(target.iterdir())
    return photos


def _unpack(pkg: SamplePackage, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt's _apt user downloads into it
        subprocess.run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        deb = next(Path(tmp).glob("*.deb"))
        root = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        folder = root / pkg.folder
        names = pkg.files or tuple(sorted(p.name for p in folder.glob("*.jpg")))
        for name in names:
            shutil.copy2(folder / name, target / name)
        shutil.copy2(root / "usr/share/doc" / pkg.name / "copyright", target.parent / f"{pkg.name}.COPYRIGHT")
