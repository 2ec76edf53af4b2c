"""The local stack's Triton install and loopback health checks: an interrupted install is never taken
as installed (a re-run redoes it whole), and the Triton and Flink checks never go via a proxy."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import threading
import urllib.request
import zipfile
from pathlib import Path

import pytest

from streaming.stack import flink, s3, triton
from streaming.stack.layout import StackLayout

VERSION = triton._python_version()
STUB = b"\x7fELF stub " * 20_000  # 200 kB, so a copy can be cut halfway
SERVER = "pytriton/tritonserver/"


def fake_wheel(path: Path) -> str:
    """A wheel laid out like nvidia-pytriton's (server, stubs per Python, libs); returns its sha256."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pytriton/__init__.py", "")
        zf.writestr(SERVER + "bin/tritonserver", b"\x7fELF server")
        zf.writestr(SERVER + "backends/python/libtriton_python.so", b"\x7fELF backend")
        zf.writestr(SERVER + f"python_backend_stubs/{VERSION}/triton_python_backend_stub", STUB)
        zf.writestr(SERVER + "python_backend_stubs/3.99/triton_python_backend_stub", b"other python")
        zf.writestr("nvidia_pytriton.libs/libfoo.so", b"\x7fELF lib")
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Wheel(type(Path())):  # a Path that records the `pip download`s that fetched it
    downloads: list


@pytest.fixture
def wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Wheel:
    """`pip download` of the pinned wheel, stubbed to copy a fake one (pinned by its own hash)."""
    path = Wheel(tmp_path / "nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64.whl")
    monkeypatch.setattr(triton, "WHEEL_SHA256", fake_wheel(path))
    path.downloads = downloads = []

    def pip_download(argv, check):
        assert argv[2:4] == ["pip", "download"] and "--require-hashes" in argv
        downloads.append(argv)
        shutil.copy(path, Path(argv[argv.index("-d") + 1]) / path.name)

    monkeypatch.setattr(triton.subprocess, "run", pip_download)
    return path


def assert_complete(server: Path) -> None:
    stub = server / "backends" / "python" / "triton_python_backend_stub"
    assert stub.read_bytes() == STUB
    assert os.access(stub, os.X_OK) and os.access(server / "bin" / "tritonserver", os.X_OK)
    assert (server.parent / "libs" / "libfoo.so").read_bytes() == b"\x7fELF lib"
    assert not (server.parent / triton.STAGING).exists() and not (server.parent / "unpacked").exists()


def test_an_install_is_stamped_and_not_redone(tmp_path: Path, wheel: Wheel) -> None:
    layout = StackLayout(root=tmp_path / "stack")
    home = layout.data_dir("triton")
    server = triton.install_server(layout)
    assert server == home / "server" and triton.is_installed(home)
    assert_complete(server)
    assert (server / triton.STAMP).read_text() == f"{triton.WHEEL_SHA256} python{VERSION}\n"
    assert triton.install_server(layout) == server and len(wheel.downloads) == 1
    assert not triton.is_installed(home, version="3.99")  # another Python needs another stub


def test_an_install_interrupted_midway_is_not_taken_as_installed_and_a_rerun_completes(
        tmp_path: Path, wheel: Wheel, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = StackLayout(root=tmp_path / "stack")
    home = layout.data_dir("triton")
    real_copy2 = shutil.copy2

    def copy_half_then_die(src, dst, **_):
        Path(dst).write_bytes(Path(src).read_bytes()[:len(STUB) // 2])
        raise KeyboardInterrupt  # Ctrl-C, an OOM kill, a full disk...

    monkeypatch.setattr(triton.shutil, "copy2", copy_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        triton.install_server(layout)
    assert not triton.is_installed(home) and not (home / "server").exists()
    assert (home / triton.STAGING).exists()  # the half-built folder, for the re-run to remove

    monkeypatch.setattr(triton.shutil, "copy2", real_copy2)
    server = triton.install_server(layout)
    assert triton.is_installed(home) and len(wheel.downloads) == 2
    assert_complete(server)


def test_a_reinstall_interrupted_between_its_renames_is_not_taken_as_installed(
        tmp_path: Path, wheel: Wheel, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "triton"
    triton.unpack_server(wheel, home, version="3.99")  # an install for another Python: to be redone
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # libs/ swapped in, the old server/ moved aside, the new one not yet in
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(triton.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        triton.unpack_server(wheel, home)
    assert not triton.is_installed(home)
    monkeypatch.setattr(triton.os, "replace", real_replace)
    assert_complete(triton.unpack_server(wheel, home))
    assert triton.is_installed(home)


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path: Path, wheel: Wheel) -> None:
    with pytest.raises(ValueError, match="sha256"):
        triton.unpack_server(wheel, tmp_path / "triton", sha256="0" * 64)
    assert not (tmp_path / "triton").exists()


def legacy_install(wheel: Wheel, home: Path, stub: bytes | None = None) -> Path:
    """What the install before stamps left: server/ and libs/ renamed whole, then the stub copied and
    both binaries made executable in place (`stub`: a copy cut short, its chmods never done)."""
    server = triton.unpack_server(wheel, home)
    (server / triton.STAMP).unlink()
    if stub is not None:
        (server / "backends" / "python" / "triton_python_backend_stub").write_bytes(stub)
        for binary in (server / "backends" / "python" / "triton_python_backend_stub", server / "bin" / "tritonserver"):
            binary.chmod(0o644)
    return server


def test_an_install_from_before_stamps_is_redone_once(tmp_path: Path, wheel: Wheel) -> None:
    layout = StackLayout(root=tmp_path / "stack")
    home = layout.data_dir("triton")
    legacy_install(wheel, home)
    assert not triton.is_installed(home)  # nothing says it is complete
    assert triton.install_server(layout) == home / "server" and triton.is_installed(home)
    triton.install_server(layout)
    assert len(wheel.downloads) == 1


def test_an_interrupted_install_from_before_stamps_is_redone(tmp_path: Path, wheel: Wheel) -> None:
    layout = StackLayout(root=tmp_path / "stack")
    home = layout.data_dir("triton")
    legacy_install(wheel, home, stub=STUB[:1000])
    server = triton.install_server(layout)
    assert triton.is_installed(home) and len(wheel.downloads) == 1
    assert_complete(server)


@pytest.fixture
def loopback_server():
    """An HTTP server on 127.0.0.1 (an ephemeral port) that answers every GET 200 with Flink-like JSON."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"taskmanagers": 1, "slots-available": 4}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_loopback_health_checks_ignore_a_proxy_in_the_environment(
        tmp_path: Path, loopback_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9/")  # discard port: nothing answers there
    port = loopback_server
    layout = StackLayout(root=tmp_path, host="127.0.0.1", triton_http_port=port, flink_rest_port=port, s3_port=port)
    with pytest.raises(OSError):  # the proxy is in force for ordinary urllib calls...
        urllib.request.build_opener().open(f"http://127.0.0.1:{port}/", timeout=2)  # urlopen's is cached
    assert triton.ready(layout)  # ...but not for the stack's loopback checks
    assert flink.overview(layout) == {"taskmanagers": 1, "slots-available": 4}
    assert flink._jobmanager_up(layout) and flink._taskmanager_up(layout)
    assert s3.s3_healthy(layout)
