"""Every flinkConfiguration key of every overlay is one Flink 2.2.1 or the Flink Kubernetes Operator 1.15.0
knows, none is deprecated, and every value parses as its option's type, checked by Flink's own code.

deploy/k8s/config-keys/FlinkConfigCheck.java runs on the installed PyFlink's jars (flink-dist,
flink-python, the Prometheus reporter plugin): it reads their ConfigOption constants, adds the
operator's options from deploy/k8s/config-keys/operator-1.15.0.tsv (generated from the operator's
sources at release-1.15.0, see operator_options.py there), and parses each value with Flink's
Configuration. State backends and HA modes are resolved as Flink resolves them.
"""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from pathlib import Path

import pyflink
import pytest

from k8s_support import K8S_DIR, OVERLAYS, kustomize, one, render  # noqa: F401 (kustomize: a pytest fixture)

CHECKER = K8S_DIR / "config-keys" / "FlinkConfigCheck.java"
OPERATOR_KEYS = K8S_DIR / "config-keys" / "operator-1.15.0.tsv"
FLINK_VERSION = importlib.metadata.version("apache-flink")
# each a defect the check exists for: (key, value, verdict)
BROKEN = {
    "backend": ("state.backend.type", "rocksdbx", "invalid"),
    "typo-autoscaler": ("job.autoscaler.utilisation.target", "0.7", "unknown"),
    "typo-flink": ("execution.checkpointing.intervall", "10s", "unknown"),
    "deprecated-target": ("job.autoscaler.target.utilization", "0.7", "deprecated"),
    "deprecated-boundary": ("job.autoscaler.target.utilization.boundary", "0.2", "deprecated"),
    "deprecated-flink": ("state.backend", "hashmap", "deprecated"),  # state.backend.type's old key
    "duration": ("job.autoscaler.metrics.window", "5 mins and a bit", "invalid"),
    "enum": ("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELATION", "invalid"),
    "integer": ("taskmanager.numberOfTaskSlots", "four", "invalid"),
    "ha": ("high-availability.type", "kubernetess", "invalid"),
    "reporter": ("metrics.reporter.prom.portt", "9249", "unknown"),
}


def flink_jars() -> list[Path]:
    home = Path(pyflink.__file__).parent
    jars = [home / "lib" / f"flink-dist-{FLINK_VERSION}.jar", home / "opt" / f"flink-python-{FLINK_VERSION}.jar",
            *sorted((home / "plugins" / "metrics-prometheus").glob("*.jar"))]
    missing = [str(j) for j in jars if not j.is_file()]
    if missing:
        pytest.fail(f"the installed PyFlink {FLINK_VERSION} lacks {missing}")
    return jars


@pytest.fixture(scope="session")
def verdicts(kustomize, tmp_path_factory) -> dict[str, dict[str, tuple[str, str]]]:
    """label -> key -> (verdict, detail), for every overlay's flinkConfiguration and for BROKEN."""
    java = shutil.which("java")
    if java is None:
        pytest.fail("`java` is not on PATH (PyFlink needs Java 17 too)")
    lines = []
    for overlay in OVERLAYS:
        conf = one(render(kustomize, K8S_DIR / "overlays" / overlay), "FlinkDeployment")["spec"]["flinkConfiguration"]
        for key, value in conf.items():
            assert isinstance(value, str) and "\t" not in value and "\n" not in value, (overlay, key)
            lines.append(f"{overlay}\t{key}\t{value}")
    lines += [f"broken-{name}\t{key}\t{value}" for name, (key, value, _) in BROKEN.items()]
    entries = tmp_path_factory.mktemp("flink-config") / "entries.tsv"
    entries.write_text("\n".join(lines) + "\n")
    classpath = ":".join(map(str, flink_jars()))
    proc = subprocess.run([java, "-cp", classpath, str(CHECKER), str(OPERATOR_KEYS), str(entries)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for line in proc.stdout.splitlines():
        label, verdict, key, detail = line.split("\t", 3)
        out.setdefault(label, {})[key] = (verdict, detail)
    assert sum(map(len, out.values())) == len(lines), "the checker skipped entries"
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_flink_configuration_keys_are_known_current_and_parse(verdicts, overlay):
    checked = verdicts[overlay]
    assert {"state.backend.type", "job.autoscaler.enabled", "python.executable"} <= checked.keys()
    problems = {key: result for key, result in checked.items() if result[0] != "ok"}
    assert not problems


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_checker_rejects_a_broken_entry(verdicts, name):
    key, _, verdict = BROKEN[name]
    assert verdicts[f"broken-{name}"][key][0] == verdict


def test_operator_key_list_is_the_operators():
    rows = [line.split("\t") for line in OPERATOR_KEYS.read_text().splitlines() if not line.startswith("#")]
    keys = {row[0]: row[1:] for row in rows}
    assert all(len(row) == 3 for row in rows)
    assert keys["job.autoscaler.utilization.target"] == ["Double", "current"]
    assert keys["job.autoscaler.target.utilization"] == ["Double", "deprecated-for:job.autoscaler.utilization.target"]
    assert keys["job.autoscaler.target.utilization.boundary"][1] == "deprecated"
    assert keys["kubernetes.operator.savepoint.history.max.age"] == ["Duration", "current"]
    assert len(keys) > 150
