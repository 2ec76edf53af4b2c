"""Triton ``config.pbtxt`` for every variant, CPU (local stack) and GPU (production), from one function.

:func:`model_config` builds a ``ModelConfig`` protobuf (tritonclient's ``model_config_pb2``),
so what it writes always parses. The parts every runtime shares come from the same code:
inputs/outputs from the model's contract (uint8 NHWC ``[S, S, 3]`` in, float32 NCHW for the naive
baseline's variant only; float32 ``PROBABILITIES [num_classes]`` with the labels file, or
``EMBEDDING [dim]`` without, out), the contract itself as the ``imgstream_contract`` parameter
(JSON, read by the job through ``get_model_config``), max batch size, dynamic batching (preferred
sizes + queue delay bound), warm-up. What differs:

| runtime | where | backend / platform | instances | model file |
|---|---|---|---|---|
| ``python`` | local CPU | python backend, ``model.py`` on onnxruntime CPU | ``KIND_CPU`` x N | ``model.onnx`` |
| ``onnxruntime`` | GPU | onnxruntime backend, TensorRT accelerator (FP32/FP16/INT8, engine cache) | ``KIND_GPU`` x K per GPU | ``model.onnx`` |
| ``tensorrt_plan`` | GPU | TensorRT plan built by ``build_trt_plan.sh`` (trtexec) at deploy time | ``KIND_GPU`` x K per GPU | ``model.plan`` |

Both enable the response cache: identical tensors recur when Flink replays events after a
failover or producers retry, and hashing 150 KB costs far less than an inference. It takes
effect only when the server runs with ``--cache-config local,size=BYTES``; without it Triton
loads the model and logs ``cache_enabled 0`` (the local stack's case today).
"""
from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from streaming import contract
from streaming.contract import ModelContract

PREFERRED_BATCH_SIZES = (8, 16, 32)
MAX_QUEUE_DELAY_US = 2000
LABELS_FILE = "labels.txt"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
TRT_WORKSPACE_BYTES = 1 << 30
RUNTIMES = ("python", "onnxruntime", "tensorrt_plan")
PRECISIONS = tuple(TRT_PRECISION)


@dataclass(frozen=True)
class ModelSpec:
    """What a config says about one model: its name, its contract and the precision of its weights
    (TensorRT's precision mode). ``float_input``: the naive baseline, float32 NCHW normalised by the
    client; it follows no contract on the wire, so its config carries none."""

    name: str
    contract: ModelContract
    precision: str = "fp32"
    float_input: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def size(self) -> int:
        return self.contract.resize.size

    @property
    def input_dims(self) -> list[int]:
        """One image's input shape: [S, S, 3] uint8, or [3, S, S] float32 for float input."""
        return [contract.CHANNELS, self.size, self.size] if self.float_input else list(contract.input_shape(self.size))


@dataclass(frozen=True, kw_only=True)
class CpuTarget:
    """The local stack: python backend + onnxruntime on CPU."""

    instances: int = 1
    intra_op_threads: int = 0  # 0: onnxruntime's default
    # onnxruntime's idle threads spin for work by default: on a machine whose cores the job's
    # preprocessing also needs, that burns their CPU between batches. Off here.
    allow_spinning: bool = False
    max_batch_size: int = 32
    response_cache: bool = True

    def __post_init__(self):
        if self.instances < 1:
            raise ValueError("instances must be >= 1")
        if self.intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0 (0 = onnxruntime default)")
        _check_batch(self.max_batch_size)


@dataclass(frozen=True, kw_only=True)
class GpuTarget:
    """Production GPUs: ``instances_per_gpu`` instances on each of GPUs 0..gpus-1."""

    gpus: int = 1
    instances_per_gpu: int = 1
    max_batch_size: int = 32
    engine_cache_dir: str = "/var/cache/triton-trt"  # TensorRT engine cache (a persistent volume)
    response_cache: bool = True

    def __post_init__(self):
        if self.gpus < 1 or self.instances_per_gpu < 1:
            raise ValueError("gpus and instances_per_gpu must be >= 1")
        _check_batch(self.max_batch_size)


def _check_batch(max_batch_size: int) -> None:
    if not 1 <= max_batch_size <= 1024:
        raise ValueError("max_batch_size must be in [1, 1024]")


def model_name(spec: ModelSpec, runtime: str) -> str:
    return f"{spec.name}_plan" if runtime == "tensorrt_plan" else spec.name


