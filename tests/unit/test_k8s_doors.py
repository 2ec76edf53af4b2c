"""deploy/k8s locks its doors: who may reach which port of which pod (the NetworkPolicies, evaluated here
as the API server's CNI would for the pods the rendered objects create), a read-only Flink UI, PDBs,
topology spread, a PriorityClass on every pod, and a job that may read only its image buckets.

Strimzi's own generated policies (its listeners) are not modelled: the Kafka pods are left out here.
"""
from __future__ import annotations

import copy
import re
from urllib.parse import urlparse

import pytest

from k8s_support import (  # noqa: F401 (kustomize, objects, rendered: pytest fixtures)
    container_named, find, flink, generated, job_config, kustomize, objects, one, pod_templates, rendered,
    strimzi_pod_templates, triton_pod,
)

ANYONE = ("anyone",)
# Labels the Flink operator (native mode) puts on the pods: Flink's KubernetesJobManagerParameters /
# KubernetesTaskManagerParameters (`app: <cluster id>`, `component: jobmanager|taskmanager`, `type`).
FLINK_COMPONENTS = ("jobmanager", "taskmanager")
FLINK_PORT_KEYS = ("taskmanager.data.port", "taskmanager.rpc.port", "jobmanager.rpc.port", "blob.server.port",
                   "metrics.internal.query-service.port")
OPERATOR_NAMESPACE = "flink-operator"
INGRESS_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"


# --- a NetworkPolicy evaluator (ingress; matchLabels selectors, as these manifests use) -------------

def _selects(selector: dict, labels: dict) -> bool:
    assert "matchExpressions" not in selector, "this evaluator reads matchLabels only"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer(peer: dict) -> tuple:
    if "ipBlock" in peer:
        return ("ipBlock", peer["ipBlock"]["cidr"])
    pods = tuple(sorted(peer["podSelector"].get("matchLabels", {}).items())) if "podSelector" in peer else None
    if "namespaceSelector" in peer:
        ns = peer["namespaceSelector"].get("matchLabels", {})
        name = ns.get("kubernetes.io/metadata.name", f"namespaces labelled {sorted(ns.items())}" if ns else "any")
        return ("namespace", name) if pods is None else ("namespace-pods", name, pods)
    return ("pods", pods)


def allowed_peers(objects: list[dict], labels: dict, port: int, port_name: str | None = None) -> set[tuple]:
    """Who may open a connection to ``port`` of a pod with ``labels`` in this namespace: ANYONE when no
    policy selects the pod for ingress, else the union of the matching rules' peers (ANYONE for a rule
    without `from`)."""
    selecting = [p for p in find(objects, "NetworkPolicy") if _selects(p["spec"]["podSelector"], labels)
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return {ANYONE}
    peers: set[tuple] = set()
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (port, port_name) or (
                    isinstance(p.get("port"), int) and p["port"] <= port <= p.get("endPort", p["port"]))
                    for p in ports):
                continue
            peers |= {_peer(peer) for peer in rule["from"]} if rule.get("from") else {ANYONE}
    return peers


def flink_labels(objects: list[dict], component: str) -> dict:
    name = one(objects, "FlinkDeployment")["metadata"]["name"]
    return {"app": name, "component": component, "type": "flink-native-kubernetes"}


def template_labels(objects: list[dict], name: str) -> dict:
    return one(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]


