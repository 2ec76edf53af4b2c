"""Helpers for tests/unit/test_k8s_manifests.py: build kustomize, render the overlays, validate the
rendered objects against Kubernetes OpenAPI schemas (kubernetes-validate) and the operators' CRD
schemas (jsonschema), and flatten pods/containers/env for the lint and cross-checks.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from streaming.config import PipelineConfig
from streaming.stack.layout import StackLayout

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
KUSTOMIZE_VERSION = "v5.8.2"  # v5.8.3 needs Go >= 1.27
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_MIN_GO = (1, 26)
CRDS_ENV = "IMGSTREAM_CRDS_DIR"
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
IMAGE_REFERENCE = re.compile(r"[a-z0-9.-]+(:[0-9]+)?/[^:@\s]+(:[\w.-]+)?(@sha256:[0-9a-f]{64})?")


class ToolError(RuntimeError):
    """kustomize could not be built or run."""


# --- kustomize ------------------------------------------------------------------------------------

def _installed_version(binary: Path) -> str | None:
    if not binary.exists():
        return None
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() if out.returncode == 0 else None


def _go_version() -> tuple[int, int]:
    go = shutil.which("go")
    if go is None:
        raise ToolError(f"`go` is not on PATH; kustomize {KUSTOMIZE_VERSION} is built from the Go module proxy "
                        f"and needs Go >= {'.'.join(map(str, KUSTOMIZE_MIN_GO))}")
    raw = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=30).stdout.strip()
    found = re.match(r"go(\d+)\.(\d+)", raw)
    if not found:
        raise ToolError(f"cannot read the Go version from {raw!r}")
    return int(found.group(1)), int(found.group(2))


def ensure_kustomize(bin_dir: Path) -> Path:
    """The pinned kustomize in ``bin_dir``, built with `go install` unless that version is already there."""
    binary = bin_dir / "kustomize"
    if _installed_version(binary) == KUSTOMIZE_VERSION:
        return binary
    if _go_version() < KUSTOMIZE_MIN_GO:
        raise ToolError(f"kustomize {KUSTOMIZE_VERSION} needs Go >= {KUSTOMIZE_MIN_GO}, found {_go_version()}")
    bin_dir.mkdir(parents=True, exist_ok=True)
    # build into a private folder, then rename: a concurrent test run never sees half a binary
    with tempfile.TemporaryDirectory(dir=bin_dir) as tmp:
        env = {**os.environ, "GOBIN": tmp, "GOFLAGS": "-mod=mod -trimpath", "GOTOOLCHAIN": "local",
               "CGO_ENABLED": "0"}
        proc = subprocess.run(["go", "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"], env=env,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise ToolError(f"go install {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION} failed:\n{proc.stderr[-3000:]}")
        os.replace(Path(tmp) / "kustomize", binary)
    if _installed_version(binary) != KUSTOMIZE_VERSION:
        raise ToolError(f"{binary} does not report {KUSTOMIZE_VERSION}")
    return binary


def render(kustomize: Path, overlay: Path) -> list[dict]:
    proc = subprocess.run([str(kustomize), "build", str(overlay)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ToolError(f"kustomize build {overlay} failed:\n{proc.stderr[-3000:]}")
    return [doc for doc in yaml.load_all(proc.stdout, Loader=YamlLoader) if doc]


# --- schemas --------------------------------------------------------------------------------------

def crds_dir() -> Path:
    return Path(os.environ.get(CRDS_ENV) or REPO.parent / "shared" / "crds").resolve()


def strict(schema: Any) -> Any:
    """An OpenAPI v3 CRD schema as JSON Schema that rejects unknown fields, like the API server's
    strict field validation (`kubectl apply --validate=strict`): objects with declared properties get
    additionalProperties: false unless they preserve unknown fields; `nullable` and int-or-string apply."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crd_schemas(folder: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict schema, for every served version of every CRD under ``folder``."""
    schemas: dict[tuple[str, str], dict] = {}
    for path in sorted(folder.rglob("*.y*ml")):
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=YamlLoader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served"):
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    # the API server accepts these on every object, whether the CRD lists them or not
                    for field in ("apiVersion", "kind"):
                        schema["properties"].setdefault(field, {"type": "string"})
                    schema["properties"].setdefault("metadata", {"type": "object"})
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def schema_errors(obj: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


def builtin_errors(obj: dict, k8s_version: str) -> list[str]:
    """Strict Kubernetes OpenAPI validation; a kind kubernetes-validate has no schema for is an error."""
    import kubernetes_validate
    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(map(str, error.path)) or '<root>'}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


# --- rendered objects -----------------------------------------------------------------------------

def ref(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[ref(o) for o in found]}"
    return found[0]


