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

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from streaming.stack.layout import StackLayout
from streaming.stack.process import ServiceSpec, loopback_opener

WHEEL = "nvidia-pytriton==0.7.0"
WHEEL_SHA256 = "21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"


# server/ holds this stamp once it is complete: the wheel's sha256 and the Python its stub is for.
# It is written in the staging folder before server/ is renamed into place, so "installed" means
# "the stamp matches", never "some file exists" (an interrupted install left a truncated stub and
# binaries without exec bits that every later `up` took as installed).
STAMP = ".installed"
STAGING = "install.tmp"  # sibling of server/ and libs/; a leftover from an interrupted run is removed


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _stamp_text(sha256: str, version: str) -> str:
    return f"{sha256} python{version}\n"


def is_installed(home: Path, sha256: str | None = None, version: str | None = None) -> bool:
    """True when `home/server` is a complete install of the wheel `sha256` for Python `version`."""
    expected = _stamp_text(sha256 or WHEEL_SHA256, version or _python_version())
    try:
        return (home / "server" / STAMP).read_text() == expected
    except OSError:
        return False


def install_server(layout: StackLayout) -> Path:
    """Unpack the wheel's server and libs into the stack folder with this Python's stub; idempotent."""
    home = layout.data_dir("triton")
    if is_installed(home):
        return home / "server"
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--require-hashes", "-r", str(req), "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("nvidia_pytriton-*.whl"))
        return unpack_server(wheel, home)


def unpack_server(wheel: Path, home: Path, sha256: str | None = None, version: str | None = None) -> Path:
    """Install the wheel's server (with the stub for Python `version`) and libs as `home/server` and
    `home/libs`, all or nothing: everything is built and stamped in `home/install.tmp`, then renamed
    into place, server/ (which holds the stamp) last."""
    sha256, version = sha256 or WHEEL_SHA256, version or _python_version()
    with open(wheel, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != sha256:
        raise ValueError(f"{wheel.name}: sha256 {actual}, expected {sha256}")
    staging = home / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(home / "unpacked", ignore_errors=True)  # the same leftover, from before the stamp
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist()
                   if m.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
        zf.extractall(staging, members)
    server = staging / "pytriton" / "tritonserver"
    stub = server / "backends" / "python" / "triton_python_backend_stub"
    shutil.copy2(server / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
    for binary in (server / "bin" / "tritonserver", stub):  # extractall drops exec bits
        binary.chmod(0o755)
    (server / STAMP).write_text(_stamp_text(sha256, version))
    _swap_in(staging / "nvidia_pytriton.libs", home / "libs", staging)
    _swap_in(server, home / "server", staging)
    shutil.rmtree(staging)
    return home / "server"


def _swap_in(new: Path, dest: Path, staging: Path) -> None:
    """Rename `new` to `dest`; an old `dest` is first renamed into `staging` (removed with it), so a
    running tritonserver loses its files only for the instant between the two renames."""
    if dest.exists():
        os.replace(dest, staging / f"old-{dest.name}")
    os.replace(new, dest)


def ready(layout: StackLayout) -> bool:
    try:
        with loopback_opener().open(f"{layout.triton_http}/v2/health/ready", timeout=2) as resp:
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
