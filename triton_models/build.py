"""Generate the Triton model repositories: local CPU (what the stack serves) and GPU (production).

    python -m triton_models.build [--target cpu] [--out triton_models/repository] [--instances N]
                                  [--max-batch 32] [--threads T] [--variants efficientnet_lite0,...]
    python -m triton_models.build --target gpu --out DIR [--gpus N] [--instances-per-gpu K]
                                  [--engine-cache-dir /var/cache/triton-trt] [--no-plans]

CPU (one folder per variant in ``variants.LOCAL_VARIANTS``)::

    <out>/efficientnet_lite0/config.pbtxt        python backend, KIND_CPU x N, dynamic batching
    <out>/efficientnet_lite0/labels.txt
    <out>/efficientnet_lite0/1/model.py          copy of python_backend/model.py
    <out>/efficientnet_lite0/1/model.onnx
    <out>/efficientnet_lite0_int8/...            same layout, INT8 (u8s8) ONNX
    <out>/efficientnet_lite1/... efficientnet_lite2/... (+ _int8)

GPU (every variant on the onnxruntime backend with TensorRT, plus TensorRT plans)::

    <out>/efficientnet_lite0/config.pbtxt        onnxruntime + TensorRT FP32, KIND_GPU x K on each GPU
    <out>/efficientnet_lite0/1/model.onnx
    <out>/efficientnet_lite0_fp16/...            TensorRT FP16 (fp16 ONNX)
    <out>/efficientnet_lite0_int8/...            TensorRT INT8 (s8s8 QDQ ONNX: TensorRT needs symmetric)
    <out>/efficientnet_lite0_fp16_plan/          tensorrt_plan; 1/model.plan is built at deploy time
        config.pbtxt  labels.txt  trtexec.args  1/model.onnx     by build_trt_plan.sh (trtexec)

ONNX files come from the :class:`variants.ArtifactStore` the caller passes (cached by
fingerprint under ``<work dir>/cache/models``, :func:`store_in`), so a rebuild only compares files.
The command line's ``--work-dir`` defaults to the local stack's folder (``IMGSTREAM_STACK_DIR``,
else ``.stack/``); this package takes paths and never imports the stack. Files are rewritten only
when their bytes change, and model folders of variants no longer built are removed.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import time
from pathlib import Path

from streaming.contract import LABELS_PATH
from triton_models import model_config
from triton_models.model_config import CpuTarget, GpuTarget
from triton_models.variants import ALL_VARIANTS, DEFAULT_VARIANT, LOCAL_VARIANTS, ArtifactStore, Variant, by_name

MODEL_NAME = DEFAULT_VARIANT.name  # "efficientnet_lite0": FP32, the job's default model
MODEL_VERSION = "1"
ONNX_FILE = model_config.ONNX_FILE
TEMPLATE = Path(__file__).resolve().parent / "python_backend" / "model.py"
DEFAULT_OUT = Path(__file__).resolve().parent / "repository"
TRTEXEC_ARGS_FILE = "trtexec.args"
MODEL_PREFIX = "efficientnet_"  # folders this module owns in a repository
# The command line's default work folder: the local stack's (streaming/stack/layout.py DIR_ENV and
# StackLayout.root; a unit test checks they agree), read here only, by `main`.
WORK_DIR_ENV = "IMGSTREAM_STACK_DIR"
DEFAULT_WORK_DIR = Path(__file__).resolve().parents[1] / ".stack"


def default_threads(instances: int) -> int:
    return max(1, (os.cpu_count() or 1) // instances)


def store_in(work_dir: Path) -> ArtifactStore:
    """Artifacts under ``<work_dir>/cache/models``, photos under ``<work_dir>/photos``."""
    work_dir = Path(work_dir)
    return ArtifactStore(cache_dir=work_dir / "cache" / "models", photos_dir=work_dir / "photos")


def default_work_dir(environ: dict[str, str] | None = None) -> Path:
    """The command line's work folder: ``$IMGSTREAM_STACK_DIR``, else the project's ``.stack/``."""
    env = os.environ if environ is None else environ
    return Path(env[WORK_DIR_ENV]).resolve() if env.get(WORK_DIR_ENV) else DEFAULT_WORK_DIR


def build_repository(out_dir: Path, *, store: ArtifactStore, instances: int = 1, max_batch_size: int = 32,
                     intra_op_threads: int | None = None, weights: Path | None = None,
                     variants: tuple[Variant, ...] = LOCAL_VARIANTS, response_cache: bool = True) -> Path:
    """Write (or refresh) the local CPU repository under ``out_dir``; returns the default model's folder."""
    threads = default_threads(instances) if intra_op_threads is None else intra_op_threads
    target = CpuTarget(instances=instances, intra_op_threads=threads, max_batch_size=max_batch_size,
                       response_cache=response_cache)
    if weights:
        store = ArtifactStore(cache_dir=store.cache_dir, photos_dir=store.photos_dir, weights={"lite0": Path(weights)})
    out_dir = Path(out_dir)
    for variant in variants:
        cfg = model_config.model_config(variant.spec, target)
        model_dir = _write_model(out_dir, cfg, store.ensure(variant.arch, variant.artifact_kind(gpu=False)))
        _write_if_changed(model_dir / MODEL_VERSION / "model.py", TEMPLATE.read_bytes())
    _remove_other_models(out_dir, {v.name for v in variants})
    return out_dir / MODEL_NAME