def generated(objects: list[dict], kind: str, base_name: str) -> dict:
    """A ConfigMap/Secret that kustomize generated, by its name before the hash suffix."""
    found = [o for o in objects if o["kind"] == kind
             and re.fullmatch(re.escape(base_name) + r"-[a-z0-9]{10}", o["metadata"]["name"])]
    assert len(found) == 1, f"expected one generated {kind} {base_name}, found {[ref(o) for o in found]}"
    return found[0]


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(label, pod spec) of the pods a built-in workload or a FlinkDeployment creates."""
    spec = obj.get("spec", {})
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [(ref(obj), spec["template"]["spec"])]
    if kind == "CronJob":
        return [(ref(obj), spec["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "Pod":
        return [(ref(obj), spec)]
    if kind == "FlinkDeployment":
        found = [(ref(obj), spec.get("podTemplate", {}).get("spec", {}))]
        for role in ("jobManager", "taskManager"):
            if "podTemplate" in spec.get(role, {}):
                found.append((f"{ref(obj)} {role}", spec[role]["podTemplate"].get("spec", {})))
        return found
    return []


@dataclass(frozen=True)
class ContainerView:
    """One container as the lint sees it, whoever creates the pod (Kubernetes, Flink, Strimzi)."""

    where: str
    name: str
    image: str | None          # None: chosen by an operator from its own pinned release
    pod_security: dict
    security: dict
    resources: dict


def _flink_resources(resource: dict) -> dict:
    # the operator turns spec.jobManager/taskManager.resource into equal requests and limits
    amounts = {k: resource[k] for k in ("cpu", "memory") if k in resource}
    return {"requests": amounts, "limits": amounts}


def containers(objects: list[dict]) -> Iterator[ContainerView]:
    for obj in objects:
        for where, pod in pod_templates(obj):
            for section in ("initContainers", "containers"):
                for c in pod.get(section, []):
                    image, resources = c.get("image"), c.get("resources", {})
                    if obj["kind"] == "FlinkDeployment" and c["name"] == "flink-main-container":
                        image = image or obj["spec"].get("image")
                        for role in ("jobManager", "taskManager"):
                            yield ContainerView(f"{where} {role}", c["name"], image, pod.get("securityContext", {}),
                                                c.get("securityContext", {}),
                                                _flink_resources(obj["spec"].get(role, {}).get("resource", {})))
                        continue
                    yield ContainerView(f"{where} {section}", c["name"], image, pod.get("securityContext", {}),
                                        c.get("securityContext", {}), resources)
    yield from _strimzi_containers(objects)


def _strimzi_containers(objects: list[dict]) -> Iterator[ContainerView]:
    for kafka in find(objects, "Kafka"):
        name = kafka["metadata"]["name"]
        template = kafka["spec"]["kafka"].get("template", {})
        for pool in find(objects, "KafkaNodePool"):
            if pool["metadata"].get("labels", {}).get("strimzi.io/cluster") != name:
                continue
            own = pool["spec"].get("template", {})
            # a node pool's template section replaces the Kafka resource's section of the same name
            pod = own.get("pod", template.get("pod", {}))
            container = own.get("kafkaContainer", template.get("kafkaContainer", {}))
            yield ContainerView(ref(pool), "kafka", None, pod.get("securityContext", {}),
                                container.get("securityContext", {}),
                                pool["spec"].get("resources", kafka["spec"]["kafka"].get("resources", {})))
        entity = kafka["spec"].get("entityOperator")
        if entity:
            pod = entity.get("template", {}).get("pod", {})
            for part in ("topicOperator", "userOperator"):
                if part in entity:
                    container = entity.get("template", {}).get(f"{part}Container", {})
                    yield ContainerView(f"{ref(kafka)} entityOperator", part, None, pod.get("securityContext", {}),
                                        container.get("securityContext", {}), entity[part].get("resources", {}))


def lint(views, writable_root: dict) -> list[str]:
    """Security problems of the containers: root, privilege escalation, capabilities, seccomp, writable root
    filesystem (unless ``writable_root`` names the container), missing requests/limits, unpinned images."""
    problems = []
    for c in views:
        sc, pod = c.security, c.pod_security
        label = f"{c.where} {c.name}"
        non_root = sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True
        if not (non_root and sc.get("runAsUser", pod.get("runAsUser", 1))):
            problems.append(f"{label}: not runAsNonRoot")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{label}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{label}: capabilities not dropped")
        if sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type") != "RuntimeDefault":
            problems.append(f"{label}: no RuntimeDefault seccomp profile")
        if sc.get("readOnlyRootFilesystem") is not True and (c.where.split()[0], c.name) not in writable_root:
            problems.append(f"{label}: writable root filesystem")
        for side in ("requests", "limits"):
            if not {"cpu", "memory"} <= c.resources.get(side, {}).keys():
                problems.append(f"{label}: no cpu/memory {side}")
        if c.image is not None and not IMAGE_REFERENCE.fullmatch(c.image):
            problems.append(f"{label}: image {c.image!r} is not a registry reference")
        elif c.image is not None and (c.image.endswith(":latest") or not re.search(r":[\w.-]+$|@sha256:", c.image)):
            problems.append(f"{label}: image {c.image!r} is not pinned (no tag, or latest)")
    return problems


def container_env(objects: list[dict], container: dict) -> dict[str, Any]:
    """The container's environment: literal values, ConfigMap values resolved from the rendered
    objects, and ("secret", name, key) for values taken from Secrets."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        cm = one(objects, "ConfigMap", source["configMapRef"]["name"])
        env.update(cm.get("data", {}))
    names = [var["name"] for var in container.get("env", [])]
    assert len(names) == len(set(names)), f"{container['name']}: env names set twice: {names}"
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            key_ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = ("secret", key_ref["name"], key_ref["key"])
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            key_ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = one(objects, "ConfigMap", key_ref["name"])["data"][key_ref["key"]]
        else:
            env[var["name"]] = ("field", var.get("valueFrom"))
    return env


