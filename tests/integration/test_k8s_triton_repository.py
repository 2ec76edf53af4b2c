"""The dev overlay's Triton pod, run here as the cluster would run it: the rendered model-repository init
script (ConfigMap triton-scripts, arguments from ConfigMap triton-models) builds the repository into a
folder, the rendered serve.sh starts the local stack's tritonserver binary on it (CPU variants, exactly
the models in TRITON_MODELS, explicit model control, --exit-on-error), and the job's own pipeline gets
a prediction from the model the job calls (IMGSTREAM_MODEL_NAME). Only the ports (the stack's Triton
holds 8000-8002) and the local binary's backend and cache folders are added to serve.sh's arguments.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from k8s_support import K8S_DIR, REPO, ensure_kustomize, generated, render, run_script  # noqa: E402
from streaming.events import Prediction  # noqa: E402
from streaming.pipeline import ImagePipeline  # noqa: E402
from streaming.stack.process import loopback_opener  # noqa: E402
from streaming.stack.triton import ready, triton_service  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dev_triton_pod_builds_serves_and_answers_the_job(layout, prepared, pipeline_config, test_bucket, tmp_path):
    objects = render(ensure_kustomize(layout.root / "tools" / "bin"), K8S_DIR / "overlays" / "dev")
    scripts = generated(objects, "ConfigMap", "triton-scripts")["data"]
    models = generated(objects, "ConfigMap", "triton-models")["data"]
    (tmp_path / "build.sh").write_text(scripts["build-model-repository.sh"])
    (tmp_path / "serve.sh").write_text(scripts["serve.sh"])
    repository = tmp_path / "models"
    built = run_script(tmp_path / "build.sh", {"MODEL_BUILD_ARGS": models["MODEL_BUILD_ARGS"], "PYTHON": sys.executable,
                                               "MODEL_REPOSITORY": str(repository),
                                               "IMGSTREAM_STACK_DIR": str(tmp_path / "stack")}, REPO)
    assert built.returncode == 0, built.stderr[-3000:]

    local = triton_service(layout, repository)  # the stack's binary, backends and environment
    server = Path(local.argv[0]).parent.parent
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    extra = [f"--backend-directory={server / 'backends'}", f"--cache-directory={server / 'caches'}",
             f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
             "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
             "--allow-gpu-metrics=false"]
    env = {**local.env, "TRITON_MODELS": models["TRITON_MODELS"], "MODEL_REPOSITORY": str(repository),
           "TRITONSERVER": local.argv[0], "HOME": str(tmp_path)}
    this_pod = dataclasses.replace(layout, host="127.0.0.1", triton_http_port=http)
    log = (tmp_path / "triton.log").open("w")
    proc = subprocess.Popen(["bash", str(tmp_path / "serve.sh"), *extra], env=env, cwd=server, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not ready(this_pod):
            assert proc.poll() is None, f"Triton exited {proc.returncode}: {(tmp_path / 'triton.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "Triton not ready in 180 s"
            time.sleep(1)
        with loopback_opener().open(f"http://127.0.0.1:{http}/v2/repository/index", data=b"{}") as response:
            loaded = {m["name"] for m in json.load(response) if m.get("state") == "READY"}
        assert loaded == set(models["TRITON_MODELS"].split())
        config = dataclasses.replace(pipeline_config, triton_grpc=f"127.0.0.1:{grpc}",
                                     model_name=models["IMGSTREAM_MODEL_NAME"])
        pipeline = ImagePipeline(config)
        pipeline.open()
        try:
            result = pipeline.process(json.dumps({"id": "k8s-dev", "uri": f"s3://{test_bucket}/photos/LadyBird.jpg"}))
        finally:
            pipeline.close()
        assert isinstance(result, Prediction), result
        assert result.top_k[0].label == "ladybug"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # serve.sh execs tritonserver: its own session, started here
        proc.wait(timeout=60)
        log.close()