def build_gpu_repository(out_dir: Path, *, store: ArtifactStore, gpus: int = 1, instances_per_gpu: int = 1,
                         max_batch_size: int = 32, variants: tuple[Variant, ...] = ALL_VARIANTS, plans: bool = True,
                         engine_cache_dir: str = "/var/cache/triton-trt") -> Path:
    """Write (or refresh) the GPU repository under ``out_dir``; returns ``out_dir``."""
    target = GpuTarget(gpus=gpus, instances_per_gpu=instances_per_gpu, max_batch_size=max_batch_size,
                       engine_cache_dir=engine_cache_dir)
    out_dir = Path(out_dir)
    names = set()
    for variant in variants:
        onnx_path = store.ensure(variant.arch, variant.artifact_kind(gpu=True))
        runtimes = ["onnxruntime"] + (["tensorrt_plan"] if plans and variant.precision != "fp32" else [])
        for runtime in runtimes:
            cfg = model_config.model_config(variant.spec, target, runtime)
            model_dir = _write_model(out_dir, cfg, onnx_path)
            names.add(cfg.name)
            if runtime == "tensorrt_plan":
                args = "\n".join(model_config.trtexec_args(variant.spec, target)) + "\n"
                _write_if_changed(model_dir / TRTEXEC_ARGS_FILE, args.encode())
    _remove_other_models(out_dir, names)
    return out_dir


def _write_model(out_dir: Path, cfg, onnx_path: Path) -> Path:
    model_dir = out_dir / cfg.name
    (model_dir / MODEL_VERSION).mkdir(parents=True, exist_ok=True)
    _write_if_changed(model_dir / "config.pbtxt", model_config.render(cfg).encode())
    _write_if_changed(model_dir / model_config.LABELS_FILE, LABELS_PATH.read_bytes())
    _copy_if_changed(onnx_path, model_dir / MODEL_VERSION / ONNX_FILE)
    return model_dir


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _copy_if_changed(src: Path, dest: Path) -> None:
    if dest.exists() and (dest.samefile(src) or filecmp.cmp(src, dest, shallow=False)):
        return
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)  # the cache and the repository usually share a file system
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dest)


def _remove_other_models(out_dir: Path, keep: set[str]) -> None:
    """Remove model folders this module made (``efficientnet_*`` with a config) that are not in ``keep``."""
    for child in out_dir.iterdir():
        if child.is_dir() and child.name.startswith(MODEL_PREFIX) and child.name not in keep \
                and (child / "config.pbtxt").exists():
            shutil.rmtree(child)


def parse_variants(text: str | None, default: tuple[Variant, ...]) -> tuple[Variant, ...]:
    if not text:
        return default
    return tuple(by_name(name.strip()) for name in text.split(",") if name.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="generate the Triton model repository (EfficientNet-Lite variants)")
    ap.add_argument("--target", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--out", type=Path, default=None, help=f"repository root (cpu default {DEFAULT_OUT})")
    ap.add_argument("--max-batch", type=int, default=32, help="max_batch_size")
    ap.add_argument("--variants", default=None, help="comma-separated model names (default: all for the target)")
    ap.add_argument("--instances", type=int, default=1, help="cpu: python backend instances (KIND_CPU count)")
    ap.add_argument("--threads", type=int, default=None,
                    help="cpu: onnxruntime intra-op threads per instance (default: cpu_count // instances)")
    ap.add_argument("--gpus", type=int, default=1, help="gpu: number of GPUs (one instance group each)")
    ap.add_argument("--instances-per-gpu", type=int, default=1, help="gpu: instances on each GPU")
    ap.add_argument("--engine-cache-dir", default="/var/cache/triton-trt", help="gpu: TensorRT engine cache")
    ap.add_argument("--no-plans", action="store_true", help="gpu: skip the tensorrt_plan models")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help=f"ONNX cache and photos (default ${WORK_DIR_ENV}, else {DEFAULT_WORK_DIR})")
    args = ap.parse_args(argv)
    start = time.monotonic()
    store = store_in(args.work_dir or default_work_dir())
    if args.target == "cpu":
        out = args.out or DEFAULT_OUT
        build_repository(out, store=store, instances=args.instances, max_batch_size=args.max_batch,
                         intra_op_threads=args.threads, variants=parse_variants(args.variants, LOCAL_VARIANTS))
    else:
        if args.out is None:
            ap.error("--target gpu needs --out DIR (the local repository is CPU-only)")
        out = build_gpu_repository(args.out, store=store, gpus=args.gpus, instances_per_gpu=args.instances_per_gpu,
                                   max_batch_size=args.max_batch, variants=parse_variants(args.variants, ALL_VARIANTS),
                                   plans=not args.no_plans, engine_cache_dir=args.engine_cache_dir)
    models = sorted(p.parent.name for p in Path(out).glob("*/config.pbtxt"))
    print(f"{args.target} model repository ready in {time.monotonic() - start:.1f}s: {out}")
    for name in models:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
