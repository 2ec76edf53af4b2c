"""deploy/k8s: every overlay renders with kustomize and validates offline (Kubernetes OpenAPI schemas,
Flink Kubernetes Operator 1.15.0 and Strimzi 1.2.0 CRDs from ../shared/crds or $IMGSTREAM_CRDS_DIR), its
names, ports, topics, models and IMGSTREAM_* settings are this repository's, and it passes a security lint.
deploy/docker/Dockerfile pins what the project pins. kustomize is built once from the Go module proxy into
.stack/tools/bin (about a minute and a half on two cores the first time).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from tritonclient.grpc import model_config_pb2

from streaming import contract, infer
from streaming.config import ENV_PREFIX, PipelineConfig
from streaming.ops.kafka_io import REQUESTS_TOPIC_CONFIGS
from streaming.stack.artifacts import read_lock
from streaming.stack.layout import StackLayout
from k8s_support import (  # noqa: F401 (build_repository, kustomize, objects, rendered: pytest fixtures)
    K8S_DIR, REPO, ContainerView, build_repository, builtin_errors, container_env, container_named, containers,
    crds_dir, find, flink, generated, job_config, kustomize, lint, load_crd_schemas, model_config, mutated, objects,
    one, pod_templates, ref, rendered, run_script, schema_errors, triton_pod,
)

CLUSTER_SCOPED = {"Namespace", "PriorityClass"}
INSTALL_SCRIPT = REPO / "deploy" / "docker" / "install.sh"
K8S_VERSIONS = ("1.30", "1.37")  # oldest and newest Kubernetes the manifests are validated for
# CRDs not in ../shared/crds: test_flink_job_ui_and_monitoring_targets checks the monitors' selectors and
# ports, test_k8s_monitoring.py the PrometheusRule
NO_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule")}
# containers that cannot have a read-only root filesystem, and why
WRITABLE_ROOT = {
    ("FlinkDeployment/imgstream-classify", "flink-main-container"):
        "the official Flink image's docker-entrypoint.sh rewrites $FLINK_HOME/conf/config.yaml on every start, "
        "and Flink/PyFlink write logs and Python worker files under $FLINK_HOME",
}
# Secrets the manifests read but do not define: created by an operator or by hand (README says how)
EXTERNAL_SECRETS = {"imgstream-s3"}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|CREDENTIAL|ACCESS_KEY|PRIVATE)", re.I)
SECRET_TEXT = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|password=\"[^\"$]")


# --- fixtures (kustomize, rendered, objects, build_repository: k8s_support) ------------------------

def require_crds(folder: Path) -> dict:
    if not folder.is_dir():
        pytest.fail(f"CRD folder {folder} is missing: set $IMGSTREAM_CRDS_DIR to the folder that holds the "
                    "Flink Kubernetes Operator 1.15.0 and Strimzi 1.2.0 CRD files")
    schemas = load_crd_schemas(folder)
    if not schemas:
        pytest.fail(f"no CustomResourceDefinition in {folder}")
    return schemas


@pytest.fixture(scope="session")
def crd_schemas() -> dict:
    return require_crds(crds_dir())


_run_script = run_script


# --- rendering and schemas ------------------------------------------------------------------------

def test_overlays_render_the_whole_system(objects):
    kinds = {o["kind"] for o in objects}
    assert {"FlinkDeployment", "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Deployment", "Service",
            "HorizontalPodAutoscaler", "ServiceMonitor", "Ingress"} <= kinds
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "duplicate objects"
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == "imgstream", ref(obj)
        else:
            assert "namespace" not in obj["metadata"], ref(obj)


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_builtin_objects_match_kubernetes_openapi(objects, crd_schemas, k8s_version):
    checked = [o for o in objects if (o["apiVersion"], o["kind"]) not in crd_schemas.keys() | NO_SCHEMA]
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= {o["kind"] for o in checked}
    problems = {ref(o): errors for o in checked if (errors := builtin_errors(o, k8s_version))}
    assert not problems


def test_custom_resources_match_operator_crds(objects, crd_schemas):
    checked = [o for o in objects if (o["apiVersion"], o["kind"]) in crd_schemas]
    assert {o["kind"] for o in checked} >= {"FlinkDeployment", "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    problems = {ref(o): errors for o in checked
                if (errors := schema_errors(o, crd_schemas[(o["apiVersion"], o["kind"])]))}
    assert not problems


def test_validators_reject_broken_objects(rendered, crd_schemas, tmp_path):
    objects = rendered["dev"]
    flink_deployment, topic = one(objects, "FlinkDeployment"), one(objects, "KafkaTopic", "image-requests")
    schema = crd_schemas[(flink_deployment["apiVersion"], "FlinkDeployment")]
    assert schema_errors(mutated(flink_deployment, "spec/job/upgradeMode", "sometimes"), schema)
    assert schema_errors(mutated(flink_deployment, "spec/jobb", {}), schema)
    assert schema_errors(mutated(topic, "spec/partitions", "many"), crd_schemas[(topic["apiVersion"], "KafkaTopic")])
    triton = one(objects, "Deployment", "triton")
    assert builtin_errors(mutated(triton, "spec/template/spec/containers/0/imagePullPolicyy", "Always"), "1.30")
    with pytest.raises(pytest.fail.Exception):
        require_crds(tmp_path / "missing")
    broken = ContainerView("Deployment/x", "c", "nvcr.io/nvidia/tritonserver:latest", {}, {}, {})
    assert len(lint([broken], WRITABLE_ROOT)) >= 5


# --- this repository's names ----------------------------------------------------------------------

def test_job_settings_are_pipeline_config_fields(objects):
    deployment, env = flink(objects)
    settings = {k for k in env if k.startswith(ENV_PREFIX)}
    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    assert {k[len(ENV_PREFIX):].lower() for k in settings} <= fields.keys()
    config = job_config(env)  # parses and validates every value
    secret_fields = {f"{ENV_PREFIX}{n.upper()}" for n, f in fields.items() if "Secret" in str(f.type)}
    for name in settings & secret_fields:
        assert isinstance(env[name], tuple) and env[name][0] == "secret", f"{name} must come from a Secret"
    assert deployment["spec"]["job"]["parallelism"] == config.parallelism


def test_secrets_are_referenced_never_written(objects):
    generated_by_strimzi = {u["metadata"]["name"] for u in find(objects, "KafkaUser")}
    readme = (K8S_DIR / "README.md").read_text(encoding="utf-8")
    for obj in objects:
        assert obj["kind"] != "Secret", f"{ref(obj)}: a Secret in the manifests"
        if obj["kind"] == "ConfigMap":
            assert not [k for k in obj.get("data", {}) if SECRET_NAME.search(k)], ref(obj)
        if obj["kind"] == "FlinkDeployment":
            assert not [k for k in obj["spec"]["flinkConfiguration"] if re.search(r"secret|password|access-key", k)]
    for _, pod in (t for o in objects for t in pod_templates(o)):
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            for name, value in container_env(objects, c).items():
                if isinstance(value, tuple) and value[0] == "secret":
                    assert value[1] in generated_by_strimzi or (value[1] in EXTERNAL_SECRETS and value[1] in readme)
                else:
                    assert not SECRET_NAME.search(name), f"{c['name']}: {name} is written in the manifest"
    assert not SECRET_TEXT.search(yaml.safe_dump_all(objects))


def test_kafka_matches_the_job(objects):
    _, env = flink(objects)
    config = job_config(env)
    kafka, users = one(objects, "Kafka"), {u["metadata"]["name"]: u for u in find(objects, "KafkaUser")}
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in find(objects, "KafkaTopic")}
    stack = StackLayout()
    assert (config.requests_topic, config.results_topic) == (stack.requests_topic, stack.results_topic)
    assert {config.requests_topic, config.results_topic} <= topics.keys()
    for obj in find(objects, "KafkaTopic") + find(objects, "KafkaUser") + find(objects, "KafkaNodePool"):
        assert obj["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"], ref(obj)
    host, port = config.kafka_bootstrap.rsplit(":", 1)
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    listeners = [li for li in kafka["spec"]["kafka"]["listeners"] if str(li["port"]) == port]
    assert len(listeners) == 1, f"no listener on port {port}"
    listener = listeners[0]
    auth = listener.get("authentication", {}).get("type")
    assert config.kafka_security_protocol == {(False, None): "PLAINTEXT", (True, None): "SSL",
                                              (False, "scram-sha-512"): "SASL_PLAINTEXT",
                                              (True, "scram-sha-512"): "SASL_SSL"}[(listener["tls"], auth)]
    if auth == "scram-sha-512":
        assert config.kafka_sasl_mechanism == "SCRAM-SHA-512"
        user = users[config.kafka_sasl_username]
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert env[f"{ENV_PREFIX}KAFKA_SASL_PASSWORD"] == ("secret", config.kafka_sasl_username, "password")
        granted = {(a["resource"]["type"], a["resource"].get("name"), a["resource"].get("patternType", "literal"), op)
                   for a in user["spec"]["authorization"]["acls"] for op in a["operations"]}
        needed = {("topic", config.requests_topic, "literal", "Read"),
                  ("topic", config.results_topic, "literal", "Write"),
                  ("group", config.consumer_group, "literal", "Read")}
        if config.delivery_guarantee == "exactly_once":
            needed.add(("transactionalId", config.transactional_id_prefix, "prefix", "Write"))
        assert needed <= granted
    for peer in listener.get("networkPolicyPeers", []):
        assert peer["podSelector"]["matchLabels"] == {"app": one(objects, "FlinkDeployment")["metadata"]["name"]}
    broker_config = kafka["spec"]["kafka"].get("config", {})
    assert int(broker_config.get("transaction.max.timeout.ms", 900_000)) >= config.transaction_timeout_ms
    # the requests topic keeps batches uncompressed, as `job submit` requires (kafka_io.REQUESTS_TOPIC_CONFIGS)
    requests_config = topics[config.requests_topic]["spec"].get("config", {})
    for key, value in REQUESTS_TOPIC_CONFIGS.items():
        assert requests_config.get(key, broker_config.get(key)) == value, (key, requests_config)


def test_partitions_and_replicas_fit_the_job_and_brokers(objects):
    deployment, env = flink(objects)
    config = job_config(env)
    topics = {t["metadata"]["name"]: t["spec"] for t in find(objects, "KafkaTopic")}
    max_parallelism = int(deployment["spec"]["flinkConfiguration"]["job.autoscaler.vertex.max-parallelism"])
    partitions = topics[config.requests_topic]["partitions"]
    assert partitions >= max_parallelism >= config.parallelism
    assert partitions % config.parallelism == 0, "partitions should spread evenly over the initial subtasks"
    brokers = sum(p["spec"]["replicas"] for p in find(objects, "KafkaNodePool") if "broker" in p["spec"]["roles"])
    assert any("controller" in p["spec"]["roles"] for p in find(objects, "KafkaNodePool"))
    broker_config = one(objects, "Kafka")["spec"]["kafka"].get("config", {})
    for name, spec in topics.items():
        min_isr = int(spec.get("config", {}).get("min.insync.replicas", broker_config.get("min.insync.replicas", 1)))
        assert spec["replicas"] <= brokers and (spec["replicas"] == 1 or min_isr < spec["replicas"]), name
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        assert int(broker_config.get(key, 1)) <= brokers, key


def test_triton_service_ports_and_probes(objects):
    stack, config = StackLayout(), job_config(flink(objects)[1])
    service, pod = one(objects, "Service", "triton"), triton_pod(objects)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {n: p["port"] for n, p in ports.items()} == {
        "http": stack.triton_http_port, "grpc": stack.triton_grpc_port, "metrics": stack.triton_metrics_port}
    assert config.triton_grpc == f"{service['metadata']['name']}:{ports['grpc']['port']}"
    triton = container_named(pod, "triton")
    container_ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert {p["targetPort"] for p in ports.values()} <= container_ports.keys()
    assert container_ports == {n: p["port"] for n, p in ports.items()}
    labels = one(objects, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert triton[probe]["httpGet"] == {"path": path, "port": "http"}, probe


def test_flink_job_ui_and_monitoring_targets(objects):
    deployment = one(objects, "FlinkDeployment")
    name, conf = deployment["metadata"]["name"], deployment["spec"]["flinkConfiguration"]
    assert int(conf["rest.port"]) == StackLayout().flink_rest_port
    # the Ingress reaches the read-only proxy, and the proxy the operator's REST Service
    backend = one(objects, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    proxy = one(objects, "Deployment", backend["name"])
    assert one(objects, "Service", backend["name"])["spec"]["selector"].items() <= \
        proxy["spec"]["template"]["metadata"]["labels"].items()
    nginx = generated(objects, "ConfigMap", "flink-ui-proxy")["data"]["nginx.conf"]
    upstream = re.search(r"set \$flink_rest (\S+);", nginx).group(1)
    namespace = deployment["metadata"]["namespace"]
    assert upstream == f"http://{name}-rest.{namespace}.svc.cluster.local:{StackLayout().flink_rest_port}"
    from flink_jobs import JOB_NAME  # classify.py's default name (flink_jobs/__init__.py: no PyFlink import)

    assert deployment["spec"]["job"]["args"][-1] == JOB_NAME
    assert one(objects, "PodMonitor", "imgstream-flink")["spec"]["selector"]["matchLabels"] == {"app": name}
    main = container_named(deployment["spec"]["podTemplate"]["spec"], "flink-main-container")
    assert {p["name"]: p["containerPort"] for p in main["ports"]}["metrics"] == int(conf["metrics.reporter.prom.port"])
    service = one(objects, "Service", "triton")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    policy = one(objects, "NetworkPolicy", "triton")
    assert {"app": name} in [p["podSelector"]["matchLabels"] for r in policy["spec"]["ingress"]
                             for p in r["from"] if "podSelector" in p]


def test_flink_jvms_tick_as_the_local_stack_does(objects):
    """Both JVMs of every overlay start with the stack's Pekko tick (streaming/stack/flink.py PEKKO_TICK,
    measured by tests/integration/test_flink_scheduler_tick.py): YAML cannot import the constant."""
    from streaming.stack.flink import PEKKO_TICK

    conf = one(objects, "FlinkDeployment")["spec"]["flinkConfiguration"]
    for key in ("env.java.opts.jobmanager", "env.java.opts.taskmanager"):
        assert PEKKO_TICK in conf[key].split(), f"{key} = {conf[key]!r} lacks {PEKKO_TICK}"


def test_hpa_scales_triton_on_adapter_metrics(objects):
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    assert "replicas" not in one(objects, "Deployment", "triton")["spec"], "the HPA owns the replica count"
    adapter = yaml.safe_load((K8S_DIR / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"]: rule for rule in adapter["rules"]["custom"]}
    used = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert used and used <= served.keys()
    for name in used:
        assert re.search(r"\bnv_[a-z_]+\{<<\.LabelMatchers>>\}", served[name]["metricsQuery"]), name
    gpus = int(container_named(triton_pod(objects), "triton")["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
    assert ("triton_gpu_utilization" in used) == (gpus > 0), "scale on GPU utilisation exactly where there are GPUs"


# --- models ---------------------------------------------------------------------------------------

def _cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_models_named_in_the_manifests_are_built_by_triton_models(objects, build_repository):
    pod = triton_pod(objects)
    init, triton = container_named(pod, "model-repository"), container_named(pod, "triton")
    assert init["image"] == one(objects, "FlinkDeployment")["spec"]["image"], "model and client from one release"
    repository = build_repository(objects)
    names = generated(objects, "ConfigMap", "triton-models")["data"]
    served = names["TRITON_MODELS"].split()
    config = job_config(flink(objects)[1])
    assert served and config.model_name == names["IMGSTREAM_MODEL_NAME"] and config.model_name in served
    limits = triton["resources"]["limits"]
    gpus, cores = int(limits.get("nvidia.com/gpu", 0)), _cores(limits["cpu"])
    writable = [m["mountPath"] for m in triton["volumeMounts"] if not m.get("readOnly")]
    for model in served:
        cfg = model_config(repository / model / "config.pbtxt")
        assert cfg.name == model
        if cfg.platform == "tensorrt_plan":
            assert (repository / model / "trtexec.args").is_file(), f"{model}: nothing tells trtexec how to build it"
            trt = container_named(pod, "tensorrt-plans")
            mount = next(m["mountPath"] for m in trt["volumeMounts"] if m["name"] == "models")
            assert trt["command"][-1] == mount
            assert trt["image"] == triton["image"], "plans must be built by the TensorRT that serves them"
            assert int(trt["resources"]["limits"].get("nvidia.com/gpu", 0)) == gpus > 0, f"{model}: no GPU to build on"
        for group in cfg.instance_group:
            kind = model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)
            if kind == "KIND_GPU":
                assert gpus and all(g < gpus for g in group.gpus), f"{model}: instances on GPUs the pod lacks"
            elif kind == "KIND_CPU":
                threads = cfg.parameters.get("intra_op_threads")
                per_instance = max(int(threads.string_value or 1), 1) if threads else 1
                assert group.count * per_instance <= cores, f"{model}: more CPU threads than the pod has"
        for accelerator in cfg.optimization.execution_accelerators.gpu_execution_accelerator:
            for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
                if key in accelerator.parameters:
                    path = accelerator.parameters[key]
                    assert any(path == m or path.startswith(m + "/") for m in writable), f"{model}: {path} not writable"
    called = model_config(repository / config.model_name / "config.pbtxt")
    image = next(i for i in called.input if i.name == infer.INPUT_NAME)
    assert model_config_pb2.DataType.Name(image.data_type) == "TYPE_UINT8"
    assert list(image.dims) == list(contract.input_shape())
    assert infer.OUTPUT_NAME in [o.name for o in called.output if o.label_filename]
    assert called.max_batch_size >= config.max_batch_size


def test_tensorrt_step_runs_the_projects_plan_builder(rendered):
    text = (REPO / "deploy" / "docker" / "triton.Dockerfile").read_text()
    copied = dict(re.findall(r"^COPY (\S+) (\S+)$", text, re.M))
    ignore = (REPO / "deploy" / "docker" / "triton.Dockerfile.dockerignore").read_text().split()
    for source, target in copied.items():
        assert (REPO / source).is_file() and f"!{source}" in ignore, source
    for overlay, objects in rendered.items():
        init = {c["name"]: c for c in triton_pod(objects).get("initContainers", [])}
        gpus = int(container_named(triton_pod(objects), "triton")["resources"]["limits"].get("nvidia.com/gpu", 0))
        assert ("tensorrt-plans" in init) == (gpus > 0), f"{overlay}: the TensorRT step runs exactly where GPUs are"
        if "tensorrt-plans" in init:
            assert copied.get("triton_models/build_trt_plan.sh") in init["tensorrt-plans"]["command"]


def test_triton_serves_exactly_the_named_models(rendered, build_repository, tmp_path):
    for overlay, objects in rendered.items():
        scripts = generated(objects, "ConfigMap", "triton-scripts")["data"]
        (tmp_path / "serve.sh").write_text(scripts["serve.sh"])
        recorder = tmp_path / "record"
        recorder.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$RECORD"\n')
        recorder.chmod(0o755)
        models = generated(objects, "ConfigMap", "triton-models")["data"]["TRITON_MODELS"]
        out = _run_script(tmp_path / "serve.sh", {"TRITON_MODELS": models, "TRITONSERVER": str(recorder),
                                                  "RECORD": str(tmp_path / "args")}, tmp_path)
        assert out.returncode == 0, out.stderr
        args = (tmp_path / "args").read_text().split()
        triton = container_named(triton_pod(objects), "triton")
        mount = next(m["mountPath"] for m in triton["volumeMounts"] if m["name"] == "models")
        stack = StackLayout()
        assert {f"--model-repository={mount}", "--model-control-mode=explicit", f"--http-port={stack.triton_http_port}",
                f"--grpc-port={stack.triton_grpc_port}", f"--metrics-port={stack.triton_metrics_port}"} <= set(args)
        assert [a.split("=", 1)[1] for a in args if a.startswith("--load-model=")] == models.split()
        repository = build_repository(objects)
        if any(model_config(repository / m / "config.pbtxt").response_cache.enable for m in models.split()):
            assert any(a.startswith("--cache-config=local,size=") for a in args), f"{overlay}: no response cache"
        assert _run_script(tmp_path / "serve.sh", {"TRITONSERVER": str(recorder)}, tmp_path).returncode != 0
        (tmp_path / "build.sh").write_text(scripts["build-model-repository.sh"])
        assert _run_script(tmp_path / "build.sh", {"PYTHON": sys.executable}, tmp_path).returncode != 0


# --- security lint and images ---------------------------------------------------------------------

def test_security_lint(objects):
    views = list(containers(objects))
    assert {"flink-main-container", "triton", "model-repository", "kafka", "topicOperator"} <= {c.name for c in views}
    assert not lint(views, WRITABLE_ROOT)
    assert one(objects, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_images_are_pinned_to_this_release(rendered):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

    def no_digest(image: str) -> str:
        return re.sub(r"@sha256:[0-9a-f]{64}$", "", image)
    for objects in rendered.values():
        assert no_digest(one(objects, "FlinkDeployment")["spec"]["image"]).endswith(f"/imgstream:{version}")
        pod = triton_pod(objects)
        triton = {c["image"] for c in pod["initContainers"] + pod["containers"] if c["name"] != "model-repository"}
        assert len(triton) == 1, f"serving and trtexec from one Triton image (one TensorRT): {triton}"
        assert no_digest(triton.pop()).endswith(f"/imgstream-triton:{version}")


def _dockerfile(name: str) -> tuple[str, dict[str, str]]:
    text = (REPO / "deploy" / "docker" / name).read_text()
    return text, dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


@pytest.mark.parametrize("name", ["Dockerfile", "triton.Dockerfile"])
def test_dockerfiles_pin_base_images_and_run_as_non_root(name):
    text, args = _dockerfile(name)
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        assert re.fullmatch(r"\$\{\w+\}@\$\{(\w+_DIGEST)\}", image), f"FROM {image} is not pinned by digest"
    for arg, value in args.items():
        if arg.endswith("_DIGEST"):
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", value), arg
        if arg.endswith("_IMAGE"):
            assert re.fullmatch(r"\S+:[\w.-]+", value) and not value.endswith(":latest"), arg
    assert re.findall(r"^USER (\S+)", text, re.M)[-1].split(":")[0] not in ("0", "root")
    assert all("==" in spec for spec in re.findall(r"pip install [^\n]*?\"(\w[\w-]*[^\"]*)\"", text))


def test_job_image_matches_the_project_and_the_flinkdeployment(rendered):
    text, args = _dockerfile("Dockerfile")
    flink_version = importlib.metadata.version("apache-flink")
    connector = next(spec for spec in read_lock() if spec.role == "flink-connector")
    assert args["FLINK_VERSION"] == flink_version and f"flink:{flink_version}-" in args["FLINK_IMAGE"]
    assert (args["KAFKA_CONNECTOR_VERSION"], args["KAFKA_CONNECTOR_SHA256"]) == (connector.version, connector.sha256)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert args["PYTHON_VERSION"] in SpecifierSet(requires)
    # deploy/docker/install.sh installs the job's files under the prefix the Dockerfile gives it
    # (tests/unit/test_k8s_install_script.py checks the script itself)
    assert "--prefix /opt/imgstream" in text
    assert 'install -D -m 0644 "$src/flink_jobs/classify.py" "$prefix/flink_jobs/classify.py"' in INSTALL_SCRIPT.read_text()
    script = "/opt/imgstream/flink_jobs/classify.py"
    for objects in rendered.values():
        spec = one(objects, "FlinkDeployment")["spec"]
        assert spec["flinkVersion"] == "v{}_{}".format(*flink_version.split(".")[:2])
        assert spec["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink_version}.jar"
        assert spec["job"]["args"][spec["job"]["args"].index("-py") + 1] == script
        python = "/opt/imgstream/venv/bin/python"
        assert spec["flinkConfiguration"]["python.executable"] == python and python in spec["job"]["args"]
        builder = generated(objects, "ConfigMap", "triton-scripts")["data"]["build-model-repository.sh"]
        assert f'"${{PYTHON:-{python}}}" -m triton_models.build' in builder
