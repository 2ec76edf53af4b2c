"""Triton configs of every variant (CPU and GPU) from the one generator: they parse, match the ONNX
files, declare the instance groups asked for and name files that exist; build_trt_plan.sh runs."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import onnx
import pytest
from tritonclient.grpc import model_config_pb2 as pb

from streaming.contract import CONTRACT_PARAMETER, LABELS_PATH, ModelContract, Normalize, Output, Resize, lite_contract
from streaming.stack.layout import StackLayout
from triton_models import build, export_onnx, model_config
from triton_models.model_config import CpuTarget, GpuTarget
from triton_models.variants import ALL_VARIANTS, LOCAL_VARIANTS, Variant

ONNX_DTYPES = {onnx.TensorProto.UINT8: pb.TYPE_UINT8, onnx.TensorProto.FLOAT: pb.TYPE_FP32}
GPU_VARIANTS = (Variant("lite0", "fp32"), Variant("lite0", "fp16"), Variant("lite0", "int8"))
SCRIPT = Path(build.__file__).resolve().parent / "build_trt_plan.sh"


def _store():
    """The ONNX cache and photos of the local stack's folder (IMGSTREAM_STACK_DIR), as `imgstream models build`."""
    return build.store_in(StackLayout.from_env().root)


@pytest.fixture(scope="module")
def cpu_repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cpu")
    build.build_repository(out, store=_store(), instances=2, max_batch_size=16)
    return out


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu")
    return build.build_gpu_repository(out, store=_store(), gpus=2, instances_per_gpu=3, variants=GPU_VARIANTS)


def _config(model_dir: Path) -> pb.ModelConfig:
    from google.protobuf import text_format

    return text_format.Parse((model_dir / "config.pbtxt").read_text(), pb.ModelConfig())


def _assert_matches_onnx(cfg: pb.ModelConfig, onnx_path: Path) -> None:
    model = onnx.load(str(onnx_path), load_external_data=False)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert [cfg.input[0].name, cfg.output[0].name] == [inp.name, out.name]
    assert ONNX_DTYPES[inp.type.tensor_type.elem_type] == cfg.input[0].data_type == pb.TYPE_UINT8
    assert ONNX_DTYPES[out.type.tensor_type.elem_type] == cfg.output[0].data_type == pb.TYPE_FP32
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", *cfg.input[0].dims] and out_dims == ["batch", *cfg.output[0].dims]