def container_named(pod: dict, name: str) -> dict:
    found = [c for c in pod.get("initContainers", []) + pod.get("containers", []) if c["name"] == name]
    assert len(found) == 1, f"expected one container {name}, found {len(found)}"
    return found[0]


def mutated(obj: dict, path: str, value: Any) -> dict:
    """A deep copy of ``obj`` with ``value`` set at the slash-separated ``path`` (list indices as digits)."""
    out = copy.deepcopy(obj)
    *parents, last = path.split("/")
    node: Any = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def strimzi_pod_templates(objects: list[dict]) -> dict[str, dict]:
    """The pod template of every pod Strimzi makes for a Kafka cluster: a node pool's template.pod replaces
    the Kafka resource's spec.kafka.template.pod; the entity operator, exporter and Cruise Control have
    their own."""
    found: dict[str, dict] = {}
    for kafka in find(objects, "Kafka"):
        spec = kafka["spec"]
        kafka_pod = spec["kafka"].get("template", {}).get("pod", {})
        for pool in find(objects, "KafkaNodePool"):
            if pool["metadata"]["labels"].get("strimzi.io/cluster") == kafka["metadata"]["name"]:
                found[ref(pool)] = pool["spec"].get("template", {}).get("pod", kafka_pod)
        for part in ("entityOperator", "cruiseControl", "kafkaExporter"):
            if part in spec:
                found[f"{ref(kafka)} {part}"] = spec[part].get("template", {}).get("pod", {})
    return found


def flink(objects: list[dict]) -> tuple[dict, dict]:
    """The FlinkDeployment and its main container's resolved environment."""
    deployment = one(objects, "FlinkDeployment")
    main = container_named(deployment["spec"]["podTemplate"]["spec"], "flink-main-container")
    return deployment, container_env(objects, main)


def job_config(env: dict) -> PipelineConfig:
    """What PipelineConfig.from_env makes of the pod's environment (Secret values stand in as text)."""
    return PipelineConfig.from_env({k: "from-a-secret" if isinstance(v, tuple) else v for k, v in env.items()})


def triton_pod(objects: list[dict]) -> dict:
    return one(objects, "Deployment", "triton")["spec"]["template"]["spec"]


def model_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def run_script(script: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], env={"PATH": os.environ["PATH"], **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


# --- fixtures (import them into a test module to use them) -----------------------------------------

@pytest.fixture(scope="session")
def kustomize() -> Path:
    try:
        return ensure_kustomize(StackLayout.from_env().root / "tools" / "bin")
    except ToolError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def rendered(kustomize: Path) -> dict[str, list[dict]]:
    return {overlay: render(kustomize, K8S_DIR / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def objects(request, rendered) -> list[dict]:
    return rendered[request.param]


@pytest.fixture(scope="session")
def build_repository(tmp_path_factory):
    """Runs the model-repository init container's script and arguments here, once per distinct pair."""
    built: dict[tuple[str, str], Path] = {}

    def build(objects: list[dict]) -> Path:
        script = generated(objects, "ConfigMap", "triton-scripts")["data"]["build-model-repository.sh"]
        build_args = generated(objects, "ConfigMap", "triton-models")["data"]["MODEL_BUILD_ARGS"]
        if (script, build_args) not in built:
            work = tmp_path_factory.mktemp("model-repository")
            (work / "build.sh").write_text(script)
            env = {"MODEL_BUILD_ARGS": build_args, "PYTHON": sys.executable, "MODEL_REPOSITORY": str(work / "models"),
                   "IMGSTREAM_STACK_DIR": str(work / "stack")}
            proc = run_script(work / "build.sh", env, REPO)
            assert proc.returncode == 0, f"triton_models.build {build_args} failed:\n{proc.stderr[-3000:]}"
            built[(script, build_args)] = work / "models"
        return built[(script, build_args)]
    return build
