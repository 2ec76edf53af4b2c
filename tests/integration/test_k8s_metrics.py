"""Every metric name deploy/k8s's PrometheusRule and Grafana dashboard use is one the components really
export: scraped here from the local Triton (:8002/metrics) and from the local Flink running the classify
job (REST metric ids, named as Flink's Prometheus reporter names them: `flink_<logical scope>_<name>`
with every character outside [a-zA-Z0-9_:] replaced by `_`). Names that only exist on a GPU or in the
Kafka Exporter are listed, with why, in tests/unit/test_k8s_monitoring.py (NOT_LOCAL).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from streaming.ops import kafka_io
from streaming.stack.process import loopback_opener, running_pid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from k8s_support import K8S_DIR  # noqa: E402
from test_k8s_monitoring import FLINK_BUILTIN, NOT_LOCAL, TRITON, dashboard, job_metric_names  # noqa: E402

JMX_NAMES = K8S_DIR / "monitoring" / "JmxNames.java"


def _get(url: str):
    with loopback_opener().open(url, timeout=10) as response:
        return response.read().decode()


def prometheus_name(scope: str, parts: list[str]) -> str:
    return re.sub(r"[^a-zA-Z0-9_:]", "_", "_".join(["flink", scope, *parts]))


def flink_exported(rest: str, job_id: str) -> set[str]:
    """The job's metrics under the names Flink's Prometheus reporter gives them."""
    names = {prometheus_name("jobmanager_job", [m["id"]]) for m in json.loads(_get(f"{rest}/jobs/{job_id}/metrics"))}
    for vertex in json.loads(_get(f"{rest}/jobs/{job_id}"))["vertices"]:
        ids = [m["id"] for m in json.loads(_get(f"{rest}/jobs/{job_id}/vertices/{vertex['id']}/metrics"))]
        split = [i.split(".") for i in ids]
        operators = {p[1] for p in split if len(p) == 3 and p[2] == "numRecordsIn"}
        for parts in split:
            if len(parts) > 2 and parts[1] in operators:   # <subtask>.<operator>.<groups...>.<name>
                names.add(prometheus_name("taskmanager_job_task_operator", parts[2:]))
            else:                                          # <subtask>.<name>: task scope
                names.add(prometheus_name("taskmanager_job_task", parts[1:]))
    return names


def test_rule_and_dashboard_metrics_are_exported_by_the_local_flink_and_triton(layout, running_job, test_bucket):
    # PyFlink reports a Python operator's metrics at its bundle ends, and an error code's gauge is
    # registered after its first error: a prediction and an error first
    requests = [{"id": uuid.uuid4().hex, "uri": f"s3://{test_bucket}/photos/LadyBird.jpg"},
                {"id": uuid.uuid4().hex, "uri": f"s3://{test_bucket}/photos/no-such-photo.jpg"}]
    kafka_io.publish(layout.kafka_bootstrap, running_job.requests_topic, requests)
    results = list(kafka_io.read_results(layout.kafka_bootstrap, running_job.results_topic, count=2, timeout_s=180,
                                         ids={r["id"] for r in requests}))
    assert len(results) == 2
    codes = {r.get("error", {}).get("code") for r in results}
    assert "object_not_found" in codes, results
    seen = {n for n in job_metric_names() if "errors_by_code" not in n}
    expected = seen | {"flink_taskmanager_job_task_operator_imgstream_errors_by_code_object_not_found"} | FLINK_BUILTIN
    deadline, flink = time.monotonic() + 120, set()
    while time.monotonic() < deadline:   # the job's gauges appear once its operators have opened
        flink = flink_exported(layout.flink_rest, running_job.id)
        if expected <= flink:
            break
        time.sleep(2)
    assert not sorted(expected - flink), "used by the rules/dashboard, not exported by Flink"
    triton = set(re.findall(r"^# TYPE (\w+) ", _get(f"http://{layout.host}:{layout.triton_metrics_port}/metrics"), re.M))
    assert not sorted(TRITON - triton), "used by the rules/dashboard, not exported by Triton"
    # the regexes on __name__ (latency by stage, errors by code) match names Flink really exports
    text = json.dumps(dashboard())
    for regex in set(re.findall(r'__name__=~\\"([^\\]+)\\"', text)):
        assert [n for n in flink if re.fullmatch(regex, n)], regex
    assert not NOT_LOCAL.keys() & (flink | triton), "a NOT_LOCAL name is exported here: check it like the others"


def jmx_exporter_names(rules: list[dict], mbeans: list[str]) -> dict[str, set[str]]:
    """pattern -> the metric names the Prometheus JMX Exporter makes of the MBean attributes it matches
    (the first matching rule wins; `$n` in the name is the pattern's group n; lowercaseOutputName)."""
    out: dict[str, set[str]] = {rule["pattern"]: set() for rule in rules}
    for mbean in mbeans:
        for rule in rules:
            found = re.fullmatch(rule["pattern"], mbean)
            if found:
                name = re.sub(r"\$(\d+)", lambda m: found.group(int(m.group(1))), rule["name"])
                out[rule["pattern"]].add(re.sub(r"[^a-zA-Z0-9_:]", "_", name).lower())
                break
    return out


def test_kafka_jmx_rules_match_the_local_brokers_mbeans(layout, prepared):
    """Every rule of base/kafka/kafka-metrics.yml (Kafka.spec.kafka.metricsConfig) matches MBeans the
    local Kafka broker really registers: JmxNames.java lists them from the running broker's JVM."""
    pid = running_pid(layout.run_dir, "kafka")
    assert pid, "the stack's Kafka is not running"
    proc = subprocess.run([shutil.which("java") or "java", str(JMX_NAMES), str(pid)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mbeans = proc.stdout.splitlines()
    assert len(mbeans) > 1000
    rules = yaml.safe_load((K8S_DIR / "base" / "kafka" / "kafka-metrics.yml").read_text())["rules"]
    names = jmx_exporter_names(rules, mbeans)
    assert not [pattern for pattern, made in names.items() if not made], "rules that match no MBean"
    made = set().union(*names.values())
    assert {"kafka_server_replicamanager_underreplicatedpartitions", "kafka_controller_kafkacontroller_offlinepartitionscount",
            "kafka_server_brokertopicmetrics_messagesin_total", "kafka_network_requestmetrics_totaltimems"} <= made
