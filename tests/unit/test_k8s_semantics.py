"""deploy/k8s read as a platform engineer reads it: not whether each object is well-formed (that is
test_k8s_manifests.py) but whether the rendered overlays do what they mean on the first apply.

- init containers run so that a volume is written before anything reads it, and running them here in
  the rendered order leaves a plan for every TensorRT model Triton loads;
- every image is its overlay's registry and tag (prod: and a digest), and `kustomize edit set image`
  in an overlay changes what the pods run;
- every Strimzi pod template that sets a securityContext keeps an fsGroup Kafka can write with;
- every ServiceMonitor/PodMonitor/PrometheusRule carries the label the documented Prometheus selects.

Each check is a function returning its problems; the last tests feed each one the defect it exists for.
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from k8s_support import (  # noqa: F401 (build_repository, kustomize, objects, rendered: pytest fixtures)
    K8S_DIR, OVERLAYS, REPO, build_repository, containers, find, generated, kustomize, model_config, objects, one,
    pod_templates, ref, render, rendered, strimzi_pod_templates, triton_pod,
)

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
MONITOR_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
PROJECT_IMAGES = ("imgstream", "imgstream-triton")  # built from this repository (deploy/docker)
# where the Dockerfiles copy the project's scripts: image path -> repository path
TRITON_IMAGE_FILES = dict((target, source) for source, target in re.findall(
    r"^COPY (\S+) (\S+)$", (REPO / "deploy" / "docker" / "triton.Dockerfile").read_text(), re.M))


# --- init containers ------------------------------------------------------------------------------

def _mounts(container: dict) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def _reads(container: dict, volume: str) -> bool:
    """The container reads what is already on the volume: it mounts it read-only, or it is given the
    mount path as an argument (its input)."""
    mount = _mounts(container).get(volume)
    if mount is None:
        return False
    args = container.get("command", []) + container.get("args", [])
    return bool(mount.get("readOnly")) or any(a == mount["mountPath"] or a.startswith(mount["mountPath"] + "/")
                                              for a in args)


def volume_order_problems(pod: dict) -> list[str]:
    """For every emptyDir volume (empty when the pod starts): each container that reads it runs after an
    init container that writes it without reading it (the one that fills it). Containers run in order:
    the init containers one by one, then the rest."""
    problems = []
    empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    sequence = pod.get("initContainers", []) + pod.get("containers", [])
    for volume in sorted(empty):
        filled = False
        for position, container in enumerate(sequence):
            if volume not in _mounts(container):
                continue
            if _reads(container, volume) and not filled:
                problems.append(f"{container['name']} reads volume {volume} before any init container writes it")
            is_init = position < len(pod.get("initContainers", []))
            if is_init and not _reads(container, volume) and not _mounts(container)[volume].get("readOnly"):
                filled = True
    return problems


def test_init_containers_write_a_volume_before_it_is_read(objects):
    checked = 0
    for where, pod in (t for o in objects for t in pod_templates(o)):
        assert not volume_order_problems(pod), where
        checked += len(pod.get("initContainers", []))
    assert checked, "no init containers: the check checked nothing"


def _run_init_containers(pod: dict, repository: Path, volume_dir: Path, trtexec: Path) -> list[str]:
    """Runs the Triton pod's init containers here, in the rendered order, on a folder standing in for the
    `models` volume: model-repository copies what its script built (build_repository ran that script with
    the same arguments); tensorrt-plans runs the image's build_trt_plan.sh with a trtexec stand-in."""
    ran = []
    for container in pod.get("initContainers", []):
        mount = _mounts(container)["models"]["mountPath"]
        if container["name"] == "model-repository":
            shutil.copytree(repository, volume_dir, dirs_exist_ok=True)
        elif container["name"] == "tensorrt-plans":
            command = container["command"]
            script = REPO / TRITON_IMAGE_FILES[command[1]]
            args = [str(volume_dir) if a == mount else a for a in command[2:]]
            proc = subprocess.run(["bash", str(script), *args], env={"PATH": "/usr/bin:/bin", "TRTEXEC": str(trtexec)},
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
        else:
            raise AssertionError(f"an init container this test does not know how to run: {container['name']}")
        ran.append(container["name"])
    return ran


def _fake_trtexec(folder: Path) -> Path:
    """trtexec as build_trt_plan.sh calls it: writes the --saveEngine file (no GPU here)."""
    path = folder / "trtexec"
    path.write_text('#!/bin/bash\nfor a in "$@"; do case $a in --saveEngine=*) echo plan > "${a#--saveEngine=}";; '
                    'esac; done\necho "TensorRT version: 0.0 (stand-in)"\n')
    path.chmod(0o755)
    return path


def plans_missing(objects: list[dict], repository: Path, work: Path) -> list[str]:
    """The TensorRT models Triton loads that have no model.plan after the init containers ran in order."""
    volume = work / "models"
    volume.mkdir()
    _run_init_containers(triton_pod(objects), repository, volume, _fake_trtexec(work))
    served = generated(objects, "ConfigMap", "triton-models")["data"]["TRITON_MODELS"].split()
    return [m for m in served if model_config(volume / m / "config.pbtxt").platform == "tensorrt_plan"
            and not (volume / m / "1" / "model.plan").is_file()]


def test_init_containers_in_rendered_order_leave_a_plan_for_every_served_trt_model(rendered, build_repository,
                                                                                     tmp_path):
    plan_models = 0
    for overlay, objects in rendered.items():
        repository = build_repository(objects)
        work = tmp_path / overlay
        work.mkdir()
        assert not plans_missing(objects, repository, work), overlay
        plan_models += len(list((work / "models").glob("*/1/model.plan")))
    assert plan_models, "no overlay serves a TensorRT plan: the check checked nothing"


# --- images ---------------------------------------------------------------------------------------

def overlay_images(overlay: Path) -> dict[str, str]:
    """The overlay's own `images:` entries: logical name -> the reference it stands for."""
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    out = {}
    for entry in kustomization.get("images", []):
        image = entry.get("newName", entry["name"])
        if "newTag" in entry:
            image += f":{entry['newTag']}"
        if "digest" in entry:
            image += f"@{entry['digest']}"
        out[entry["name"]] = image
    return out


def rendered_images(objects: list[dict]) -> dict[str, str]:
    """Every image the rendered pods run (FlinkDeployment: spec.image): container label -> image."""
    return {f"{c.where} {c.name}": c.image for c in containers(objects) if c.image is not None}


def image_problems(images: dict[str, str], pinned: dict[str, str], need_digest: bool) -> list[str]:
    problems = []
    for where, image in images.items():
        if image not in pinned.values():
            problems.append(f"{where}: {image} is none of the overlay's images {sorted(pinned.values())}")
        elif need_digest and not DIGEST.search(image):
            problems.append(f"{where}: {image} has no digest")
    return problems


def base_image_names() -> set[str]:
    """The logical image names the base manifests use."""
    names = set()
    for path in (K8S_DIR / "base").rglob("*.yaml"):
        names.update(re.findall(r"^\s*(?:-\s+)?image:\s*([\w.-]+)\s*$", path.read_text(), re.M))
    return names


def test_every_image_is_its_overlays_registry_and_tag_and_prod_pins_digests(rendered):
    logical = base_image_names()
    assert logical == {"imgstream", "imgstream-triton", "nginx-unprivileged"}
    base = yaml.safe_load((K8S_DIR / "base" / "kustomization.yaml").read_text())
    assert "images" not in base, "a rename in the base runs first and leaves the overlays' entries nothing to match"
    for overlay, objects in rendered.items():
        pinned = overlay_images(K8S_DIR / "overlays" / overlay)
        assert pinned.keys() == logical, f"{overlay} must map every logical image name"
        registries = {pinned[name].rsplit("/", 1)[0] for name in PROJECT_IMAGES}
        assert len(registries) == 1, f"{overlay}: the project's images from one registry, found {registries}"
        images = rendered_images(objects)
        assert {f"FlinkDeployment/imgstream-classify {role} flink-main-container"
                for role in ("jobManager", "taskManager")} < images.keys()
        assert not image_problems(images, pinned, need_digest=overlay == "prod"), overlay
        assert set(images.values()) == set(pinned.values()), f"{overlay}: an image entry no pod uses"


def test_kustomize_edit_set_image_rolls_out_what_it_names(kustomize, tmp_path):
    """The README's release step: `kustomize edit set image NAME=REF` in an overlay changes every pod
    that runs NAME (the defect: the base had renamed the images, so the edit matched nothing)."""
    copy_dir = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, copy_dir)
    for overlay in OVERLAYS:
        folder = copy_dir / "overlays" / overlay
        job = "registry.test/team/imgstream:9.9.9@sha256:" + "1" * 64
        triton = "registry.test/team/imgstream-triton:9.9.9@sha256:" + "2" * 64
        proc = subprocess.run([str(kustomize), "edit", "set", "image", f"imgstream={job}", f"imgstream-triton={triton}"],
                              cwd=folder, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        images = rendered_images(render(kustomize, folder))
        project = {where: image for where, image in images.items() if "nginx-unprivileged" not in image}
        assert set(project.values()) == {job, triton}, f"{overlay}: {images}"
        assert images["FlinkDeployment/imgstream-classify jobManager flink-main-container"] == job


# --- Strimzi pods ---------------------------------------------------------------------------------

def strimzi_pod_security_contexts(objects: list[dict]) -> dict[str, dict | None]:
    """The pod securityContext each Strimzi-made pod gets from the manifests (None: Strimzi's default)."""
    return {where: pod.get("securityContext") for where, pod in strimzi_pod_templates(objects).items()}


def fs_group_problems(contexts: dict[str, dict | None]) -> list[str]:
    """Strimzi uses a given pod securityContext as it is: its default `fsGroup: 0` is gone unless repeated.
    Kafka runs as uid 1001 with gid 0 (or runAsGroup where set); the fsGroup must be that group."""
    problems = []
    for where, context in contexts.items():
        if context is None:
            continue
        if "fsGroup" not in context:
            problems.append(f"{where}: securityContext without fsGroup: Kafka cannot write its volumes")
        elif context["fsGroup"] != context.get("runAsGroup", 0):
            problems.append(f"{where}: fsGroup {context['fsGroup']} is not the group Kafka runs as")
    return problems


def test_strimzi_pod_templates_keep_a_writable_fs_group(objects):
    contexts = strimzi_pod_security_contexts(objects)
    brokers = [ref(p) for p in find(objects, "KafkaNodePool") if "broker" in p["spec"]["roles"]]
    assert brokers and all(contexts[b] is not None for b in brokers), "the check would check no broker pod"
    assert not fs_group_problems(contexts)


# --- monitoring -----------------------------------------------------------------------------------

def documented_prometheus_label() -> tuple[str, str]:
    """The label the README says the Prometheus selects monitors and rules by (`release: <name>`)."""
    readme = (K8S_DIR / "README.md").read_text(encoding="utf-8")
    found = re.search(r"selects `ServiceMonitor`, `PodMonitor` and `PrometheusRule` objects labelled `(\w+): ([\w.-]+)`",
                      readme)
    assert found, "deploy/k8s/README.md does not say which label the Prometheus selects"
    return found.group(1), found.group(2)


def monitor_label_problems(objects: list[dict], label: tuple[str, str]) -> list[str]:
    key, value = label
    return [f"{ref(o)}: no label {key}: {value}" for o in objects if o["kind"] in MONITOR_KINDS
            and o["metadata"].get("labels", {}).get(key) != value]


def test_monitors_carry_the_label_the_documented_prometheus_selects(objects):
    assert {"ServiceMonitor", "PodMonitor"} <= {o["kind"] for o in objects}
    assert documented_prometheus_label() == ("release", "kube-prometheus-stack")
    assert not monitor_label_problems(objects, documented_prometheus_label())


# --- each check catches the defect it exists for --------------------------------------------------

def test_checks_catch_the_defects_they_exist_for(rendered, build_repository, tmp_path):
    prod = rendered["prod"]
    # 1. tensorrt-plans before model-repository (the old prod patch's order)
    swapped = copy.deepcopy(prod)
    pod = triton_pod(swapped)
    pod["initContainers"].reverse()
    assert [c["name"] for c in pod["initContainers"]] == ["tensorrt-plans", "model-repository"]
    assert volume_order_problems(pod) == ["tensorrt-plans reads volume models before any init container writes it"]
    work = tmp_path / "swapped"
    work.mkdir()
    assert plans_missing(swapped, build_repository(prod), work) == ["efficientnet_lite0_fp16_plan"]
    # 2. images the overlay did not name (the base's rename), and prod without a digest
    pinned = overlay_images(K8S_DIR / "overlays" / "dev")
    assert image_problems({"x": "registry.example.com/imgstream:0.1.0"}, pinned, need_digest=False)
    no_digest = {k: DIGEST.sub("", v) for k, v in overlay_images(K8S_DIR / "overlays" / "prod").items()}
    assert image_problems({"x": no_digest["imgstream"]}, no_digest, need_digest=True) == [
        "x: registry.example.com/imgstream:0.1.0 has no digest"]
    # 3. a Strimzi pod securityContext without fsGroup
    contexts = strimzi_pod_security_contexts(prod)
    broker = next(k for k in contexts if k.startswith("KafkaNodePool/brokers"))
    contexts[broker] = {k: v for k, v in contexts[broker].items() if k != "fsGroup"}
    assert fs_group_problems(contexts) == [f"{broker}: securityContext without fsGroup: Kafka cannot write its volumes"]
    # 4. a monitor without the release label
    unlabelled = copy.deepcopy(prod)
    del one(unlabelled, "PodMonitor", "imgstream-flink")["metadata"]["labels"]["release"]
    assert monitor_label_problems(unlabelled, documented_prometheus_label()) == [
        "PodMonitor/imgstream-flink: no label release: kube-prometheus-stack"]