def test_the_namespace_denies_ingress_by_default(objects):
    defaults = [p for p in find(objects, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert any(p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress") for p in defaults)
    # any pod this repository did not plan for: no one may reach it
    assert allowed_peers(objects, {"app": "something-new"}, 80) == set()


def test_flink_rpc_blob_and_data_ports_are_fixed_and_open_only_to_flink(objects):
    conf = one(objects, "FlinkDeployment")["spec"]["flinkConfiguration"]
    ports = [int(conf[key]) for key in FLINK_PORT_KEYS]  # fixed: a random port cannot be named by a policy
    assert sorted(ports) == [6121, 6122, 6123, 6124, 6125]
    flink = ("pods", (("app", one(objects, "FlinkDeployment")["metadata"]["name"]),))
    for component in FLINK_COMPONENTS:
        for port in ports:
            assert allowed_peers(objects, flink_labels(objects, component), port) == {flink}, (component, port)


def test_flink_rest_is_reached_only_by_the_operator_and_the_read_only_proxy(objects):
    conf = one(objects, "FlinkDeployment")["spec"]["flinkConfiguration"]
    proxy = tuple(sorted(template_labels(objects, "flink-ui-proxy").items()))
    peers = allowed_peers(objects, flink_labels(objects, "jobmanager"), int(conf["rest.port"]))
    assert peers == {("namespace", OPERATOR_NAMESPACE), ("pods", proxy)}
    monitoring = {("namespace", MONITORING_NAMESPACE)}
    for component in FLINK_COMPONENTS:
        assert allowed_peers(objects, flink_labels(objects, component), int(conf["metrics.reporter.prom.port"])) \
            == monitoring
    assert allowed_peers(objects, flink_labels(objects, "taskmanager"), int(conf["rest.port"])) == set()


def test_the_ui_proxy_and_triton_are_reached_only_by_their_clients(objects):
    proxy = container_named(one(objects, "Deployment", "flink-ui-proxy")["spec"]["template"]["spec"], "nginx")
    port = proxy["ports"][0]
    assert allowed_peers(objects, template_labels(objects, "flink-ui-proxy"), port["containerPort"], port["name"]) \
        == {("namespace", INGRESS_NAMESPACE)}
    triton = {p["name"]: p["containerPort"] for p in container_named(triton_pod(objects), "triton")["ports"]}
    flink = ("pods", (("app", one(objects, "FlinkDeployment")["metadata"]["name"]),))
    labels = template_labels(objects, "triton")
    assert allowed_peers(objects, labels, triton["grpc"], "grpc") == {flink}
    assert allowed_peers(objects, labels, triton["metrics"], "metrics") == {("namespace", MONITORING_NAMESPACE)}
    assert allowed_peers(objects, labels, triton["http"], "http") == set(), "HTTP inference: no one (probes exempt)"


# --- the read-only UI -----------------------------------------------------------------------------

def nginx_locations(conf: str) -> dict[str, str]:
    """`location` blocks of an nginx.conf: pattern -> body (nested braces kept)."""
    out = {}
    for found in re.finditer(r"location\s+([^{]+?)\s*\{", conf):
        depth, i = 1, found.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(conf[i], 0)
            i += 1
        out[found.group(1).strip()] = conf[found.end():i - 1]
    return out


def ui_problems(objects: list[dict]) -> list[str]:
    problems = []
    proxy_service = "flink-ui-proxy"
    for rule in one(objects, "Ingress")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            if path["backend"]["service"]["name"] != proxy_service:
                problems.append(f"Ingress path {path['path']} bypasses the read-only proxy")
    conf = generated(objects, "ConfigMap", "flink-ui-proxy")["data"]["nginx.conf"]
    for pattern, body in nginx_locations(conf).items():
        if "proxy_pass" in body and not re.search(r"limit_except\s+GET\s*\{\s*deny\s+all;\s*\}", body):
            problems.append(f"location {pattern} passes methods other than GET/HEAD to the REST API")
    if not any(re.search(r"yarn-\(cancel\|stop\)", p) and "return 403" in b for p, b in nginx_locations(conf).items()):
        problems.append("Flink's GET routes /jobs/<id>/yarn-cancel and yarn-stop are not blocked")
    return problems


def test_the_flink_ui_is_read_only(objects):
    assert not ui_problems(objects)
    conf = one(objects, "FlinkDeployment")["spec"]["flinkConfiguration"]
    assert conf["web.submit.enable"] == conf["web.cancel.enable"] == "false"


# --- disruptions, spreading, priority -------------------------------------------------------------

def _pdb_for(objects: list[dict], labels: dict) -> list[dict]:
    return [p for p in find(objects, "PodDisruptionBudget") if _selects(p["spec"]["selector"], labels)]


def test_disruption_budgets_cover_the_jobmanager_and_triton_and_never_the_taskmanagers(objects):
    for labels in (flink_labels(objects, "jobmanager"), template_labels(objects, "triton")):
        budgets = _pdb_for(objects, labels)
        assert len(budgets) == 1, labels
        assert budgets[0]["spec"].get("maxUnavailable") == 1, "one pod at a time, never a drain that blocks forever"
    # the JobManager's Deployment owns the TaskManager pods: a budget over them would count its
    # replicas as theirs (pdb.yaml), so that with one TaskManager a drain could never evict it
    assert _pdb_for(objects, flink_labels(objects, "taskmanager")) == []


def _spread_problems(where: str, pod: dict, labels: dict) -> list[str]:
    keys = {c["topologyKey"] for c in pod.get("topologySpreadConstraints", [])
            if _selects(c["labelSelector"], labels)}
    return [f"{where}: not spread over {k}" for k in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
            if k not in keys]


def test_triton_and_taskmanagers_spread_over_zones_and_nodes(objects):
    spec = one(objects, "FlinkDeployment")["spec"]
    taskmanager = spec["taskManager"]["podTemplate"]["spec"]
    assert not _spread_problems("taskmanager", taskmanager, flink_labels(objects, "taskmanager"))
    assert not _spread_problems("triton", triton_pod(objects), template_labels(objects, "triton"))


def test_every_pod_has_the_pipelines_priority_class(objects):
    classes = {p["metadata"]["name"] for p in find(objects, "PriorityClass")}
    assert classes
    pods = {where: pod for o in objects for where, pod in pod_templates(o) if "containers" in pod}
    pods.update(strimzi_pod_templates(objects))
    assert {"Deployment/triton", "FlinkDeployment/imgstream-classify", "Deployment/flink-ui-proxy"} <= pods.keys()
    missing = {where: pod.get("priorityClassName") for where, pod in pods.items()
               if pod.get("priorityClassName") not in classes}
    assert not missing


# --- egress and the TaskManagers' account ---------------------------------------------------------

def _in(address: str, cidr: str) -> bool:
    import ipaddress
    ip, net = ipaddress.ip_address(address), ipaddress.ip_network(cidr)
    return ip.version == net.version and ip in net


def egress_allowed(objects: list[dict], labels: dict, address: str) -> bool:
    """Whether a pod with ``labels`` may open a connection to ``address`` outside the cluster: no
    policy selects it for egress, or one of their rules' ipBlocks holds the address."""
    selecting = [p for p in find(objects, "NetworkPolicy") if _selects(p["spec"]["podSelector"], labels)
                 and "Egress" in p["spec"].get("policyTypes", [])]
    if not selecting:
        return True
    return any(not rule.get("to") or any("ipBlock" in peer and _in(address, peer["ipBlock"]["cidr"])
                                         and not any(_in(address, e) for e in peer["ipBlock"].get("except", []))
                                         for peer in rule["to"])
               for policy in selecting for rule in policy["spec"].get("egress", []))


def test_in_prod_no_pod_reaches_the_instance_metadata_service_and_everything_else_is_open(rendered):
    objects = rendered["prod"]
    pods = [flink_labels(objects, "jobmanager"), flink_labels(objects, "taskmanager"),
            template_labels(objects, "triton"), {"app": "anything-new"}]
    for labels in pods:
        assert not egress_allowed(objects, labels, "169.254.169.254"), labels  # IMDS: node role credentials
        assert not egress_allowed(objects, labels, "fd00:ec2::254"), labels
        for elsewhere in ("52.216.8.21", "10.100.0.1", "169.254.169.253", "2600:1f18::1"):  # S3, the API, DNS
            assert egress_allowed(objects, labels, elsewhere), (labels, elsewhere)
    policy = next(p for p in find(objects, "NetworkPolicy") if p["metadata"]["name"] == "deny-instance-metadata")
    assert {"namespaceSelector": {}} in policy["spec"]["egress"][0]["to"]  # pods of the cluster, whatever the CNI


def _rules_of(objects: list[dict], account: str) -> list[dict]:
    roles = {b["roleRef"]["name"] for b in find(objects, "RoleBinding")
             if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])}
    return [rule for r in find(objects, "Role") if r["metadata"]["name"] in roles for rule in r["rules"]]


def test_the_taskmanagers_have_an_account_that_only_reads_configmaps(rendered):
    for overlay, objects in rendered.items():
        spec = one(objects, "FlinkDeployment")["spec"]
        account = spec["flinkConfiguration"]["kubernetes.taskmanager.service-account"]
        assert account != spec["serviceAccount"], overlay
        assert _rules_of(objects, account) == [{"apiGroups": [""], "resources": ["configmaps"],
                                                "verbs": ["get", "list", "watch"]}], overlay
        assert any("create" in r["verbs"] and "pods" in r["resources"] for r in _rules_of(objects, spec["serviceAccount"]))
        accounts = {a["metadata"]["name"]: a for a in find(objects, "ServiceAccount")}
        irsa = [accounts[name]["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
                for name in (spec["serviceAccount"], account)]
        assert irsa[0] == irsa[1] and (irsa[0] is not None) == (overlay == "prod"), overlay  # both write to S3


# --- what the job may fetch -----------------------------------------------------------------------

def state_buckets(objects: list[dict]) -> set[str]:
    conf = one(objects, "FlinkDeployment")["spec"]["flinkConfiguration"]
    return {urlparse(v).netloc for v in conf.values() if isinstance(v, str) and v.startswith("s3://")}


def bucket_problems(objects: list[dict]) -> list[str]:
    config = job_config(flink(objects)[1])
    if not config.allowed_buckets:
        return ["the job may fetch from any bucket"]
    return [f"the job may fetch from {b}, which holds Flink's state" for b in
            sorted(set(config.allowed_buckets) & state_buckets(objects))]


def test_the_job_reads_only_its_image_buckets(rendered):
    for overlay, objects in rendered.items():
        assert state_buckets(objects) == {"imgstream-flink"}
        assert not bucket_problems(objects), overlay
    env = flink(rendered["prod"])[1]
    config = job_config(env)
    assert "IMGSTREAM_S3_REGION" in env and config.s3_region == env["IMGSTREAM_S3_REGION"], "prod names its region"


# --- each check catches the defect it exists for --------------------------------------------------

@pytest.mark.parametrize("defect", ["no-default-deny", "rpc-open", "rest-from-ingress", "ui-writes", "ui-bypass",
                                    "any-bucket", "state-bucket"])
def test_checks_catch_the_defects_they_exist_for(rendered, defect):
    objects = copy.deepcopy(rendered["prod"])
    policies = {p["metadata"]["name"]: p for p in find(objects, "NetworkPolicy")}
    jm = flink_labels(objects, "jobmanager")
    if defect == "no-default-deny":
        objects.remove(policies["default-deny-ingress"])
        assert allowed_peers(objects, {"app": "something-new"}, 80) == {ANYONE}
    elif defect == "rpc-open":
        policies["flink-cluster"]["spec"]["ingress"][0].pop("from")
        assert allowed_peers(objects, jm, 6123) == {ANYONE}
    elif defect == "rest-from-ingress":
        policies["flink-rest"]["spec"]["ingress"][0]["from"].append(
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": INGRESS_NAMESPACE}}})
        assert ("namespace", INGRESS_NAMESPACE) in allowed_peers(objects, jm, 8081)
    elif defect == "ui-writes":
        cm = generated(objects, "ConfigMap", "flink-ui-proxy")
        cm["data"]["nginx.conf"] = re.sub(r"limit_except GET \{[^}]*\}", "", cm["data"]["nginx.conf"])
        assert ui_problems(objects) == ["location / passes methods other than GET/HEAD to the REST API"]
    elif defect == "ui-bypass":
        backend = one(objects, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
        backend["service"] = {"name": "imgstream-classify-rest", "port": {"number": 8081}}
        assert ui_problems(objects) == ["Ingress path / bypasses the read-only proxy"]
    else:
        cm = next(o for o in objects if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].startswith("imgstream-job-config-"))
        if defect == "any-bucket":
            del cm["data"]["IMGSTREAM_ALLOWED_BUCKETS"]
            assert bucket_problems(objects) == ["the job may fetch from any bucket"]
        else:
            cm["data"]["IMGSTREAM_ALLOWED_BUCKETS"] = "imgstream-images,imgstream-flink"
            assert bucket_problems(objects) == ["the job may fetch from imgstream-flink, which holds Flink's state"]
