"""Triton Inference Server for the local stack: the tritonserver 2.51 binary bundled in the
`nvidia-pytriton` wheel, run directly on CPU with its python backend.

The wheel is a server artifact here, not a library: it is downloaded from PyPI with its
hash pinned and unpacked into the stack folder (installing it would force tritonclient
versions that clash with apache-beam's grpcio pin). It keeps one python-backend stub per
Python version; like pytriton itself we put the stub of the running Python in
`backends/python/`. The stub links against libpython, so the Python's LIBDIR goes on
LD_LIBRARY_PATH (before Debian's), and the venv goes on PATH so model.py imports work.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from streaming.stack.layout import StackLayout
from streaming.stack.process import ServiceSpec

WHEEL = "nvidia-pytriton==0.7.0"
WHEEL_SHA256 = "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"


def install_server(layout: StackLayout) -> Path:
    """Unpack the wheel's server and libs into the stack folder with this Python's stub; idempotent."""
    home = layout.data_dir("triton")
    dest = home / "server"
    stub = dest / "backends" / "python" / "triton_python_backend_stub"
    if stub.exists():
        return dest
    shutil.rmtree(home / "unpacked", ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--require-hashes", "-r", str(req), "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("nvidia_pytriton-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist()
                       if m.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
            zf.extractall(home / "unpacked", members)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.move(home / "unpacked" / "pytriton" / "tritonserver", dest)
    shutil.rmtree(home / "libs", ignore_errors=True)
    shutil.move(home / "unpacked" / "nvidia_pytriton.libs", home / "libs")
    shutil.rmtree(home / "unpacked")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy2(dest / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
    for binary in (dest / "bin" / "tritonserver", stub):
        binary.chmod(0o755)
    return dest


def ready(layout: StackLayout) -> bool:
    try:
        with urllib.request.urlopen(f"{layout.triton_http}/v2/health/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def triton_service(layout: StackLayout, model_repository: Path) -> ServiceSpec:
    server = install_server(layout)
    venv_bin = Path(sys.executable).parent
    libdir = sysconfig.get_config_var("LIBDIR")
    argv = (
        str(server / "bin" / "tritonserver"),
        f"--model-repository={model_repository}",
        f"--backend-directory={server / 'backends'}",
        f"--cache-directory={server / 'caches'}",
        f"--http-address={layout.host}", f"--http-port={layout.triton_http_port}",
        f"--grpc-address={layout.host}", f"--grpc-port={layout.triton_grpc_port}",
        f"--metrics-address={layout.host}", f"--metrics-port={layout.triton_metrics_port}",
        "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
        "--strict-readiness=true", "--exit-on-error=true", "--log-verbose=0",
        # every model at start, and `imgstream models import` (re)loads one while it runs
        "--model-control-mode=explicit", "--load-model=*",
    )
    env = {
        "LD_LIBRARY_PATH": f"{server.parent / 'libs'}:{libdir}",
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONNOUSERSITE": "1",
    }
    return ServiceSpec("triton", argv, cwd=server, health=lambda: ready(layout), env=env,
                       ready_timeout_s=180)
