"""Importing a user's ONNX model (`triton_models/import_model.py`): every validation error names what is
wrong; the wrapped graph equals the float reference on real photos (RGB/BGR, NCHW/NHWC, float16);
the example lite1_torchvision, imported, agrees with the built-in efficientnet_lite1; written entries
parse, carry the contract and take versions; INT8 calibration writes a variant and a plausible report;
the CLI imports, refuses with exit 2, and lists.

Photos: the calibration set of the stack's folder (`triton_models.photos`, fetched if missing)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as pb

from streaming.contract import CONTRACT_PARAMETER, LABELS_PATH, ModelContract, Normalize, Output, Resize, lite_contract
from streaming.stack.layout import StackLayout
from triton_models import build, contract_images, model_config, photos, user_models
from triton_models.import_model import import_model
from triton_models.onnx_validate import ModelImportError, validate
from triton_models.onnx_wrap import wrap
from triton_models.preprocess import load_image

SIZE = 8


@pytest.fixture(scope="module")
def pics(store) -> list[Path]:
    return [p.path for p in photos.calibration_photos(store.photos_dir)][:24]


@pytest.fixture(scope="module")
def examples(store, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("examples")
    return {name: user_models.export_example(name, out / f"{name}.onnx", store) for name in user_models.EXAMPLES}


def _contract(*, size=SIZE, kind="classes", width=4, layout="NCHW", order="RGB", softmax=True, l2=False):
    output = Output("classes", top_k=2, num_classes=width, softmax=softmax) if kind == "classes" else \
        Output("embedding", dim=width, l2_normalize=l2)
    return ModelContract(Resize(size, "squash"), Normalize((0.0, 1.0), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), order, layout),
                         output)


def _tiny(*, layout="NCHW", in_shape=None, in_type=TensorProto.FLOAT, out_shape=("N", 4), width=4, extra_input=False,
          extra_output=False, out_rank4=False) -> onnx.ModelProto:
    """x -> (NHWC: Transpose) -> Conv 1x1 (3 -> width, channel-sensitive weights) -> GlobalAveragePool -> Flatten."""
    rng = np.random.default_rng(0)
    dtype = np.float16 if in_type == TensorProto.FLOAT16 else np.float32
    inits = [numpy_helper.from_array(rng.normal(size=(width, 3, 1, 1)).astype(dtype), "w")]
    nodes, x = [], "x"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        x = "x_nchw"
    nodes += [helper.make_node("Conv", [x, "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["p"])]
    if out_rank4:
        last = "p"
    else:
        nodes.append(helper.make_node("Flatten", ["p"], ["y"]))
        last = "y"
    in_shape = in_shape or (["N", 3, SIZE, SIZE] if layout == "NCHW" else ["N", SIZE, SIZE, 3])
    inputs = [helper.make_tensor_value_info("x", in_type, in_shape)]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1]))
    out_type = TensorProto.FLOAT16 if in_type == TensorProto.FLOAT16 else TensorProto.FLOAT
    outputs = [helper.make_tensor_value_info(last, out_type, ["N", width, 1, 1] if out_rank4 else list(out_shape))]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("c", out_type, ["N", width, SIZE, SIZE]))
    if in_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):  # an int input: cast it first
        nodes.insert(0, helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        nodes[1].input[0] = "xf"
    model = helper.make_model(helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model


@pytest.mark.parametrize("model,contract,labels,what,message", [
    (_tiny(extra_input=True), _contract(), None, "input", "2 inputs (x, mask)"),
    (_tiny(in_type=TensorProto.INT32), _contract(), None, "input", "x is int32"),
    (_tiny(in_shape=["N", 3, 16, 16]), _contract(), None, "input", "takes 16x16 images but the contract's input.size is 8"),
    (_tiny(in_shape=[1, 3, SIZE, SIZE]), _contract(), None, "input", "fixed batch size 1"),
    (_tiny(layout="NHWC"), _contract(layout="NCHW"), None, "input", "8 channels where the contract's layout NCHW"),
    (_tiny(), _contract(), ["a", "b", "c"], "labels", "the labels file has 3 lines, the model has 4 classes"),
    (_tiny(), _contract(width=5), None, "output", "the model has 4 classes, the contract's output.num_classes is 5"),
    (_tiny(), _contract(kind="embedding", width=8), None, "output", "embedding has 4 values, the contract's output.dim is 8"),
    (_tiny(out_rank4=True), _contract(), None, "output", "expected rank 2"),
    (_tiny(extra_output=True), _contract(), None, "output", "2 outputs (y, c)"),
], ids=["two-inputs", "int-input", "fixed-size", "static-batch", "layout", "labels-count", "classes", "embedding-dim",
        "output-rank", "two-outputs"])
def test_validation_names_what_is_wrong(model, contract, labels, what, message):
    with pytest.raises(ModelImportError) as err:
        validate(model, contract, labels)
    assert err.value.what == what and message in str(err.value), str(err.value)


def test_a_dynamic_spatial_size_is_fixed_by_the_contract():
    found = validate(_tiny(in_shape=["N", 3, "H", "W"]), _contract())
    assert any("dynamic" in note and "8 x 8" in note for note in found.notes)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("order", ["RGB", "BGR"])
@pytest.mark.parametrize("kind", ["classes", "embedding", "float16"])
def test_the_wrap_equals_the_float_reference_on_real_photos(pics, layout, order, kind):
    in_type = TensorProto.FLOAT16 if kind == "float16" else TensorProto.FLOAT
    model = _tiny(layout=layout, in_type=in_type)
    contract = _contract(layout=layout, order=order, kind="embedding" if kind == "embedding" else "classes",
                         l2=kind == "embedding")
    found = validate(model, contract)
    wrapped = wrap(model, contract, found)
    assert [i.name for i in wrapped.graph.input] == ["IMAGE"]
    assert [o.name for o in wrapped.graph.output] == [contract.output.tensor_name]
    check, got = contract_images.compare(model.SerializeToString(), wrapped.SerializeToString(), contract, pics[:8],
                                         found.input_name, found.input_dtype)
    assert check.passed and got.shape == (8, 4) and got.dtype == np.float64
    assert check.max_abs_diff < (5e-3 if kind == "float16" else 1e-5), check.line()
    swapped = dataclasses.replace(contract, normalize=dataclasses.replace(
        contract.normalize, channel_order="BGR" if order == "RGB" else "RGB"))
    other = contract_images.run(contract_images.session(wrap(model, swapped, found).SerializeToString()), "IMAGE",
                                np.stack([contract_images.pixels(p, contract) for p in pics[:8]]))
    assert np.abs(other - got).max() > 1e-3  # the channel order matters to this graph, so the check would see it


@pytest.fixture(scope="module")
def imported_lite1(examples, pics, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    result = import_model(examples["lite1_torchvision"], name="my_lite1",
                          contract=user_models.example_contract("lite1_torchvision"), repository=repo, photos=pics,
                          labels=LABELS_PATH, gpu_out=repo.parent / f"{repo.name}-gpu", gpus=2)
    return repo, result


def test_imported_lite1_torchvision_agrees_with_the_built_in_efficientnet_lite1(store, imported_lite1, pics):
    repo, result = imported_lite1
    assert result.check.passed and result.check.max_abs_diff < 1e-5 and result.version == 1
    contract = user_models.example_contract("lite1_torchvision")
    imported = ort.InferenceSession(str(repo / "my_lite1" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    built_in = ort.InferenceSession(str(store.ensure("lite1", "fp32")), providers=["CPUExecutionProvider"])
    ours = imported.run(None, {"IMAGE": np.stack([contract_images.pixels(p, contract) for p in pics])})[0]
    theirs = built_in.run(None, {"IMAGE": np.stack([load_image(p, 240) for p in pics])})[0]
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()
    assert np.abs(ours - theirs).max() < 1e-4


def test_written_entries_parse_carry_the_contract_and_take_versions(imported_lite1, examples, pics):
    repo, result = imported_lite1
    gpu = repo.parent / f"{repo.name}-gpu"
    contract = user_models.example_contract("lite1_torchvision")
    for folder, backend in ((repo / "my_lite1", "python"), (gpu / "my_lite1", "onnxruntime"), (gpu / "my_lite1_plan", "")):
        cfg = model_config.parse((folder / "config.pbtxt").read_text())
        assert ModelContract.from_json(cfg.parameters[CONTRACT_PARAMETER].string_value) == contract
        assert cfg.backend == backend and list(cfg.input[0].dims) == [240, 240, 3]
        assert [(o.name, list(o.dims), o.label_filename) for o in cfg.output] == [("PROBABILITIES", [1000], "labels.txt")]
        assert (folder / "labels.txt").read_bytes() == LABELS_PATH.read_bytes() and (folder / "1" / "model.onnx").exists()
    assert (repo / "my_lite1" / "1" / "model.py").read_bytes() == build.TEMPLATE.read_bytes()
    assert [g.gpus for g in model_config.parse((gpu / "my_lite1" / "config.pbtxt").read_text()).instance_group] == [[0], [1]]
    assert "--onnx=1/model.onnx" in (gpu / "my_lite1_plan" / "trtexec.args").read_text().split()
    assert not list(repo.parent.glob(f".{repo.name}.staging-*"))

    again = import_model(examples["lite1_torchvision"], name="my_lite1", contract=dataclasses.replace(
        contract, output=dataclasses.replace(contract.output, top_k=3)), repository=repo, photos=pics[:4])
    assert again.version == 2 and (repo / "my_lite1" / "2" / "model.onnx").exists()
    cfg = model_config.parse((repo / "my_lite1" / "config.pbtxt").read_text())
    assert ModelContract.from_json(cfg.parameters[CONTRACT_PARAMETER].string_value).output.top_k == 3
    with pytest.raises(ModelImportError, match="exists already"):
        import_model(examples["lite1_torchvision"], name="my_lite1", contract=contract, repository=repo, photos=pics[:4],
                     version=1)
    with pytest.raises(ModelImportError, match="belong to the built-in models"):
        import_model(examples["lite1_torchvision"], name="efficientnet_mine", contract=contract, repository=repo,
                     photos=pics[:4])


def test_calibration_writes_an_int8_entry_and_a_plausible_report(examples, pics, tmp_path):
    contract = user_models.example_contract("lite0_embedding")
    result = import_model(examples["lite0_embedding"], name="my_embedder", contract=contract, repository=tmp_path,
                          photos=pics[:8], calibrate=pics[:8])
    assert result.check.passed and result.check.max_abs_diff < 1e-5
    report = result.int8
    # 7-bit weights (reduce_range, so that AVX2 CPUs without VNNI do not saturate): 0.92 / 0.96 measured
    assert report.model == "my_embedder_int8" and report.photos == 8 and 0.9 < report.cosine_p5 <= report.cosine_mean <= 1.0
    assert report.cosine_mean > 0.94
    cfg = model_config.parse((tmp_path / "my_embedder_int8" / "config.pbtxt").read_text())
    assert [(o.name, list(o.dims), o.label_filename) for o in cfg.output] == [("EMBEDDING", [1280], "")]
    assert not (tmp_path / "my_embedder_int8" / "labels.txt").exists()
    int8 = onnx.load(str(tmp_path / "my_embedder_int8" / "1" / "model.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) > 50
    vectors = ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"IMAGE": np.stack([contract_images.pixels(p, contract) for p in pics[:2]])})[0]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # the L2 normalisation stayed float


def _across_the_batch(op: str) -> onnx.ModelProto:
    """`_tiny`, then its rows minus their mean over the batch ("mix") or only that mean ("mean"):
    what Triton would answer for a request depends on the requests batched with it."""
    model = _tiny()
    graph = model.graph
    graph.node.append(helper.make_node("ReduceMean", ["y"], ["batch_mean"], axes=[0], keepdims=1))
    if op == "mix":
        graph.node.append(helper.make_node("Sub", ["y", "batch_mean"], ["z"]))
    last = "z" if op == "mix" else "batch_mean"
    graph.output[0].name = last
    return model


@pytest.mark.parametrize("op, message", [("mix", "depends on the other photos of its batch"),
                                         ("mean", "for 16 photos")])
def test_a_model_whose_output_for_one_image_depends_on_its_batch_is_refused(pics, tmp_path, op, message):
    path = tmp_path / "model.onnx"
    onnx.save(_across_the_batch(op), str(path))
    with pytest.raises(ModelImportError) as err:
        import_model(path, name="mixer", contract=_contract(softmax=False), repository=tmp_path / "repo", photos=pics[:16])
    assert err.value.what == "output" and message in str(err.value), str(err.value)
    assert not (tmp_path / "repo").exists()
    onnx.save(_tiny(), str(path))  # the same graph without the batch mixing imports
    assert import_model(path, name="mixer", contract=_contract(softmax=False), repository=tmp_path / "repo",
                        photos=pics[:16]).check.batch_diff < 1e-5


def test_a_photo_pillow_cannot_read_and_a_model_onnxruntime_cannot_run_are_named(pics, tmp_path):
    path, bad = tmp_path / "model.onnx", tmp_path / "bad.jpg"
    onnx.save(_tiny(), str(path))
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ModelImportError) as err:
        import_model(path, name="tiny", contract=_contract(), repository=tmp_path / "repo", photos=[*pics[:3], bad])
    assert err.value.what == "photos" and "bad.jpg" in str(err.value)
    custom = _tiny()
    custom.graph.node.insert(0, helper.make_node("Foo", ["x"], ["x_foo"], domain="my.domain"))
    custom.graph.node[1].input[0] = "x_foo"
    custom.opset_import.append(helper.make_opsetid("my.domain", 1))
    onnx.save(custom, str(path))
    with pytest.raises(ModelImportError) as err:
        import_model(path, name="tiny", contract=_contract(), repository=tmp_path / "repo", photos=pics[:4])
    assert err.value.what == "model" and "onnxruntime" in str(err.value)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("text, labels", [
    ("\ufeffcat\r\ndog\r\nbird\r\nfish\r\n", ["cat", "dog", "bird", "fish"]),  # BOM and CRLF
    ("cat\ndog\nbird\ngreat white fish", ["cat", "dog", "bird", "great white fish"]),  # no final newline
    ("cat\nsia\x0bmese\ndog\nbird\n", "line 2"),  # splitlines() would have made 5 labels of it
    ("cat\ndog\u2028x\nbird\nfish\n", "line 2"),
    ("cat\ndog\n\nfish\n", "line 3"),
    ("cat\n" + "d" * 513 + "\nbird\nfish\n", "line 2"),
    ("cat\x85x\ndog\nbird\nfish\n", "line 1"),  # NEL: a C1 control that splitlines() breaks at
    # real labels: a zero-width non-joiner (Persian), a no-break and an ideographic space, a soft
    # hyphen, an emoji sequence, a tab
    ("\u0645\u06cc\u200c\u0631\u0648\ndog\u00a0house\n\u96ea\u3000\u5c71\nfi\u00adsh\tx\n\U0001f468\u200d\U0001f469\n",
     ["\u0645\u06cc\u200c\u0631\u0648", "dog\u00a0house", "\u96ea\u3000\u5c71", "fi\u00adsh\tx",
      "\U0001f468\u200d\U0001f469"]),
])
def test_labels_are_one_printable_line_each_or_refused_naming_the_line(tmp_path, text, labels):
    from triton_models.import_model import read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes(text.encode())
    if isinstance(labels, list):
        assert read_labels(path) == labels
    else:
        with pytest.raises(ModelImportError) as err:
            read_labels(path)
        assert err.value.what == "labels" and labels in str(err.value)


@pytest.mark.parametrize("option, value", [("version", 2**63), ("version", 0), ("gpus", 0), ("instances_per_gpu", 0),
                                           ("instances", 0), ("max_batch_size", 0)])
def test_import_options_out_of_range_are_refused_before_any_work(tmp_path, option, value):
    with pytest.raises(ModelImportError) as err:  # the model file does not even exist: refused before it is read
        import_model(tmp_path / "missing.onnx", name="anything", contract=_contract(), repository=tmp_path / "repo",
                     photos=[tmp_path / "missing.jpg"], **{option: value})
    assert err.value.what == option


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Layout(StackLayout):
    repository: Path

    @property
    def model_repository(self) -> Path:
        return self.repository


def test_cli_imports_and_refuses_with_exit_2(examples, store, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from streaming.cli import models as cli

    # the stack's photos, a repository of this test's, and a Triton port nothing listens on
    layout = _Layout(root=StackLayout.from_env().root, repository=tmp_path / "repository", triton_grpc_port=1)
    monkeypatch.setattr(cli.StackLayout, "from_env", classmethod(lambda cls, environ=None: layout))
    base = ["import", str(examples["lite1_torchvision"]), "--name", "cli_lite1"]
    bad = CliRunner().invoke(cli.models_app, base + ["--contract", str(user_models.contract_path("lite0_embedding"))])
    assert bad.exit_code == 2 and "contract's input.size is 224" in bad.output
    ok = CliRunner().invoke(cli.models_app, base + ["--contract", str(user_models.contract_path("lite1_torchvision")),
                                                    "--labels", str(LABELS_PATH)], catch_exceptions=False)
    assert ok.exit_code == 0 and "version 1" in ok.output and "not running" in ok.output, ok.output
    assert "max |diff|" in ok.output and (tmp_path / "repository" / "cli_lite1" / "1" / "model.onnx").exists()


def test_list_table_groups_variants_and_summarises_contracts():
    from streaming.cli.models import model_table
    from streaming.contract import lite_contract

    index = [{"name": "mine", "version": "1", "state": "UNAVAILABLE"}, {"name": "mine", "version": "2", "state": "READY"},
             {"name": "mine_int8", "version": "2", "state": "READY"}, {"name": "emb", "state": "UNAVAILABLE"}]
    embedding = _contract(size=192, kind="embedding", width=512)
    rows = {r["name"]: r for r in model_table(index, {"mine": lite_contract(240).to_json(),
                                                     "mine_int8": lite_contract(240).to_json(),
                                                     "emb": embedding.to_json()})}
    assert rows["mine"]["ready_versions"] == ["2"] and rows["mine"]["variants"] == ["mine_int8"]
    assert rows["mine"]["contract"] == {"size": 240, "resize": "center_crop", "kind": "classes", "top_k": 5,
                                        "num_classes": 1000}
    assert rows["emb"]["state"] == "UNAVAILABLE" and rows["emb"]["contract"]["dim"] == 512


def test_rate_probe_imports_and_costs_almost_nothing_beside_lite0(pics, tmp_path):
    """`rate_probe` (the benchmarks' stand-in for inference on GPUs) goes through the real import,
    decodes exactly as the built-in efficientnet_lite0 does, and is the channel means x a fixed
    matrix: thousands of times fewer operations than a real classifier."""
    from typer.testing import CliRunner

    from streaming.cli import models as cli

    onnx_path = tmp_path / "rate_probe.onnx"
    wrote = CliRunner().invoke(cli.models_app, ["example", "rate_probe", "--out", str(onnx_path)],
                               catch_exceptions=False)
    assert wrote.exit_code == 0 and "rate_probe.toml" in wrote.output, wrote.output
    unknown = CliRunner().invoke(cli.models_app, ["example", "rate_prob", "--out", str(tmp_path / "x.onnx")])
    assert unknown.exit_code == 2 and "rate_probe" in unknown.output
    contract = user_models.example_contract(user_models.RATE_PROBE)
    assert (contract.resize, contract.normalize) == (lite_contract().resize, lite_contract().normalize)
    result = import_model(onnx_path, name="rate_probe", contract=contract, repository=tmp_path / "repo", photos=pics,
                          labels=LABELS_PATH)
    assert result.check.passed
    wrapped = ort.InferenceSession(str(tmp_path / "repo" / "rate_probe" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    pixels = np.stack([contract_images.pixels(p, contract) for p in pics[:4]])
    probabilities = wrapped.run(None, {"IMAGE": pixels})[0]
    weights = numpy_helper.to_array(onnx.load(str(onnx_path)).graph.initializer[0])
    logits = ((pixels.reshape(4, -1, 3).astype(np.float64) - 127) / 128).mean(axis=1) @ weights  # (p - 127) / 128 in
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert np.abs(probabilities - expected / expected.sum(axis=1, keepdims=True)).max() < 1e-5
    assert weights.size == 3 * 1000 and len(onnx.load(str(onnx_path)).graph.node) == 2
