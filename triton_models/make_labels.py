"""Regenerate ``labels/imagenet_labels.txt`` from the timm wheel (one-time, offline); the list is
read with ``streaming.contract.load_labels``.

The 1000 ImageNet-1k classes in the standard index order (sorted WordNet
synset ids, the order every ImageNet-1k classifier including EfficientNet-Lite
uses), each named by its first WordNet lemma ("ladybug", "tabby", "espresso").
Two first lemmas collide ("crane" the bird and the machine, "maillot" twice),
so those four get explicit names below: a label must identify its class.

    pip download --no-deps timm==1.0.31 -d /tmp/timm
    python -m triton_models.make_labels /tmp/timm/timm-1.0.31-py3-none-any.whl

Needs nothing but the wheel file (a zip); timm itself is never installed.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from streaming.contract import LABELS_PATH, NUM_CLASSES

SYNSETS = "timm/data/_info/imagenet_synsets.txt"
LEMMAS = "timm/data/_info/imagenet_synset_to_lemma.txt"
OVERRIDES = {
    "n02012849": "crane (bird)",
    "n03126707": "crane (machine)",
    "n03710637": "maillot",
    "n03710721": "tank suit",
}


def labels_from_wheel(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        synsets = zf.read(SYNSETS).decode().split()
        lemma_lines = zf.read(LEMMAS).decode().splitlines()
    lemmas = dict(line.split("\t", 1) for line in lemma_lines if line.strip())
    labels = [OVERRIDES.get(s) or lemmas[s].split(", ")[0].strip() for s in synsets]
    if len(labels) != NUM_CLASSES or synsets != sorted(synsets):
        raise ValueError("unexpected synset list in the wheel")
    if len(set(labels)) != len(labels):
        raise ValueError("duplicate labels; extend OVERRIDES")
    return labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write labels/imagenet_labels.txt from a timm wheel")
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--out", type=Path, default=LABELS_PATH)
    args = ap.parse_args(argv)
    labels = labels_from_wheel(args.wheel)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(labels) + "\n", encoding="utf-8")
    print(f"wrote {len(labels)} labels to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