def test_variant_names_and_sets():
    assert Variant("lite0", "fp32").name == "efficientnet_lite0"  # the job's default model stays FP32
    assert [v.name for v in ALL_VARIANTS if v.arch == "lite1"] == [
        "efficientnet_lite1", "efficientnet_lite1_fp16", "efficientnet_lite1_int8"]
    assert {v.precision for v in LOCAL_VARIANTS} == {"fp32", "int8"}  # FP16 is slower than FP32 on CPU
    assert [Variant(a, "fp32").image_size for a in ("lite0", "lite1", "lite2")] == [224, 240, 260]
    with pytest.raises(ValueError):
        Variant("lite9", "fp32")


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=lambda v: v.name)
def test_cpu_and_gpu_configs_share_the_contract(variant):
    cpu = model_config.model_config(variant.spec, CpuTarget(instances=3, intra_op_threads=1, max_batch_size=16))
    gpu = model_config.model_config(variant.spec, GpuTarget(gpus=2, instances_per_gpu=2, max_batch_size=16))
    for cfg in (cpu, gpu):
        again = model_config.parse(model_config.render(cfg))
        assert again == cfg
        assert cfg.name == variant.name and cfg.max_batch_size == 16
        assert list(cfg.input[0].dims) == [variant.image_size, variant.image_size, 3]
        assert cfg.output[0].label_filename == "labels.txt"
        assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
        assert cfg.dynamic_batching.max_queue_delay_microseconds == model_config.MAX_QUEUE_DELAY_US
        assert cfg.model_warmup[0].inputs["IMAGE"].random_data and cfg.response_cache.enable
        assert ModelContract.from_json(cfg.parameters[CONTRACT_PARAMETER].string_value) == lite_contract(variant.image_size)
    assert (cpu.input, cpu.output, cpu.dynamic_batching) == (gpu.input, gpu.output, gpu.dynamic_batching)
    assert cpu.backend == "python" and [(g.kind, g.count) for g in cpu.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 3)]
    assert cpu.parameters["allow_spinning"].string_value == "0"  # idle onnxruntime threads leave the cores
    assert gpu.backend == "onnxruntime" and gpu.default_model_filename == "model.onnx"
    (accel,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == variant.precision.upper()
    assert accel.parameters["trt_engine_cache_enable"] == "1"
    assert accel.parameters["trt_profile_max_shapes"] == f"IMAGE:16x{variant.image_size}x{variant.image_size}x3"
    assert [w.batch_size for w in gpu.model_warmup] == [1, 16]


@pytest.mark.parametrize("runtime", model_config.RUNTIMES)
def test_an_embedding_contract_makes_an_embedding_output_without_labels(runtime):
    embedding = ModelContract(Resize(192, "squash"), Normalize(layout="NHWC"),
                              Output("embedding", dim=512, l2_normalize=True, dtype="float16"))
    spec = model_config.ModelSpec("my_embedder", embedding, precision="fp32" if runtime != "tensorrt_plan" else "fp16")
    target = CpuTarget() if runtime == "python" else GpuTarget(gpus=2)
    cfg = model_config.model_config(spec, target, runtime)
    assert model_config.parse(model_config.render(cfg)) == cfg
    assert cfg.name == ("my_embedder_plan" if runtime == "tensorrt_plan" else "my_embedder")
    assert [(o.name, list(o.dims), o.data_type, o.label_filename) for o in cfg.output] == [
        ("EMBEDDING", [512], pb.TYPE_FP32, "")]
    assert list(cfg.input[0].dims) == [192, 192, 3] and cfg.input[0].data_type == pb.TYPE_UINT8
    assert ModelContract.from_json(cfg.parameters[CONTRACT_PARAMETER].string_value) == embedding
    if runtime == "tensorrt_plan":
        args = model_config.trtexec_args(spec, target, version=3)
        assert "--onnx=3/model.onnx" in args and "--maxShapes=IMAGE:32x192x192x3" in args


def test_configs_refuse_impossible_combinations():
    with pytest.raises(ValueError):
        model_config.model_config(Variant("lite0", "fp32").spec, GpuTarget(), "tensorrt_plan")
    with pytest.raises(ValueError):
        model_config.model_config(Variant("lite0", "fp16").spec, CpuTarget(), "onnxruntime")
    with pytest.raises(ValueError):
        GpuTarget(gpus=0)
    with pytest.raises(ValueError):
        CpuTarget(max_batch_size=0)


def test_cpu_repository_serves_local_variants(cpu_repo):
    assert sorted(p.parent.name for p in cpu_repo.glob("*/config.pbtxt")) == sorted(v.name for v in LOCAL_VARIANTS)
    for variant in LOCAL_VARIANTS:
        model_dir = cpu_repo / variant.name
        cfg = _config(model_dir)
        assert cfg.name == variant.name and cfg.backend == "python" and cfg.instance_group[0].count == 2
        assert cfg.parameters["onnx_file"].string_value == "model.onnx"
        assert (model_dir / "labels.txt").read_bytes() == LABELS_PATH.read_bytes()
        assert (model_dir / "1" / "model.py").read_bytes() == build.TEMPLATE.read_bytes()
        _assert_matches_onnx(cfg, model_dir / "1" / "model.onnx")


def test_gpu_repository_instance_groups_and_files(gpu_repo):
    names = sorted(p.parent.name for p in gpu_repo.glob("*/config.pbtxt"))
    assert names == ["efficientnet_lite0", "efficientnet_lite0_fp16", "efficientnet_lite0_fp16_plan",
                     "efficientnet_lite0_int8", "efficientnet_lite0_int8_plan"]
    for name in names:
        model_dir = gpu_repo / name
        cfg = _config(model_dir)
        assert cfg.name == name
        assert [(g.kind, g.count, list(g.gpus)) for g in cfg.instance_group] == [
            (pb.ModelInstanceGroup.KIND_GPU, 3, [0]), (pb.ModelInstanceGroup.KIND_GPU, 3, [1])]
        assert (model_dir / cfg.output[0].label_filename).exists()
        assert not (model_dir / "1" / "model.py").exists()
        _assert_matches_onnx(cfg, model_dir / "1" / "model.onnx")
        if name.endswith("_plan"):
            assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
            args = (model_dir / "trtexec.args").read_text().split()
            assert "--onnx=1/model.onnx" in args and f"--saveEngine=1/{cfg.default_model_filename}" in args
            assert ("--int8" in args) == name.endswith("int8_plan") and "--fp16" in args
            assert f"--maxShapes=IMAGE:{cfg.max_batch_size}x224x224x3" in args
        else:
            assert cfg.backend == "onnxruntime" and (model_dir / "1" / cfg.default_model_filename).exists()


def test_gpu_int8_is_symmetric_for_tensorrt(gpu_repo):
    """TensorRT takes only zero-point-0 (symmetric int8) Q/DQ; the CPU file is u8 (zero point 127...)."""
    from onnx import numpy_helper

    model = onnx.load(str(gpu_repo / "efficientnet_lite0_int8" / "1" / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(zero_points) > 100
    assert not any(z.any() for z in zero_points)
    assert {z.dtype.name for z in zero_points} == {"int8", "int32"}  # int32: the conv biases
    assert [n.op_type for n in model.graph.node][-2:] != ["QuantizeLinear", "DequantizeLinear"]  # probabilities stay float


def test_build_trt_plan_script_builds_and_keeps_plans(gpu_repo, tmp_path):
    fake = tmp_path / "trtexec"  # writes the engine file it is asked for, records its arguments
    fake.write_text('#!/bin/bash\nfor a in "$@"; do case $a in --saveEngine=*) echo plan > "${a#--saveEngine=}";; esac; done\n'
                    'echo "$@" >> "$ARGS_LOG"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "TRTEXEC": str(fake), "ARGS_LOG": str(tmp_path / "calls")}
    first = subprocess.run(["bash", str(SCRIPT), str(gpu_repo)], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    for name in ("efficientnet_lite0_fp16_plan", "efficientnet_lite0_int8_plan"):
        assert (gpu_repo / name / "1" / "model.plan").read_text() == "plan\n"
        assert (gpu_repo / name / "1" / "model.plan.stamp").exists()
    calls = [c for c in (tmp_path / "calls").read_text().splitlines() if "--onnx" in c]  # not --help
    assert len(calls) == 2 and all("--skipInference" in c and "--onnx=1/model.onnx" in c for c in calls)
    second = subprocess.run(["bash", str(SCRIPT), str(gpu_repo)], env=env, capture_output=True, text=True)
    assert second.returncode == 0 and second.stdout.count("up to date") == 2
    assert sum("--onnx" in c for c in (tmp_path / "calls").read_text().splitlines()) == 2  # nothing rebuilt

    failing = tmp_path / "trtexec-fails"
    failing.write_text("#!/bin/bash\nexit 3\n")
    failing.chmod(failing.stat().st_mode | stat.S_IEXEC)
    (gpu_repo / "efficientnet_lite0_fp16_plan" / "1" / "model.plan.stamp").write_text("another GPU\n")
    third = subprocess.run(["bash", str(SCRIPT), str(gpu_repo)], env={**env, "TRTEXEC": str(failing)},
                           capture_output=True, text=True)
    assert third.returncode == 1 and "efficientnet_lite0_fp16_plan FAILED" in third.stderr


def test_rebuild_is_a_no_op_and_removes_dropped_variants(cpu_repo):
    before = {p: p.stat().st_mtime_ns for p in cpu_repo.rglob("*") if p.is_file()}
    build.build_repository(cpu_repo, store=_store(), instances=2, max_batch_size=16)
    assert {p: p.stat().st_mtime_ns for p in cpu_repo.rglob("*") if p.is_file()} == before
    build.build_repository(cpu_repo, store=_store(), instances=2, max_batch_size=16,
                           variants=(Variant("lite0", "fp32"),))
    assert sorted(p.parent.name for p in cpu_repo.glob("*/config.pbtxt")) == ["efficientnet_lite0"]
    build.build_repository(cpu_repo, store=_store(), instances=2, max_batch_size=16)  # back to all, for the other tests
    assert export_onnx.recorded_fingerprint(cpu_repo / "efficientnet_lite1" / "1" / "model.onnx")[2] == "lite1/fp32"
