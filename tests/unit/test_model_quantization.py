"""INT8 (u8s8 QDQ) against FP32 on real photos, and the photo sets it is calibrated / judged on.

The photos come from pinned Debian packages (``triton_models.photos``); the stack's setup fetches
them (``build_repository`` needs the calibration set), and this module fetches them too if
missing. Nothing here is skipped.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from streaming.contract import load_labels
from streaming.stack.layout import StackLayout
from streaming.stack.samples import ensure_samples, sample_folders
from triton_models import evaluate, photos, qt_rcc
from triton_models.hand_labels import HAND_LABELS
from triton_models.preprocess import center_crop_box
from triton_models.variants import Variant


@pytest.fixture(scope="module")
def eval_set(store) -> list[photos.Photo]:
    samples_dir = StackLayout.from_env().samples_dir
    ensure_samples(samples_dir)
    return photos.eval_photos(store.photos_dir, sample_folders(samples_dir))


@pytest.fixture(scope="module")
def calibration_set(store) -> list[photos.Photo]:
    return photos.calibration_photos(store.photos_dir)


def _thumb(path: Path) -> np.ndarray:
    """8x8 grey thumbnail of the centre crop: equal for the same photo at any size or encoding."""
    with Image.open(path) as img:
        img.draft("L", (128, 128))
        img = img.convert("L")
        img = img.crop(center_crop_box(img.width, img.height)).resize((8, 8), Image.Resampling.BOX)
        return np.asarray(img, dtype=np.float32)


def test_photo_sets_are_real_disjoint_and_labelled(eval_set, calibration_set):
    assert len(calibration_set) == 113 and len(eval_set) == 138
    eval_ids = [p.id for p in eval_set]
    assert len(set(eval_ids)) == len(eval_ids)
    assert not {p.path.resolve() for p in eval_set} & {p.path.resolve() for p in calibration_set}
    cal = np.stack([_thumb(p.path) for p in calibration_set]).reshape(len(calibration_set), -1)
    for photo in eval_set:  # no calibration photo is an evaluation photo in another size/encoding
        diff = np.abs(cal - _thumb(photo.path).reshape(1, -1)).mean(axis=1)
        assert diff.min() > 4.0, f"{photo.id} looks like {calibration_set[int(diff.argmin())].id}"
    labels = set(load_labels())
    assert set(HAND_LABELS) <= set(eval_ids)
    assert all(set(v) <= labels for v in HAND_LABELS.values())
    assert sum(1 for p in eval_set if p.labels) == len(HAND_LABELS) >= 40
    for photo in eval_set + calibration_set:  # photos, not icons (GCompris' calibration photos are 320 wide)
        with Image.open(photo.path) as img:
            assert min(img.size) >= (200 if photo in eval_set else 110) and max(img.size) >= 320, photo.id


@pytest.fixture(scope="module")
def lite0_onnx(store) -> dict[str, Path]:
    return {p: store.ensure("lite0", p) for p in ("fp32", "int8")}


def test_int8_graph_takes_pixels_as_its_quantized_input(lite0_onnx):
    model = onnx.load(str(lite0_onnx["int8"]))
    first = model.graph.node[0]
    assert (first.op_type, list(first.input)) == ("Transpose", ["IMAGE"])
    ops = [n.op_type for n in model.graph.node]
    assert "Cast" not in ops and ops[1] == "DequantizeLinear" and ops[-2:] == ["Gemm", "Softmax"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["export_variant"] == "lite0/fp32" and props["imgstream_fingerprint"] in lite0_onnx["int8"].name


def test_int8_keeps_fp32_top1_on_real_photos(eval_set, lite0_onnx):
    images = evaluate.load_images(eval_set, 224)
    fp32 = evaluate.predict(lite0_onnx["fp32"], images)
    int8 = evaluate.predict(lite0_onnx["int8"], images)
    result = evaluate.compare(Variant("lite0", "int8"), int8, fp32, eval_set, load_labels())
    assert result.confident >= 80
    assert result.agree_confident >= evaluate.TARGET_CONFIDENT_AGREEMENT, result.disagreements
    assert result.fp32_top1_in_top5 == 1.0
    assert result.top1_acc >= 0.8 and result.top5_acc >= 0.95  # hand labels, 49 photos
    assert not evaluate.accuracy_failures([result])
    np.testing.assert_allclose(int8.sum(axis=1), 1.0, atol=1e-4)


def _rcc(files: dict[str, bytes], compress: set[str]) -> bytes:
    """A version-3 Qt resource file holding files in one folder ``img/`` (qtbase rcc layout)."""
    names = b""
    name_off = {}
    for name in ["img", *files]:
        name_off[name] = len(names)
        names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
    data, data_off = b"", {}
    for name, blob in files.items():
        payload = struct.pack(">I", len(blob)) + zlib.compress(blob) if name in compress else blob
        data_off[name] = len(data)
        data += struct.pack(">I", len(payload)) + payload
    node = lambda *f: struct.pack(">IH", *f[:2]) + struct.pack(">II", *f[2:]) + b"\0" * 8  # noqa: E731
    tree = node(0, 2, 1, 1) + node(name_off["img"], 2, len(files), 2)
    for name in files:
        tree += struct.pack(">IHHHI", name_off[name], 1 if name in compress else 0, 0, 0, data_off[name]) + b"\0" * 8
    header = 24
    return (b"qres" + struct.pack(">IIIII", 3, header, header + len(tree), header + len(tree) + len(data), 0)
            + tree + data + names)


def test_qt_rcc_reader(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(png, "PNG")
    blob = _rcc({"a.png": png.getvalue(), "b.txt": b"hello" * 50}, compress={"b.txt"})
    assert dict(qt_rcc.iter_files(blob)) == {"img/a.png": png.getvalue(), "img/b.txt": b"hello" * 50}
    (tmp_path / "x.rcc").write_bytes(blob)
    written = qt_rcc.extract(tmp_path / "x.rcc", tmp_path, suffixes=(".png",))
    assert [p.name for p in written] == ["a.png"] and Image.open(written[0]).size == (4, 4)
    with pytest.raises(qt_rcc.RccError):
        list(qt_rcc.iter_files(b"not an rcc file"))
