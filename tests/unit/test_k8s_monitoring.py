"""What operators look at, validated offline: the PrometheusRule (a strict schema of the Prometheus
Operator's PrometheusRule spec), the Grafana dashboard (JSON, its panels and queries), and every metric
name both use. A name must be a recording rule defined here, a gauge the job registers
(streaming.metrics.PipelineStats.register, run here on a recording group), or one of the names listed
below per exporter. tests/integration/test_k8s_metrics.py scrapes the local Flink and Triton to check
those lists against what the components really export.
"""
from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import yaml

from k8s_support import K8S_DIR, generated, kustomize, objects, one, rendered  # noqa: F401
from streaming.events import ErrorResult
from streaming.metrics import PipelineStats, all_error_codes

DASHBOARD = K8S_DIR / "base" / "monitoring" / "grafana-dashboard.json"
JOB_SCOPE = "flink_taskmanager_job_task_operator_imgstream_"  # Flink's Prometheus name of the job's group
# Flink's own metrics, as its Prometheus reporter names them: flink_<logical scope>_<name>
FLINK_BUILTIN = {
    "flink_jobmanager_job_numRestarts", "flink_jobmanager_job_uptime", "flink_jobmanager_job_lastCheckpointDuration",
    "flink_taskmanager_job_task_busyTimeMsPerSecond", "flink_taskmanager_job_task_operator_pendingRecords",
}
TRITON = {"nv_inference_queue_duration_us", "nv_inference_request_success", "nv_inference_compute_infer_duration_us"}
# exported only where there is a GPU (Triton's GPU metrics), or by the Kafka Exporter: not scrapeable on
# the local stack; names from Triton's metrics docs and danielqsj/kafka_exporter (the exporter Strimzi runs)
NOT_LOCAL = {"nv_gpu_utilization": "Triton GPU metrics (GPU pods only)",
             "kafka_consumergroup_lag": "Kafka Exporter (Strimzi kafkaExporter)"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "rate", "irate", "increase", "delta", "deriv", "absent", "clamp_min", "clamp_max", "label_replace",
    "histogram_quantile", "topk", "bottomk", "offset", "bool", "humanizePercentage",
}
# PrometheusRule.spec as the Prometheus Operator's CRD (monitoring.coreos.com/v1) declares it, strict
RULE_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["groups"],
    "properties": {"groups": {"type": "array", "minItems": 1, "items": {
        "type": "object", "additionalProperties": False, "required": ["name", "rules"],
        "properties": {
            "name": {"type": "string", "minLength": 1}, "interval": {"type": "string"},
            "query_offset": {"type": "string"}, "limit": {"type": "integer"},
            "partial_response_strategy": {"type": "string"}, "labels": {"type": "object"},
            "rules": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["expr"],
                "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                "properties": {
                    "alert": {"type": "string"}, "record": {"type": "string"},
                    "expr": {"type": ["string", "integer"]},
                    "for": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                                         r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                    "keep_firing_for": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                }}}}}}},
}
DASHBOARD_SCHEMA = {
    "type": "object", "required": ["uid", "title", "panels", "templating", "schemaVersion"],
    "properties": {
        "uid": {"type": "string", "pattern": r"^[a-zA-Z0-9_-]{1,40}$"},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["id", "type", "title", "gridPos", "targets", "datasource"],
            "properties": {
                "gridPos": {"type": "object", "required": ["x", "y", "w", "h"],
                            "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 23},
                                           "w": {"type": "integer", "minimum": 1, "maximum": 24}}},
                "targets": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["refId", "expr"],
                    "properties": {"expr": {"type": "string", "minLength": 1}}}},
            }}},
    },
}


class RecordingGroup:
    """A Flink metric group that records the Prometheus names of what is registered on it; its
    gauges are kept to be read as PyFlink reads them at a bundle end."""

    def __init__(self, prefix: str, names: set[str], gauges: list | None = None) -> None:
        self.prefix, self.names = prefix, names
        self.gauges = [] if gauges is None else gauges

    def gauge(self, name, value) -> None:
        self.names.add(self.prefix + name)
        self.gauges.append(value)

    def add_group(self, name):
        return RecordingGroup(f"{self.prefix}{name}_", self.names, self.gauges)


def job_metric_names() -> set[str]:
    """What the job exports once every error code has occurred (a code's gauge is registered at
    the first bundle end after its first error)."""
    names: set[str] = set()
    group, stats = RecordingGroup(JOB_SCOPE, names), PipelineStats()
    stats.register(group, in_flight=lambda: 0)
    for code in all_error_codes():
        stats.record(ErrorResult("id", "uri", code, "fetch", "message"))
    for read in list(group.gauges):  # a bundle end
        read()
    return names


def rule_spec(objects: list[dict]) -> dict:
    return one(objects, "PrometheusRule")["spec"]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def expressions(spec: dict, board: dict) -> list[str]:
    return ([str(r["expr"]) for g in spec["groups"] for r in g["rules"]]
            + [t["expr"] for p in board["panels"] for t in p["targets"]])


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """(names used as selectors, regexes used on __name__) of a PromQL expression."""
    regexes = set(re.findall(r'__name__\s*=~\s*"([^"]+)"', expr))
    bare = re.sub(r'"[^"]*"', '""', expr)                 # strings
    bare = re.sub(r"\{[^}]*\}", "{}", bare)                # label matchers
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)  # label lists
    bare = re.sub(r"\[[^\]]*\]", "", bare)                 # ranges, subqueries
    names = {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)
             if t not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", t)}
    return names, regexes


