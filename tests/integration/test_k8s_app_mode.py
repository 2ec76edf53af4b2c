"""The dev overlay's FlinkDeployment, run here as the cluster would run it: deploy/docker/install.sh (the
image's install steps) installs the job into a temporary prefix and adds the Kafka connector to a private
copy of the apache-flink wheel's Flink; the rendered flinkConfiguration becomes its config.yaml; the
JobManager starts the job in APPLICATION mode with the FlinkDeployment's own entry class and arguments
(`standalone-job.sh start-foreground --job-classname PythonDriver -pyclientexec PREFIX/venv/bin/python
-py PREFIX/flink_jobs/classify.py ...`), one TaskManager joins, both with the rendered pod environment
(IMGSTREAM_*); predictions come back on the results topic (read_committed: the exactly-once sink).

Only what Kubernetes alone provides is replaced (see app_mode_support): the operator's kubernetes.* keys,
Kubernetes HA, s3:// folders (file:// here: the wheel ships no S3 plugin), addresses and ports, the Secrets'
values, Strimzi's TLS listener and KafkaUser (the local stack's Kafka), the Service names of Triton and
MinIO (the local stack's Triton and S3Proxy), and this run's topics, group and bucket.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from k8s_support import K8S_DIR, REPO, ensure_kustomize, flink, render  # noqa: E402
from streaming.config import PipelineConfig  # noqa: E402
from streaming.ops import jobs, kafka_io  # noqa: E402
from streaming.stack import kafka  # noqa: E402
from streaming.stack.artifacts import read_lock  # noqa: E402
from streaming.stack.job_config import kafka_config  # noqa: E402
from streaming.stack.process import loopback_opener  # noqa: E402
from tests.integration.app_mode_support import (  # noqa: E402
    IMAGE_FLINK_HOME, image_path, job_environment, leftovers, local_flink, private_flink_home, process_environment,
    start, stop,
)

INSTALL_SCRIPT = REPO / "deploy" / "docker" / "install.sh"
INSTALL_TIMEOUT_S = 600
RUNNING_TIMEOUT_S = 180
RESULTS_TIMEOUT_S = 120


def _phase(name: str, since: float) -> float:
    now = time.monotonic()
    print(f"[app mode] {name}: {now - since:.0f} s", flush=True)
    return now


def _install(prefix: Path, flink_home: Path, connector_jar: Path, log: Path) -> None:
    """install.sh into `prefix` and `flink_home`, based on the project venv's Python 3.11."""
    base_python = Path(sys.executable).with_name("python3.11")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IMGSTREAM_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    argv = ["bash", str(INSTALL_SCRIPT), "--prefix", str(prefix), "--python", str(base_python),
            "--flink-home", str(flink_home), "--connector-jar", str(connector_jar),
            "--without-s3-plugin"]  # the wheel's opt/ has no flink-s3-fs-presto; checkpoints are file:// here
    with log.open("wb") as out:
        proc = subprocess.run(argv, env=env, cwd=prefix.parent, stdout=out, stderr=subprocess.STDOUT,
                              timeout=INSTALL_TIMEOUT_S)
    assert proc.returncode == 0, f"install.sh failed ({proc.returncode}), {log}:\n{log.read_text()[-4000:]}"


