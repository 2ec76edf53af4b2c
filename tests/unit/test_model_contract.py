"""One model contract (`streaming/contract.py`): the decoder, the builders, the client and the
benchmarks use its geometry, names and labels, and nobody keeps a copy."""
from __future__ import annotations

import ast
import inspect
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streaming import contract, decode, infer
from streaming.bench import methods
from triton_models import export_onnx, preprocess
from triton_models.variants import Variant

REPO = Path(__file__).resolve().parents[2]
PYTHON_BACKEND = REPO / "triton_models" / "python_backend" / "model.py"


def _constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text())
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, (ast.Constant, ast.Tuple))}


def test_the_values_the_models_and_the_engine_agree_on():
    assert contract.INPUT_SIZE == 224 and contract.CROP_FRACTION == 224 / 256
    assert (contract.INPUT_NAME, contract.OUTPUT_NAME) == ("IMAGE", "PROBABILITIES")
    assert contract.INPUT_DTYPE is np.uint8 and contract.input_shape() == (224, 224, 3)
    assert (contract.PIXEL_MEAN, contract.PIXEL_STD) == (127.0, 128.0)
    assert contract.RESIZE_FILTER == "BICUBIC"


@pytest.mark.parametrize("width,height,box", [
    (640, 480, (110, 30, 530, 450)), (256, 256, (16, 16, 240, 240)), (480, 640, (30, 110, 450, 530)),
    (1, 1, (0, 0, 1, 1)), (3, 1000, (1, 499, 3, 501)),
])
def test_centre_crop_geometry_is_one_function(width, height, box):
    assert contract.crop_box(width, height) == box
    assert preprocess.center_crop_box(width, height) == box  # the builders' reference, at 224
    assert methods.crop_box(width, height) == box  # the benchmarks'


def test_reference_crop_follows_the_models_size_and_the_engine_keeps_224_over_256():
    assert contract.reference_crop_fraction(224) == contract.CROP_FRACTION
    assert contract.reference_crop_fraction(240) == 240 / 272
    assert preprocess.center_crop_box(640, 480, 240) == contract.crop_box(640, 480, 240 / 272)
    default = inspect.signature(decode.decode_to_tensor).parameters["resize"].default
    assert default == contract.Resize(contract.INPUT_SIZE, "center_crop", contract.CROP_FRACTION, "bicubic")


def test_the_builders_client_and_graph_use_the_contracts_names():
    assert infer.INPUT_NAME == export_onnx.INPUT_NAME == contract.INPUT_NAME
    assert infer.OUTPUT_NAME == export_onnx.OUTPUT_NAME == contract.OUTPUT_NAME
    assert Variant("lite0", "fp32").input_dims == list(contract.input_shape())
    assert export_onnx.ARCHS["lite0"].image_size == contract.INPUT_SIZE


def test_the_triton_python_backend_keeps_the_same_tensor_names():
    """model.py runs inside Triton, where `streaming` cannot be imported: it has its own copy."""
    names = _constants(PYTHON_BACKEND)
    assert names["INPUT_NAME"] == contract.INPUT_NAME
    assert names["OUTPUT_NAMES"] == (contract.OUTPUT_NAME, contract.EMBEDDING_OUTPUT)
    assert 'config["output"][0]["name"]' in PYTHON_BACKEND.read_text()  # the served output comes from the config


def test_labels_one_per_class():
    labels = contract.load_labels()
    assert len(labels) == contract.NUM_CLASSES == len(set(labels))
    assert labels[301] == "ladybug"