def promql_shape_problems(expr: str) -> list[str]:
    stack, pairs = [], {")": "(", "}": "{", "]": "["}
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in "({[":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return [f"unbalanced {ch!r} in {expr!r}"]
    return [f"unclosed {stack} in {expr!r}"] if stack else []


def name_problems(spec: dict, board: dict) -> list[str]:
    recorded = {r["record"] for g in spec["groups"] for r in g["rules"] if "record" in r}
    known = job_metric_names() | FLINK_BUILTIN | TRITON | NOT_LOCAL.keys() | recorded
    problems = []
    for expr in expressions(spec, board):
        problems += promql_shape_problems(expr)
        names, regexes = metric_names(expr)
        problems += [f"{name}: not a metric any component here exports" for name in sorted(names - known)]
        for regex in regexes:
            if not [n for n in job_metric_names() | FLINK_BUILTIN | TRITON if re.fullmatch(regex, n)]:
                problems.append(f"{regex}: matches no exported metric")
    return problems


def test_prometheus_rule_matches_the_operator_schema_and_pages_on_what_matters(objects):
    spec = rule_spec(objects)
    jsonschema.validate(spec, RULE_SCHEMA)
    alerts = {r["alert"]: r for g in spec["groups"] for r in g["rules"] if "alert" in r}
    assert {"ImgstreamKafkaLagGrowing", "ImgstreamJobRestarting", "ImgstreamErrorRateByCode",
            "ImgstreamTritonQueueTimeHigh"} <= alerts.keys()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
    assert "by (code)" in " ".join(str(r["expr"]) for g in spec["groups"] for r in g["rules"])


def test_dashboard_is_grafana_json_with_the_panels_operators_need():
    board = dashboard()
    jsonschema.validate(board, DASHBOARD_SCHEMA)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert {"datasource"} == {v["name"] for v in board["templating"]["list"] if v["type"] == "datasource"}
    text = " ".join(expressions({"groups": []}, board))
    for needed in ("imgstream:results:rate1m", "imgstream:errors_by_code:rate5m", f"{JOB_SCOPE}in_flight",
                   "latency_ms_.+_p50", "latency_ms_.+_p99", "lastCheckpointDuration", "imgstream:kafka_lag:sum",
                   "imgstream:triton_queue_us_per_request", "nv_inference_compute_infer_duration_us",
                   "nv_gpu_utilization"):
        assert needed in text, needed


def test_every_metric_name_is_exported_or_recorded(objects):
    assert not name_problems(rule_spec(objects), dashboard())


def test_dashboard_and_rules_ship_in_every_overlay(objects):
    cm = one(objects, "ConfigMap", "imgstream-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["grafana-dashboard.json"]) == dashboard()
    kafka = one(objects, "Kafka")["spec"]
    ref = kafka["kafka"]["metricsConfig"]["valueFrom"]["configMapKeyRef"]
    rules = yaml.safe_load(one(objects, "ConfigMap", ref["name"])["data"][ref["key"]])
    assert rules["rules"] and all("pattern" in r and "name" in r for r in rules["rules"])
    assert generated(objects, "ConfigMap", "kafka-metrics")["metadata"]["name"] == ref["name"]
    assert re.fullmatch(kafka["kafkaExporter"]["groupRegex"], "imgstream")
    assert re.fullmatch(kafka["kafkaExporter"]["topicRegex"], "image-requests")
    kafka_monitor = one(objects, "PodMonitor", "kafka")
    assert kafka_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "tcp-prometheus"


@pytest.mark.parametrize("defect", ["unknown-metric", "renamed-gauge", "bad-for", "unbalanced"])
def test_checks_catch_each_defect(rendered, defect):
    spec, board = copy.deepcopy(rule_spec(rendered["prod"])), dashboard()
    if defect == "unknown-metric":
        board["panels"][0]["targets"][0]["expr"] = "sum(rate(flink_taskmanager_job_task_operator_imgstream_result[1m]))"
        assert name_problems(spec, board) == [
            "flink_taskmanager_job_task_operator_imgstream_result: not a metric any component here exports"]
    elif defect == "renamed-gauge":
        board["panels"][0]["targets"][0]["expr"] = \
            'max({__name__=~"flink_taskmanager_job_task_operator_imgstream_latency_msec_.+"})'
        assert name_problems(spec, board) == ["flink_taskmanager_job_task_operator_imgstream_latency_msec_.+: "
                                              "matches no exported metric"]
    elif defect == "bad-for":
        spec["groups"][1]["rules"][0]["for"] = "15 minutes"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(spec, RULE_SCHEMA)
    else:
        spec["groups"][0]["rules"][0]["expr"] = "sum(rate(nv_inference_request_success[1m])"
        assert name_problems(spec, board)[0].startswith("unclosed ['(']")
