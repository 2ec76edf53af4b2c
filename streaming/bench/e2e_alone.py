"""The end-to-end benchmark's baselines: the work alone (preprocessing, inference) and the naive design.

* Preprocessing: the engine's `fetch_decode` from the local S3 on the benchmark's photos, timed
  by the preprocessing benchmark's own loop (`measure.measure`: CPU time of this process), in
  rounds; S3Proxy's CPU is recorded beside it (the server side of the fetch).
* Inference: `triton_models.loadgen.run_cell` (closed-loop gRPC, `concurrency` requests of
  `batch` images in flight) against the stack's Triton; the CPU time of Triton's processes
  (server + python-backend stubs) per image, and the client's.
* Naive: `naive.py`'s consumers, 1 and 2 processes, loaded like the pipeline.
"""
from __future__ import annotations

import statistics
import uuid
from typing import TYPE_CHECKING, Any

from streaming.bench import memory, naive
from streaming.bench.measure import measure
from streaming.bench.photos import BenchPhoto
from streaming.contract import INPUT_SIZE
from streaming.stack import kafka

if TYPE_CHECKING:
    from streaming.bench.e2e import Bench

INFER_CONCURRENCY = 2  # the job's infer_concurrency: batches in flight to Triton


def preprocess(bench: "Bench", photos: list[BenchPhoto]) -> dict[str, Any]:
    """CPU-seconds per image of fetch + decode + resize, this process, round-robin over the photos."""
    from streaming.contract import Resize
    from streaming.prepare import fetch_decode
    from streaming.fetch import Fetcher
    from streaming.uris import parse_uri

    config = bench.base
    refs = [parse_uri(uri, config) for uri in bench.uris]
    per_core: list[float] = []
    s3_cpu = images = 0.0
    with Fetcher(config).open() as fetcher:
        calls = [(lambda ref=ref: fetch_decode(fetcher, ref, resize=Resize(),
                                               max_pixels=config.max_pixels), p.megapixels)
                 for ref, p in zip(refs, photos)]
        for call, _ in calls:  # warm: connections, imports, first allocations
            call()
        for _ in range(bench.settings.rounds):
            meter = memory.CpuMeter(bench.groups, poll_s=None).start()
            sample = measure(calls, bench.settings.pre_seconds)
            cpu = meter.stop()
            per_core.append(sample.per_core)
            s3_cpu += cpu.get("s3proxy", 0.0)
            images += sample.images
    median = statistics.median(per_core)
    return {"cpu_s_per_image": round(1 / median, 5), "images_per_core_s": round(median, 2),
            "rounds_images_per_core_s": [round(v, 2) for v in per_core],
            "s3proxy_cpu_s_per_image": round(s3_cpu / images, 5) if images else None,
            "method": "engine fetch_decode (S3 GET + DCT-scaled decode + crop/resize), CPU time of one process"}


def inference(bench: "Bench", models: tuple[str, ...], batch: int) -> dict[str, Any]:
    """Per model: Triton's CPU-seconds per image at `batch`, the client's, and images/s (wall)."""
    from triton_models.loadgen import run_cell

    url = bench.layout.triton_grpc
    rows: dict[str, dict[str, list[float]]] = {m: {"triton": [], "client": [], "wall": []} for m in models}
    for model in models:
        run_cell(url, model, INPUT_SIZE, batch, concurrency=1, seconds=0.2)  # warm this shape
    for r in range(bench.settings.rounds):
        order = models[r % len(models):] + models[:r % len(models)]
        for model in order:
            meter = memory.CpuMeter(bench.groups, poll_s=None).start()
            latencies, wall = run_cell(url, model, INPUT_SIZE, batch, concurrency=INFER_CONCURRENCY,
                                       seconds=bench.settings.inf_seconds)
            cpu = meter.stop()
            images = len(latencies) * batch
            rows[model]["triton"].append(cpu.get("triton", 0.0) / images)
            rows[model]["client"].append(cpu.get("load_generator", 0.0) / images)
            rows[model]["wall"].append(images / wall)
    out = {}
    for model, row in rows.items():
        out[model] = {"batch": batch, "concurrency": INFER_CONCURRENCY,
                      "triton_cpu_s_per_image": round(statistics.median(row["triton"]), 5),
                      "client_cpu_s_per_image": round(statistics.median(row["client"]), 5),
                      "images_per_s": round(statistics.median(row["wall"]), 2),
                      "rounds_triton_cpu_s_per_image": [round(v, 5) for v in row["triton"]]}
    return out


def naive_runs(bench: "Bench") -> dict[str, Any]:
    """The naive consumers (1, then 2 processes), each on fresh topics, after a warm-up."""
    from triton_models.variants import NAIVE_VARIANT

    out: dict[str, Any] = {"model": NAIVE_VARIANT.name}
    count = max(bench.settings.min_requests // 2, bench.settings.naive_rounds * len(bench.uris))
    with naive.naive_triton(bench.layout) as url:
        bench.groups.extra["naive_triton"] = lambda: [p for p in [naive.triton_pid(bench.layout)] if p]
        for processes in bench.settings.naive_processes:
            suffix = uuid.uuid4().hex[:8]
            config = _topics(bench, f"naive-{suffix}", partitions=max(2, processes))
            with naive.consumers(bench.layout, processes, requests=config.requests_topic,
                                 results=config.results_topic, group=f"naive-{suffix}", triton_url=url,
                                 model=NAIVE_VARIANT.name) as procs:
                bench.groups.extra["naive_consumers"] = lambda procs=procs: [p.pid for p in procs]
                bench.load(config, f"naive x{processes}: warm-up", len(bench.uris) * processes)
                out[str(processes)] = bench.load(config, f"naive x{processes}", count * processes)
            bench.groups.extra.pop("naive_consumers", None)
            kafka.delete_topics(bench.layout, [config.requests_topic, config.results_topic])
        bench.groups.extra.pop("naive_triton", None)
    return out


def _topics(bench: "Bench", prefix: str, partitions: int):
    import dataclasses

    config = dataclasses.replace(bench.base, requests_topic=f"bench-{prefix}-requests",
                                 results_topic=f"bench-{prefix}-results")
    kafka.ensure_topics(bench.layout, [config.requests_topic, config.results_topic], partitions)
    return config