def _python_files() -> list[Path]:
    """The project's own modules (tracked by git: not the generated model repository, which holds
    copies of the python backend)."""
    tracked = subprocess.run(["git", "ls-files", "--", "streaming", "triton_models", "flink_jobs"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    return [REPO / name for name in sorted(tracked) if name.endswith(".py")]


@pytest.mark.parametrize("literal", ["IMAGE", "PROBABILITIES"])
def test_no_module_but_the_contract_spells_a_tensor_name(literal):
    allowed = {REPO / "streaming" / "contract.py", PYTHON_BACKEND}
    spelled = [str(p.relative_to(REPO)) for p in _python_files() if p not in allowed
               and any(isinstance(n, ast.Constant) and n.value == literal for n in ast.walk(ast.parse(p.read_text())))]
    assert not spelled, f"{literal!r} written outside streaming/contract.py: {spelled}"


def test_no_module_but_the_contract_writes_the_crop_fraction():
    spelled = [str(p.relative_to(REPO)) for p in _python_files() if p.name != "contract.py"
               and "224 / 256" in p.read_text()]
    assert not spelled, f"224 / 256 written outside streaming/contract.py: {spelled}"


# -- the per-model contract (ModelContract) ------------------------------------------------------

TORCHVISION = """
[input]
size = 240
resize = "center_crop"
crop_fraction = 0.875
interpolation = "bilinear"
range = [0.0, 1.0]
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
channel_order = "RGB"
layout = "NCHW"

[output]
kind = "classes"
num_classes = 1000
softmax = true
top_k = 3
"""


def test_a_contract_file_round_trips_through_the_triton_parameter(tmp_path):
    path = tmp_path / "contract.toml"
    path.write_text(TORCHVISION)
    parsed = contract.ModelContract.from_toml(path)
    assert parsed.resize == contract.Resize(240, "center_crop", 0.875, "bilinear")
    assert parsed.output.top_k == 3 and parsed.output.softmax and parsed.output.tensor_name == "PROBABILITIES"
    assert contract.ModelContract.from_json(parsed.to_json()) == parsed


def test_the_affine_is_torchvisions_normalisation_of_uint8_pixels():
    normalize = contract.Normalize((0.0, 1.0), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    scale, offset = normalize.affine()
    pixels = np.array([0, 128, 255], np.float64)
    for c, (m, s) in enumerate(zip(normalize.mean, normalize.std)):
        np.testing.assert_allclose(pixels * scale[c] + offset[c], (pixels / 255 - m) / s, rtol=1e-6)
    lite = contract.lite_contract().normalize.affine()
    np.testing.assert_allclose(pixels * lite[0][0] + lite[1][0], (pixels - 127) / 128, rtol=1e-6)


def test_the_built_in_lite_contracts_follow_tensorflows_crop():
    assert contract.lite_contract(224).resize == contract.Resize(224, "center_crop", 224 / 256, "bicubic")
    assert contract.lite_contract(260).resize.crop_fraction == 260 / 292
    assert contract.lite_contract().output.num_classes == contract.NUM_CLASSES


@pytest.mark.parametrize("change, field", [
    ({"input": {"size": 0}}, "input.size"),
    ({"input": {"size": 5000}}, "input.size"),
    ({"input": {"resize": "stretch"}}, "input.resize"),
    ({"input": {"crop_fraction": 1.5}}, "input.crop_fraction"),
    ({"input": {"interpolation": "lanczos"}}, "input.interpolation"),
    ({"input": {"mean": [1, 2]}}, "input.mean"),
    ({"input": {"std": [1, 0, 1]}}, "input.std"),
    ({"input": {"range": [1, 1]}}, "input.range"),
    ({"input": {"layout": "CHW"}}, "input.layout"),
    ({"input": {"channel_order": "RGBA"}}, "input.channel_order"),
    ({"input": {"mean": [float("nan"), 0, 0]}}, "input.mean"),
    ({"input": {"szie": 3}}, "input.szie"),
    ({"output": {"kind": "boxes"}}, "output.kind"),
    ({"output": {"top_k": 0}}, "output.top_k"),
    ({"output": {"num_classes": 0}}, "output.num_classes"),
    ({"output": {"kind": "embedding", "dim": 0}}, "output.dim"),
    ({"output": {"kind": "embedding", "dim": 8, "dtype": "int8"}}, "output.dtype"),
    ({"output": {"softmax": "yes"}}, "output.softmax"),
    ({"extra": {}}, "extra"),
    # TOML's true is not the integer 1
    ({"input": {"size": True}}, "input.size"),
    ({"output": {"kind": "classes", "num_classes": True}}, "output.num_classes"),
    ({"output": {"top_k": True}}, "output.top_k"),
    ({"output": {"kind": "embedding", "dim": True}}, "output.dim"),
    # a key of the other output kind: a mistaken contract, not one to silently ignore
    ({"output": {"kind": "embedding", "dim": 8, "softmax": True}}, "output.softmax"),
    ({"output": {"kind": "embedding", "dim": 8, "top_k": 3}}, "output.top_k"),
    ({"output": {"dim": 128}}, "output.dim"),
    ({"output": {"l2_normalize": True}}, "output.l2_normalize"),
    # a normalisation float32 cannot hold: every pixel the same (scale 0), or no number at all
    ({"input": {"std": [1e300, 1e300, 1e300]}}, "input.std"),
    ({"input": {"std": [1e-40, 1, 1]}}, "input.std"),
    ({"input": {"std": [-0.5, 1, 1]}}, "input.std"),
    ({"input": {"mean": [1e39, 0, 0]}}, "input.std"),
])
def test_a_wrong_contract_names_the_field(change, field):
    data = {"input": {"size": 224}, "output": {"kind": "classes", "num_classes": 10}}
    for section, values in change.items():  # a new output kind replaces the section
        data[section] = dict(values) if "kind" in values else {**data.get(section, {}), **values}
    with pytest.raises(contract.ContractError) as caught:
        contract.ModelContract.from_mapping(data)
    assert caught.value.field == field, caught.value
