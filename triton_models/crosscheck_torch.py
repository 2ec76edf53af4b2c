"""OPTIONAL one-time cross-check of the torch-free ONNX export against PyTorch.

NOT part of the project's dependencies and never imported by it.  Run it with
an interpreter that has torch + ``efficientnet_lite_pytorch`` + onnxruntime:

    /work/torchref-venv/bin/python triton_models/crosscheck_torch.py [--arch lite1] PHOTO [PHOTO ...]

It checks that (1) ``pth_reader`` returns exactly what ``torch.load`` returns,
for the legacy file and for a zip-format re-save of it, and (2) the ONNX
model's probabilities match ``EfficientNet.from_name('efficientnet-liteN')``
with the same weights in eval mode, on the same (x - 127) / 128 input.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from efficientnet_lite_pytorch import EfficientNet  # noqa: E402

from streaming.contract import INPUT_NAME, PIXEL_MEAN, PIXEL_STD, load_labels  # noqa: E402
from triton_models.export_onnx import ARCHS, build_model, default_weights_path  # noqa: E402
from triton_models.preprocess import load_image  # noqa: E402
from triton_models.pth_reader import load_state_dict  # noqa: E402


def check_reader(weights: Path) -> dict:
    ref = torch.load(weights, map_location="cpu", weights_only=True)
    for label, ours in (("legacy", load_state_dict(weights)), ("zip", None)):
        if ours is None:
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "resaved.pth"
                torch.save(ref, p)  # zip format
                ours = load_state_dict(p)
        assert list(ours) == list(ref), f"{label}: key order differs"
        for k, v in ref.items():
            assert np.array_equal(ours[k], v.numpy()), f"{label}: {k} differs"
        print(f"pth_reader ({label} format): {len(ref)} tensors identical to torch.load")
    return ref


def main(argv: list[str]) -> int:
    arch = "lite0"
    if argv[:1] == ["--arch"]:
        arch, argv = argv[1], argv[2:]
    photos = argv
    size = ARCHS[arch].image_size
    torch.set_num_threads(2)
    weights = default_weights_path(arch)
    state = check_reader(weights)

    model = EfficientNet.from_name(f"efficientnet-{arch}")
    model.load_state_dict(state)
    model.eval()

    onnx_model = build_model(load_state_dict(weights), arch=arch)
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])

    images = np.stack([load_image(p, size) for p in photos]) if photos else np.zeros((0, size, size, 3), np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    batch = np.concatenate([images, noise])
    names = [Path(p).name for p in photos] + [f"noise{i}" for i in range(len(noise))]

    x = (torch.from_numpy(batch).float() - PIXEL_MEAN) / PIXEL_STD
    with torch.no_grad():
        p_torch = torch.softmax(model(x.permute(0, 3, 1, 2).contiguous()), dim=1).numpy()
    p_onnx = sess.run(None, {INPUT_NAME: batch})[0]

    labels = load_labels()
    diff = np.abs(p_torch - p_onnx)
    agree = p_torch.argmax(1) == p_onnx.argmax(1)
    for n, pt, po, d in zip(names, p_torch, p_onnx, diff):
        print(f"{n:24s} torch {labels[pt.argmax()]:>20s} {pt.max():.4f} | "
              f"onnx {labels[po.argmax()]:>20s} {po.max():.4f} | max|dp| {d.max():.2e}")
    print(f"{arch} images: {len(batch)}  max abs diff of probabilities: {diff.max():.3e}  "
          f"top-1 agreement: {agree.sum()}/{len(agree)}")
    return 0 if agree.all() and diff.max() < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
