"""deploy/docker/install.sh, the image's install steps as one script: the Dockerfile runs it (and installs
nothing else itself), the script pins what it installs, parses (`bash -n`) and passes shellcheck (installed by
./run). tests/integration/test_k8s_app_mode.py runs it into a temporary prefix and
starts the job from there.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
SCRIPT = DOCKER / "install.sh"
# the Dockerfile's ARGs that the script checks against what it installs
CHECKED_ARGS = ("FLINK_VERSION", "KAFKA_CONNECTOR_VERSION", "KAFKA_CONNECTOR_SHA256")


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments): comments dropped, continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), " ".join(m.group(2).split())) for m in re.finditer(r"^(\w+)\s+(.*)$", joined, re.M)]


def commands(script: str) -> list[str]:
    """The script's lines with continuations joined and comments dropped."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(line.split()) for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()]


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_dockerfile_runs_the_install_script_and_installs_nothing_else():
    steps = instructions((DOCKER / "Dockerfile").read_text())
    copies = [args.split() for kind, args in steps if kind == "COPY"]
    assert ["deploy/docker/install.sh", "/opt/imgstream/install.sh"] in copies
    runs = [args for kind, args in steps if kind == "RUN"]
    (install,) = [run for run in runs if "install.sh" in run]
    assert "bash /opt/imgstream/install.sh --src /src --prefix /opt/imgstream" in install
    assert '--python "${PYTHON_VERSION}"' in install and "--flink-home /opt/flink" in install
    assert "--mount=type=bind,target=/src" in install  # the build context, for this step only
    assert "--mount=type=bind,from=uv,source=/uv,target=/usr/local/bin/uv" in install
    for arg in CHECKED_ARGS:
        assert f'{arg}="${{{arg}}}"' in install, f"the Dockerfile does not hand {arg} to the script"
    for run in runs:
        if run is not install:
            assert not re.search(r"\b(pip|uv|curl|wget|python3?)\b", run), f"installs outside install.sh: {run}"
    assert not [args for kind, args in steps if kind == "ADD"], "ADD fetches outside install.sh"
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert "!deploy/docker/install.sh" in ignore, "the script is not in the build context"


def test_the_install_script_checks_the_hash_of_everything_it_installs():
    text = SCRIPT.read_text()
    lines = commands(text)
    # one install command, uv's or pip's, both without dependency resolution or build isolation
    (uv_install,) = [line for line in lines if line.startswith('install=("$uv" pip install')]
    (pip_install,) = [line for line in lines if line.startswith('install=("$venv/bin/python" -m pip install')]
    for line in (uv_install, pip_install):
        assert "--no-deps" in line and "--no-build-isolation" in line, line
        assert not re.search(r"\s(-U|--upgrade|--pre|--constraint)\b", line), line
    installs = [line for line in lines if line.startswith('"${install[@]}"')]
    assert installs == ['"${install[@]}" --require-hashes -r "$work/tools.lock"',
                        '"${install[@]}" --require-hashes -r "$work/runtime.lock"',
                        '"${install[@]}" "$work/src"'], installs
    assert '"$venv/bin/python" -m pip check' in lines  # a dependency the lock's annotations missed fails
    assert not [line for line in lines if re.search(r"\bpip install\b", line) and not line.startswith("install=(")]
    # the build backend the package asks for is in the lock (installed first, with the lock's hashes)
    lock = (REPO / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock, re.M))
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]:
        requirement = Requirement(requirement)
        assert requirement.name in pins and requirement.specifier.contains(pins[requirement.name]), requirement
    # Python: uv installs the exact version the Dockerfile names
    assert any('"$uv" python install "$python"' in line for line in lines)
    assert re.search(r"^ARG PYTHON_VERSION=\d+\.\d+\.\d+$", (DOCKER / "Dockerfile").read_text(), re.M)
    # the connector: its row in jars.lock, compared by sha256 before it is installed
    assert '"$src/streaming/stack/jars.lock"' in text and '$6 == "flink-connector"' in text
    assert '[[ $actual == "$sha256" ]] || die' in text
    assert not any(re.search(r"\bcurl\b.*\|\s*(ba)?sh", line) for line in lines)


def test_the_install_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_the_install_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck is not None, "shellcheck is not installed (./run installs it with apt)"
    proc = subprocess.run([shellcheck, "--shell=bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("args, code, message", [
    ((), 2, "--prefix (or $PREFIX) is required"),
    (("--prefix", "p", "--bogus"), 2, "unknown argument: --bogus"),
    (("--prefix",), 2, "--prefix needs a value"),
    (("--help",), 0, "usage: install.sh --prefix DIR"),
])
def test_the_install_script_refuses_bad_arguments(tmp_path, args, code, message):
    proc = run_script(*args, cwd=tmp_path)
    assert proc.returncode == code and message in proc.stdout + proc.stderr, proc.stderr
    assert not (tmp_path / "p").exists()


def test_the_install_script_refuses_a_folder_that_is_not_the_repository(tmp_path):
    proc = run_script("--prefix", str(tmp_path / "p"), "--src", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1 and "is not the imgstream repository (no pyproject.toml)" in proc.stderr
    assert not (tmp_path / "p").exists()
