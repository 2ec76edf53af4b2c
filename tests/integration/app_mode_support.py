"""Helpers for tests/integration/test_k8s_app_mode.py: the rendered FlinkDeployment turned into what a
Flink application cluster on this machine needs (a private FLINK_HOME, its config.yaml, the JobManager's
and TaskManager's command lines and environment), with only what Kubernetes alone provides replaced, and
the processes started in sessions of their own and stopped by process group.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import psutil
import yaml

from streaming.config import ENV_PREFIX
from streaming.stack.flink import FLINK_HOME as WHEEL_FLINK_HOME
from streaming.stack.job_config import kafka_config
from streaming.stack.layout import StackLayout
from tests.net_support import free_ports

IMAGE_PREFIX = "/opt/imgstream"  # deploy/docker/Dockerfile: install.sh --prefix
IMAGE_FLINK_HOME = "/opt/flink"  # the official Flink image's FLINK_HOME
# Ports each Flink process opens for itself: on Kubernetes every pod has its own address, here the
# JobManager and the TaskManager share one, so the TaskManager gets ports of its own (-D on its command line).
PER_PROCESS_PORTS = ("metrics.internal.query-service.port", "metrics.reporter.prom.port")
LOOPBACK = "127.0.0.1"
ADDRESS_KEYS = ("jobmanager.rpc.address", "jobmanager.bind-host", "taskmanager.bind-host", "taskmanager.host",
                "rest.address", "rest.bind-address")
LOG_TAIL_CHARS = 4000


# --- the Flink distribution -------------------------------------------------------------------------

def private_flink_home(dest: Path) -> Path:
    """The apache-flink wheel's Flink as a distribution of this test's own: bin/ and conf/ copied (the
    scripts take FLINK_HOME from bin/'s physical path; config.yaml is rewritten), lib/, opt/ and each
    plugin folder real folders of links to the wheel's jars (install.sh replaces or adds files there, it
    never writes through a link)."""
    dest.mkdir(parents=True)
    for folder in ("bin", "conf"):
        shutil.copytree(WHEEL_FLINK_HOME / folder, dest / folder)
    for folder in ("lib", "opt", "plugins"):
        for source in sorted((WHEEL_FLINK_HOME / folder).rglob("*")):
            target = dest / folder / source.relative_to(WHEEL_FLINK_HOME / folder)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source)
    return dest


def image_path(value: str, prefix: Path, flink_home: Path) -> str:
    """A path of the image (/opt/imgstream/..., /opt/flink/..., local:// URIs) mapped to this machine."""
    for image, here in ((IMAGE_PREFIX, prefix), (IMAGE_FLINK_HOME, flink_home)):
        for form in (image, f"local://{image}"):
            if value == form or value.startswith(form + "/"):
                return str(here) + value[len(form):]
    return value


def _flatten(tree: Mapping[str, Any], parent: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{parent}.{key}" if parent else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


@dataclasses.dataclass(frozen=True)
class LocalFlink:
    """The FlinkDeployment as a Flink application cluster on this machine."""

    flink_home: Path
    prefix: Path
    work: Path
    conf: dict[str, str]                  # the JobManager's config.yaml (the TaskManager's, but for its own ports)
    replaced: dict[str, tuple[str, str]]  # key -> (the FlinkDeployment's value, the value here)
    taskmanager_ports: dict[str, int]

    @property
    def rest_port(self) -> int:
        return int(self.conf["rest.port"])

    def rest_layout(self, layout: StackLayout) -> StackLayout:
        """`layout` with this cluster's REST port, for streaming.ops.jobs."""
        return dataclasses.replace(layout, host=LOOPBACK, flink_rest_port=self.rest_port)

    def write_conf(self) -> Path:
        folder = self.flink_home / "conf"
        lines = [f"{key}: {json.dumps(value)}" for key, value in sorted(self.conf.items())]
        (folder / "config.yaml").write_text("\n".join(lines) + "\n")
        return folder


def local_flink(deployment: dict, *, flink_home: Path, prefix: Path, work: Path, layout: StackLayout) -> LocalFlink:
    """The distribution's config.yaml (the image's) with the FlinkDeployment's flinkConfiguration and what the
    operator derives from its spec on top, minus what only Kubernetes provides: kubernetes.* (the operator's),
    Kubernetes HA (none: one JobManager, no restart to survive), s3:// folders (file:// folders under `work`:
    the wheel has no S3 plugin), the cluster's addresses and fixed ports (loopback, free ports: the session
    cluster of the local stack keeps its own)."""
    spec = deployment["spec"]
    conf = _flatten(yaml.safe_load((WHEEL_FLINK_HOME / "conf" / "config.yaml").read_text()))
    wanted = {key: str(value) for key, value in spec["flinkConfiguration"].items() if not key.startswith("kubernetes.")}
    # what the operator sets from the spec (jobManager/taskManager resources, job.parallelism)
    wanted["jobmanager.memory.process.size"] = str(spec["jobManager"]["resource"]["memory"])
    wanted["taskmanager.memory.process.size"] = str(spec["taskManager"]["resource"]["memory"])
    wanted["parallelism.default"] = str(spec["job"]["parallelism"])
    replaced: dict[str, tuple[str, str]] = {}

    if wanted.get("high-availability.type") == "kubernetes":  # leader election through ConfigMaps
        replaced["high-availability.type"] = ("kubernetes", "NONE")
        replaced["high-availability.storageDir"] = (wanted.pop("high-availability.storageDir", ""), "(none)")
        wanted["high-availability.type"] = "NONE"

    port_keys = sorted(key for key in wanted if key.endswith(".port"))
    per_process = [key for key in PER_PROCESS_PORTS if key in wanted]
    ports = free_ports(len(port_keys) + len(per_process))  # distinct, all at once
    local_ports = dict(zip(port_keys, ports))
    taskmanager_ports = dict(zip(per_process, ports[len(port_keys):]))

    def here(key: str, value: str) -> str:
        if value.startswith("s3://"):
            return (work / "s3" / value[len("s3://"):]).as_uri()
        if key in local_ports:
            return str(local_ports[key])
        if key == "s3.endpoint":
            return layout.s3_endpoint  # MinIO in the dev cluster; unused here (no S3 plugin in the wheel)
        return image_path(value, prefix, flink_home)

    for key, value in wanted.items():
        local = here(key, value)
        if local != value:
            replaced[key] = (value, local)
        conf[key] = local
    for key in ADDRESS_KEYS:  # Kubernetes: the pods' addresses and the JobManager's Service
        conf[key] = LOOPBACK
    conf["io.tmp.dirs"] = str(work / "tmp")
    conf["env.pid.dir"] = str(work / "pid")  # not /tmp, which the session cluster's scripts use
    for folder in ("tmp", "pid", "log"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    return LocalFlink(flink_home, prefix, work, conf, replaced, taskmanager_ports)


# --- the pods' environment --------------------------------------------------------------------------

def job_environment(pod_env: Mapping[str, Any], *, layout: StackLayout, secrets: Mapping[tuple[str, str], str],
                    overrides: Mapping[str, str]) -> dict[str, str]:
    """The rendered pod environment (k8s_support.container_env) with the Secrets' values from `secrets`,
    Kafka's settings the local stack's (Strimzi's TLS listener, its CA and the KafkaUser exist only in the
    cluster), then `overrides` (the other services' addresses, this run's topics and bucket)."""
    env: dict[str, str] = {}
    for name, value in pod_env.items():
        if name.startswith(ENV_PREFIX + "KAFKA_"):
            continue
        if isinstance(value, tuple):
            kind, *ref = value
            assert kind == "secret", f"{name}: {value} is neither a value nor a Secret"
            assert tuple(ref) in secrets, f"{name}: Secret {ref} has no local value"
            env[name] = secrets[tuple(ref)]
        else:
            env[name] = str(value)
    env.update({ENV_PREFIX + key.upper(): value for key, value in kafka_config(layout).to_mapping().items()
                if key.startswith("kafka_")})
    env.update(overrides)
    return env


def process_environment(local: LocalFlink, job_env: Mapping[str, str]) -> dict[str, str]:
    """The image's environment (FLINK_HOME, PATH with the venv first) + the pod's."""
    java = shutil.which("java")
    assert java, "no java on PATH"
    path = [str(local.prefix / "venv" / "bin"), str(local.flink_home / "bin"), str(Path(java).resolve().parent),
            "/usr/local/bin", "/usr/bin", "/bin"]
    env = {"PATH": os.pathsep.join(path), "HOME": os.environ.get("HOME", str(local.work)), "LANG": "C.UTF-8",
           "FLINK_HOME": str(local.flink_home), "FLINK_CONF_DIR": str(local.flink_home / "conf"),
           "FLINK_LOG_DIR": str(local.work / "log")}
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    return {**env, **job_env}


# --- processes --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Started:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n{text[-LOG_TAIL_CHARS:]}"


def start(name: str, argv: list[str], env: Mapping[str, str], cwd: Path) -> Started:
    """`argv` in a session (and process group) of its own, output to `cwd`/`name`.log."""
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Started(name, proc, log)


def stop(started: Started, timeout_s: float = 30) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after `timeout_s`."""
    pgid = started.proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            started.proc.poll()  # reap the leader: a zombie still counts as a member
            time.sleep(0.5)
        if not _group_alive(pgid):
            break
    started.proc.wait(timeout=timeout_s)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def leftovers(marker: Path) -> list[psutil.Process]:
    """Processes whose command line names `marker` (the test's folder: the prefix, the private FLINK_HOME)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(str(marker) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found