def _distributions(prefix: Path) -> list[str]:
    """`name==version` of everything in the prefix's venv."""
    code = "import importlib.metadata as m; [print(f'{d.name}=={d.version}') for d in m.distributions()]"
    out = subprocess.run([str(prefix / "venv" / "bin" / "python"), "-I", "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    return sorted(out.stdout.split())


def test_dev_flinkdeployment_runs_in_application_mode_from_the_installed_image_files(layout, prepared, test_bucket,
                                                                                       tmp_path):
    clock = time.monotonic()
    objects = render(ensure_kustomize(layout.root / "tools" / "bin"), K8S_DIR / "overlays" / "dev")
    deployment, pod_env = flink(objects)
    spec = deployment["spec"]
    prefix, flink_home, work = tmp_path / "imgstream", tmp_path / "flink", tmp_path / "work"
    private_flink_home(flink_home)

    # --- the image: install.sh into the prefix and the private FLINK_HOME -----------------------------
    _install(prefix, flink_home, prepared.connector_jar, tmp_path / "install.log")
    clock = _phase("install.sh", clock)
    connector = next(s for s in read_lock() if s.role == "flink-connector")
    installed_jar = flink_home / "lib" / connector.filename
    assert installed_jar.is_file() and not installed_jar.is_symlink()
    assert hashlib.sha256(installed_jar.read_bytes()).hexdigest() == connector.sha256
    assert (prefix / "flink_jobs" / "classify.py").read_bytes() == (REPO / "flink_jobs" / "classify.py").read_bytes()
    # the package's dependencies only: not its test and bench extras
    names = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in _distributions(prefix)}
    assert {"apache-flink", "tritonclient", "numpy", "imgstream"} <= names, names
    assert not names & {"pytest", "hypothesis", "atheris", "matplotlib", "py-spy", "opencv-python-headless"}, names
    # idempotent: a second run keeps the venv, its distributions and the connector as they are
    before, jar_mtime = _distributions(prefix), installed_jar.stat().st_mtime_ns
    _install(prefix, flink_home, prepared.connector_jar, tmp_path / "install-again.log")
    again = (tmp_path / "install-again.log").read_text()
    assert f"keeping {prefix / 'venv'}" in again and f"keeping {installed_jar}" in again, again[-3000:]
    assert _distributions(prefix) == before and installed_jar.stat().st_mtime_ns == jar_mtime
    clock = _phase("install.sh again", clock)

    # --- the FlinkDeployment as an application cluster here --------------------------------------------
    local = local_flink(deployment, flink_home=flink_home, prefix=prefix, work=work, layout=layout)
    local.write_conf()
    job = spec["job"]
    # PythonDriver's jar: the entry point finds it in opt/, where the image has it
    python_jar = Path(image_path(job["jarURI"], prefix, flink_home))
    assert job["jarURI"].startswith(f"local://{IMAGE_FLINK_HOME}/opt/") and python_jar.is_file(), job["jarURI"]
    args = [image_path(arg, prefix, flink_home) for arg in job["args"]]
    for flag in ("-pyclientexec", "-py"):
        assert Path(args[args.index(flag) + 1]).is_file(), f"{flag} {args[args.index(flag) + 1]} was not installed"
    assert local.conf["python.executable"] == str(prefix / "venv" / "bin" / "python")

    run = f"it-app-{uuid.uuid4().hex[:8]}"
    requests_topic, results_topic = f"{run}-requests", f"{run}-results"
    job_env = job_environment(pod_env, layout=layout, secrets={
        ("imgstream-s3", "access-key"): layout.s3_access_key,  # the dev overlay's hand-made Secret
        ("imgstream-s3", "secret-key"): layout.s3_secret_key,
    }, overrides={
        "IMGSTREAM_TRITON_GRPC": layout.triton_grpc,  # Service triton
        "IMGSTREAM_S3_ENDPOINT": layout.s3_endpoint,  # MinIO in the dev cluster
        "IMGSTREAM_REQUESTS_TOPIC": requests_topic, "IMGSTREAM_RESULTS_TOPIC": results_topic,
        "IMGSTREAM_CONSUMER_GROUP": run, "IMGSTREAM_TRANSACTIONAL_ID_PREFIX": run,
        "IMGSTREAM_ALLOWED_BUCKETS": test_bucket,
    })
    config = PipelineConfig.from_env(job_env)  # what classify.py will read on the JobManager
    assert config.parallelism == job["parallelism"] == int(local.conf["parallelism.default"])
    assert config.delivery_guarantee == "exactly_once"
    kafka.ensure_topics(layout, [requests_topic, results_topic], max(layout.topic_partitions, config.parallelism))
    env = process_environment(local, job_env)
    print(f"[app mode] {tmp_path}: replaced {sorted(local.replaced)}", flush=True)

    jobmanager_argv = ["bash", str(flink_home / "bin" / "standalone-job.sh"), "start-foreground",
                       "--job-classname", job["entryClass"], *args]
    taskmanager_argv = ["bash", str(flink_home / "bin" / "taskmanager.sh"), "start-foreground",
                        *[f"-D{key}={port}" for key, port in local.taskmanager_ports.items()]]
    started = []
    try:
        started.append(start("jobmanager", jobmanager_argv, env, work))
        started.append(start("taskmanager", taskmanager_argv, env, work))
        logs = lambda: "\n".join(s.tail() for s in started)  # noqa: E731
        rest = local.rest_layout(layout)
        deadline = time.monotonic() + RUNNING_TIMEOUT_S
        found: list[jobs.JobInfo] = []
        while not found:
            for process in started:
                assert process.proc.poll() is None, f"{process.name} exited {process.proc.returncode}\n{logs()}"
            assert time.monotonic() < deadline, f"no job on {rest.flink_rest} in {RUNNING_TIMEOUT_S} s\n{logs()}"
            try:
                found = jobs.list_jobs(rest)
            except OSError:
                pass
            time.sleep(2)
        assert [j.name for j in found] == [job["args"][-1]], found
        try:
            jobs.wait_running(rest, found[0].id, timeout_s=max(10.0, deadline - time.monotonic()))
        except jobs.JobError as error:
            raise AssertionError(f"{error}\n{logs()}") from None
        clock = _phase("job RUNNING", clock)

        events = [{"id": f"{run}-ladybird", "uri": f"s3://{test_bucket}/photos/LadyBird.jpg"},
                  {"id": f"{run}-coffee", "uri": f"s3://{test_bucket}/photos/coffee.png"},
                  {"id": f"{run}-storm", "uri": f"s3://{test_bucket}/photos/Storm.jpg"},
                  {"id": f"{run}-missing", "uri": f"s3://{test_bucket}/photos/does-not-exist.jpg"},
                  {"id": f"{run}-other-bucket", "uri": f"s3://{layout.bucket}/anything.jpg"}]
        security = kafka_io.client_security(kafka_config(layout))
        kafka_io.publish(layout.kafka_bootstrap, requests_topic, events, security=security)
        results = {r["id"]: r for r in kafka_io.read_results(
            layout.kafka_bootstrap, results_topic, count=len(events), timeout_s=RESULTS_TIMEOUT_S,
            ids={e["id"] for e in events}, security=security)}
        clock = _phase("results", clock)
        assert set(results) == {e["id"] for e in events}, f"results for {sorted(results)} only\n{logs()}"
        assert results[f"{run}-ladybird"]["top_k"][0]["label"] == "ladybug"
        assert all(results[f"{run}-{name}"]["model"] == config.model_name for name in ("ladybird", "coffee", "storm"))
        assert results[f"{run}-missing"]["error"]["code"] == "object_not_found"
        assert results[f"{run}-other-bucket"]["error"]["code"] == "uri_not_allowed"  # IMGSTREAM_ALLOWED_BUCKETS

        # the PodMonitor's port: both processes serve Prometheus metrics (the reporter plugin of the distribution)
        for role, port in (("jobmanager", local.conf["metrics.reporter.prom.port"]),
                           ("taskmanager", local.taskmanager_ports["metrics.reporter.prom.port"])):
            with loopback_opener().open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                assert f"flink_{role}_" in response.read().decode(), f"{role} on :{port}"
    finally:
        for process in reversed(started):
            stop(process)
        left = leftovers(tmp_path)
        for process in left:
            process.kill()
        _phase("stopped", clock)
    assert not left, f"still running after the process groups were stopped: {[p.pid for p in left]}"