def model_config(spec: ModelSpec, target: CpuTarget | GpuTarget, runtime: str | None = None) -> pb.ModelConfig:
    """The Triton config of the model ``spec`` served with ``runtime`` on ``target`` (``Variant.spec``
    for the built-in models)."""
    runtime = runtime or ("python" if isinstance(target, CpuTarget) else "onnxruntime")
    if (runtime == "python") != isinstance(target, CpuTarget) or runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} does not run on {type(target).__name__}")
    if runtime == "tensorrt_plan" and spec.precision == "fp32":
        raise ValueError("no FP32 TensorRT plan: use the onnxruntime runtime for FP32")
    if spec.float_input and runtime != "python":
        raise ValueError("float-input variants are a CPU baseline (python runtime) only")
    size, max_batch = spec.size, target.max_batch_size
    preferred = [b for b in PREFERRED_BATCH_SIZES if b <= max_batch] or [max_batch]
    cfg = pb.ModelConfig(name=model_name(spec, runtime), max_batch_size=max_batch)
    input_type = pb.TYPE_FP32 if spec.float_input else pb.TYPE_UINT8
    cfg.input.add(name=contract.INPUT_NAME, data_type=input_type, dims=spec.input_dims)
    out = spec.contract.output
    if out.kind == "classes":
        cfg.output.add(name=out.tensor_name, data_type=pb.TYPE_FP32, dims=[out.num_classes], label_filename=LABELS_FILE)
    else:
        cfg.output.add(name=out.tensor_name, data_type=pb.TYPE_FP32, dims=[out.dim])
    if not spec.float_input:
        cfg.parameters[contract.CONTRACT_PARAMETER].string_value = spec.contract.to_json()
    cfg.dynamic_batching.preferred_batch_size.extend(preferred)
    cfg.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    for batch in sorted({1, max_batch} if isinstance(target, GpuTarget) else {1}):
        warm = cfg.model_warmup.add(name=f"random_batch_{batch}", batch_size=batch, count=1)
        warm.inputs[contract.INPUT_NAME].CopyFrom(
            pb.ModelWarmup.Input(data_type=input_type, dims=spec.input_dims, random_data=True))

    cfg.response_cache.enable = target.response_cache
    if isinstance(target, CpuTarget):
        cfg.backend = "python"
        cfg.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=target.instances)
        cfg.parameters["onnx_file"].string_value = ONNX_FILE
        cfg.parameters["intra_op_threads"].string_value = str(target.intra_op_threads)
        cfg.parameters["allow_spinning"].string_value = "1" if target.allow_spinning else "0"
        return cfg

    for gpu in range(target.gpus):
        cfg.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=target.instances_per_gpu, gpus=[gpu])
    if runtime == "tensorrt_plan":
        cfg.platform = "tensorrt_plan"
        cfg.default_model_filename = PLAN_FILE
        return cfg
    cfg.backend = "onnxruntime"
    cfg.default_model_filename = ONNX_FILE
    shape = f"{size}x{size}x3"
    opt = preferred[len(preferred) // 2]
    accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    accel.parameters.update({
        "precision_mode": TRT_PRECISION[spec.precision],
        "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": f"{target.engine_cache_dir}/{cfg.name}",
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": target.engine_cache_dir,
        "trt_profile_min_shapes": f"{contract.INPUT_NAME}:1x{shape}",
        "trt_profile_opt_shapes": f"{contract.INPUT_NAME}:{opt}x{shape}",
        "trt_profile_max_shapes": f"{contract.INPUT_NAME}:{max_batch}x{shape}",
    })
    return cfg


def trtexec_args(spec: ModelSpec, target: GpuTarget, version: int = 1) -> list[str]:
    """trtexec flags that build ``<version>/model.plan`` from ``<version>/model.onnx`` (paths relative to
    the model folder; ``build_trt_plan.sh`` builds in the folder the ``--onnx`` path names)."""
    size, max_batch = spec.size, target.max_batch_size
    preferred = [b for b in PREFERRED_BATCH_SIZES if b <= max_batch] or [max_batch]
    shape = f"{size}x{size}x3"
    name = contract.INPUT_NAME
    precision = {"fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}[spec.precision]
    return [f"--onnx={version}/{ONNX_FILE}", f"--saveEngine={version}/{PLAN_FILE}", *precision,
            f"--minShapes={name}:1x{shape}", f"--optShapes={name}:{preferred[len(preferred) // 2]}x{shape}",
            f"--maxShapes={name}:{max_batch}x{shape}", f"--memPoolSize=workspace:{TRT_WORKSPACE_BYTES >> 20}M",
            "--skipInference"]


def render(cfg: pb.ModelConfig) -> str:
    return text_format.MessageToString(cfg)


def parse(text: str) -> pb.ModelConfig:
    return text_format.Parse(text, pb.ModelConfig())
