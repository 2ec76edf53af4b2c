"""Every metric name deploy/k8s's PrometheusRule and Grafana dashboard use is one the components really
export: scraped here from the local Triton (:8002/metrics) and from the local Flink running the classify
job (REST metric ids, named as Flink's Prometheus reporter names them: `flink_<logical scope>_<name>`
with every character outside [a-zA-Z0-9_:] replaced by `_`). Names that only exist on a GPU or in the
Kafka Exporter are listed, with why, in tests/unit/test_k8s_monitoring.py (NOT_LOCAL).
"""
from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from streaming import kafka_io

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_k8s_monitoring import FLINK_BUILTIN, NOT_LOCAL, TRITON, dashboard, job_metric_names  # noqa: E402


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
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
    # PyFlink reports a Python operator's metrics with its first bundle: one request and its result first
    request = {"id": uuid.uuid4().hex, "uri": f"s3://{test_bucket}/photos/LadyBird.jpg"}
    kafka_io.publish(layout.kafka_bootstrap, running_job.requests_topic, [request])
    assert list(kafka_io.read_results(layout.kafka_bootstrap, running_job.results_topic, count=1, timeout_s=180,
                                      ids={request["id"]}))
    expected = job_metric_names() | FLINK_BUILTIN
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
