"""Apache Flink standalone session cluster from the `apache-flink` wheel's own bin/ and conf/.

JobManager and TaskManager run in the foreground under the stack's process manager, with
a generated config.yaml in the stack folder (the wheel's own conf/ is never edited).
Python UDFs run in process mode on the project's venv.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyflink

from streaming.stack.layout import StackLayout
from streaming.stack.process import ServiceSpec, loopback_opener

FLINK_HOME = Path(pyflink.__file__).parent
# Sized for a 2-core, 24 GB machine shared with Kafka, Triton and S3Proxy. Under ~1.7 GB the
# TaskManager hit Java OOM on 150 KB records and then hung RUNNING with no output.
JOBMANAGER_MEMORY = "1024m"
TASKMANAGER_MEMORY = "3072m"
TASK_SLOTS = 4  # tests run a session job beside per-test jobs; benchmarks use parallelism 2
# Each JVM runs two Pekko actor systems (RPC and metrics), and each one's scheduler thread wakes at
# every tick, 100 times a second by default, busy or idle: 6-7 ms of CPU a second per thread here,
# ~25 ms/s for the JobManager and a TaskManager together. Flink's scheduled RPC work (heartbeats every
# 2 s, timeouts, restart back-off) is seconds apart, so a 100-ms tick only rounds those delays up to
# the next tenth of a second. Pekko reads its settings from system properties (deploy/k8s does the same).
PEKKO_TICK = "-Dpekko.scheduler.tick-duration=100ms"


def flink_settings(layout: StackLayout) -> dict[str, str]:
    data = layout.data_dir("flink")
    python = sys.executable
    return {
        "jobmanager.rpc.address": layout.host,
        "jobmanager.rpc.port": str(layout.flink_rpc_port),
        "jobmanager.bind-host": layout.host,
        "jobmanager.memory.process.size": JOBMANAGER_MEMORY,
        "taskmanager.bind-host": layout.host,
        "taskmanager.host": layout.host,
        "taskmanager.memory.process.size": TASKMANAGER_MEMORY,
        "taskmanager.numberOfTaskSlots": str(TASK_SLOTS),
        "parallelism.default": "1",
        "rest.address": layout.host,
        "rest.bind-address": layout.host,
        "rest.port": str(layout.flink_rest_port),
        "web.submit.enable": "true",
        "web.cancel.enable": "true",
        "execution.checkpointing.dir": (data / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (data / "savepoints").as_uri(),
        # notice a lost TaskManager in seconds, not the default 50 s
        "heartbeat.interval": "2000",
        "heartbeat.timeout": "10000",
        "python.execution-mode": "process",
        "python.executable": python,
        "python.client.executable": python,
        "io.tmp.dirs": str(data / "tmp"),
        "env.java.opts.all": _wheel_java_opts(),
        # the TaskManager touches its whole heap at start: its RSS is its footprint from the first
        # minute, so RSS that grows later is a leak, not heap pages the GC reaches for the first time
        "env.java.opts.taskmanager": f"-XX:+AlwaysPreTouch {PEKKO_TICK}",
        "env.java.opts.jobmanager": PEKKO_TICK,
    }


def _wheel_java_opts() -> str:
    """The --add-opens/--add-exports list the wheel's config.yaml ships (needed on Java 17)."""
    for line in (FLINK_HOME / "conf" / "config.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("all: --add-exports"):
            return stripped[len("all: "):]
    raise RuntimeError("the apache-flink wheel's config.yaml has no env.java.opts.all")


def write_conf(layout: StackLayout) -> Path:
    """A conf/ folder for the stack: the wheel's logging files + our config.yaml."""
    conf = layout.data_dir("flink") / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties",
                 "log4j-session.properties"):
        shutil.copy2(FLINK_HOME / "conf" / name, conf / name)
    lines = [f"{key}: {json.dumps(value)}" for key, value in flink_settings(layout).items()]
    (conf / "config.yaml").write_text("\n".join(lines) + "\n")
    for sub in ("checkpoints", "savepoints", "tmp", "log"):
        (layout.data_dir("flink") / sub).mkdir(parents=True, exist_ok=True)
    return conf


def flink_env(layout: StackLayout) -> dict[str, str]:
    data = layout.data_dir("flink")
    return {
        "FLINK_HOME": str(FLINK_HOME),
        "FLINK_CONF_DIR": str(data / "conf"),
        "FLINK_LOG_DIR": str(data / "log"),
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
    }


def overview(layout: StackLayout) -> dict | None:
    try:
        with loopback_opener().open(f"{layout.flink_rest}/overview", timeout=2) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


def _jobmanager_up(layout: StackLayout) -> bool:
    return overview(layout) is not None


def _taskmanager_up(layout: StackLayout) -> bool:
    info = overview(layout)
    return bool(info and info.get("taskmanagers", 0) >= 1)


def flink_services(layout: StackLayout) -> list[ServiceSpec]:
    write_conf(layout)
    env = flink_env(layout)
    bin_dir = FLINK_HOME / "bin"
    jm = ServiceSpec("flink-jobmanager", ("bash", str(bin_dir / "jobmanager.sh"), "start-foreground"),
                     cwd=layout.data_dir("flink"), env=env, health=lambda: _jobmanager_up(layout),
                     ready_timeout_s=120)
    tm = ServiceSpec("flink-taskmanager", ("bash", str(bin_dir / "taskmanager.sh"), "start-foreground"),
                     cwd=layout.data_dir("flink"), env=env, health=lambda: _taskmanager_up(layout),
                     ready_timeout_s=120)
    return [jm, tm]
