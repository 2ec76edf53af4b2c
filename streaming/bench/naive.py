"""The naive design users often build first, as the end-to-end benchmark's baseline.

A plain Python Kafka consumer (kafka-python), one message at a time: download the image with
boto3, decode it fully with Pillow, centre-crop and resize, normalise to a float32 NCHW tensor,
send it alone to Triton (`efficientnet_lite0_float`, the same network taking float input), take
the top 5 of the 1000 probabilities in numpy, produce the result. Each consumer is its own
process (`python -m streaming.bench.naive`), as it would be deployed; several share a consumer
group.

Its model is served by a Triton of its own (the stack's server binary, ports 28100-28102, a
repository under the stack folder holding only the float variant), so the stack's repository
and tests stay as they are.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from streaming.bench.side_triton import side_triton
from streaming.stack import process
from streaming.stack.layout import StackLayout

PORTS = (28100, 28101, 28102)  # http, grpc, metrics: away from the stack's and `models eval`'s
SERVICE_NAME = "triton-naive"
TOP_K = 5


# -- the consumer (runs in its own process) ---------------------------------------------------
def consume(bootstrap: str, requests: str, results: str, group: str, s3_endpoint: str, triton_url: str,
            model: str) -> None:
    """The naive loop, forever. S3 credentials come from the standard AWS variables."""
    import boto3
    import tritonclient.grpc as grpcclient
    from kafka import KafkaConsumer, KafkaProducer

    from streaming.bench.methods import naive_pillow
    from streaming.contract import INPUT_NAME, OUTPUT_NAME, PIXEL_MEAN, PIXEL_STD, load_labels

    labels = load_labels()
    consumer = KafkaConsumer(requests, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=True)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client = grpcclient.InferenceServerClient(triton_url)
    for message in consumer:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        event: dict = {}
        try:
            event = json.loads(message.value)
            bucket, _, key = event["uri"].removeprefix("s3://").partition("/")
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            t1 = time.perf_counter()
            pixels = naive_pillow(data)  # full decode, convert('RGB'), crop + bicubic resize
            tensor = ((pixels.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)[None].copy()
            t2 = time.perf_counter()
            inp = grpcclient.InferInput(INPUT_NAME, list(tensor.shape), "FP32")
            inp.set_data_from_numpy(tensor)
            probs = client.infer(model, [inp], client_timeout=60).as_numpy(OUTPUT_NAME)[0]
            best = np.argsort(probs)[::-1][:TOP_K]
            t3 = time.perf_counter()
            timings = {"fetch": (t1 - started) * 1000, "decode": (t2 - t1) * 1000, "infer": (t3 - t2) * 1000}
            body = {"id": event["id"], "uri": event["uri"], "model": model,
                    "top_k": [{"label": labels[i], "index": int(i), "score": float(probs[i])} for i in best]}
        except Exception as exc:  # noqa: BLE001 - one result per request, even for the baseline
            body = {"id": event.get("id"), "uri": event.get("uri"),
                    "error": {"code": "naive_failed", "stage": "unknown", "message": f"{type(exc).__name__}: {exc}"}}
        timings["total"] = (time.perf_counter() - started) * 1000
        body["timings_ms"] = timings
        producer.send(results, json.dumps(body).encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the naive consumer (baseline of `imgstream bench e2e`)")
    for name in ("bootstrap", "requests", "results", "group", "s3-endpoint", "triton", "model"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args(argv)
    consume(args.bootstrap, args.requests, args.results, args.group, args.s3_endpoint, args.triton, args.model)
    return 0


# -- running it --------------------------------------------------------------------------------
@contextmanager
def naive_triton(layout: StackLayout, ports: tuple[int, int, int] = PORTS,
                 intra_op_threads: int | None = None) -> Iterator[str]:
    """A Triton serving only the float-input variant; yields its gRPC address, always stops it."""
    from triton_models.build import build_repository, store_in
    from triton_models.variants import NAIVE_VARIANT

    repository = layout.root / "bench" / "naive-repository"
    repository.mkdir(parents=True, exist_ok=True)
    build_repository(repository, store=store_in(layout.root), variants=(NAIVE_VARIANT,),
                     intra_op_threads=intra_op_threads, response_cache=False)
    with side_triton(layout, repository, ports, SERVICE_NAME) as own:
        yield own.triton_grpc


def triton_pid(layout: StackLayout) -> int | None:
    return process.running_pid(layout.run_dir, SERVICE_NAME)


@contextmanager
def consumers(layout: StackLayout, count: int, *, requests: str, results: str, group: str,
              triton_url: str, model: str) -> Iterator[list[subprocess.Popen]]:
    """`count` naive consumer processes in one group; stopped (by their pids) on exit."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": layout.s3_access_key,
           "AWS_SECRET_ACCESS_KEY": layout.s3_secret_key, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "streaming.bench.naive", "--bootstrap", layout.kafka_bootstrap,
            "--requests", requests, "--results", results, "--group", group,
            "--s3-endpoint", layout.s3_endpoint, "--triton", triton_url, "--model", model]
    log = layout.run_dir / "bench-naive.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        with open(log, "ab") as out:
            for _ in range(count):
                procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2]))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


if __name__ == "__main__":
    raise SystemExit(main())
