"""What sending a batch to Triton costs the job, per image: `imgstream bench client`.

The job's own send path, `AsyncImagePipeline.infer` (`np.stack` of the batch's tensors, then
`TritonClassifier.infer`: the request serialised around the batch, gRPC), against the stack's Triton, in three
variants:

- in the request, glibc's malloc thresholds (`malloc_keep_bytes=0`): the baseline;
- in the request, large buffers kept in the heap (`malloc_keep_bytes`, the default);
- through a shared memory region (`triton_shared_memory`, a same-host Triton only), buffers kept.

Each variant runs in a fresh process (glibc's thresholds are process-wide and cannot be put
back), `calls` batches of `batch` distinct 224-px tensors after three warm-up calls; the rounds
rotate the variants' order so that a drifting machine spreads over all of them. Per image: the
client process's CPU (every thread: grpc's own included), its minor page faults, and Triton's
CPU (psutil, its process tree); per variant the client's peak RSS (what keeping buffers costs). The medians over rounds are reported, with each variant's
client CPU as a ratio of the baseline's at the same batch size.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from streaming.bench.e2e_workloads import figure
from streaming.bench.memory import tree_cpu_s
from streaming.config import PipelineConfig
from streaming.malloc import MAX_KEEP_BYTES
from streaming.stack import process
from streaming.stack.layout import StackLayout

WARM_CALLS = 10
MAX_CALLS = 10_000
MAX_BATCH = 256


@dataclass(frozen=True)
class Variant:
    label: str
    malloc_keep_bytes: int
    triton_shared_memory: bool

    def config(self, base: PipelineConfig) -> PipelineConfig:
        return dataclasses.replace(base, malloc_keep_bytes=self.malloc_keep_bytes,
                                   triton_shared_memory=self.triton_shared_memory)


VARIANTS = (Variant("in the request, glibc's malloc thresholds", 0, False),
            Variant("in the request, buffers kept (default)", MAX_KEEP_BYTES, False),
            Variant("shared memory, buffers kept", MAX_KEEP_BYTES, True))


def check_plan(batches: tuple[int, ...], calls: int, rounds: int) -> None:
    """ValueError naming the option when a value is out of bounds."""
    if not batches or any(not 1 <= b <= MAX_BATCH for b in batches):
        raise ValueError(f"--batches: each 1..{MAX_BATCH}, got {batches}")
    if not 1 <= calls <= MAX_CALLS:
        raise ValueError(f"--calls: 1..{MAX_CALLS}, got {calls}")
    if not 1 <= rounds <= 100:
        raise ValueError(f"--rounds: 1..100, got {rounds}")


def run(layout: StackLayout, base: PipelineConfig, batches: tuple[int, ...], calls: int, rounds: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    check_plan(batches, calls, rounds)
    triton = process.running_pid(layout.run_dir, "triton")
    samples: dict[tuple[int, str], list[dict[str, float]]] = {}
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for batch in batches:
            for variant in order:
                log(f"round {r + 1}/{rounds}, batch {batch}: {variant.label} ...")
                samples.setdefault((batch, variant.label), []).append(
                    _measure(variant.config(base), batch, calls, triton))
    rows = []
    for batch in batches:
        baseline = None
        for variant in VARIANTS:
            runs = samples[(batch, variant.label)]
            row = {"batch": batch, "variant": variant.label,
                   **{key: round(statistics.median(run[key] for run in runs), 4) for key in runs[0]},
                   "rounds": runs}
            baseline = baseline or row["client_cpu_ms_per_image"]
            row["client_cpu_vs_baseline"] = round(row["client_cpu_ms_per_image"] / baseline, 3) if baseline else None
            rows.append(row)
    return {"model": base.model_name, "calls": calls, "rounds": rounds, "rows": rows}


def _measure(config: PipelineConfig, batch: int, calls: int, triton: int | None) -> dict[str, float]:
    """One variant in a child process (`child`); Triton's CPU over the same calls."""
    spec = json.dumps({"triton_grpc": config.triton_grpc, "model_name": config.model_name,
                       "malloc_keep_bytes": config.malloc_keep_bytes,
                       "triton_shared_memory": config.triton_shared_memory, "batch": batch, "calls": calls})
    child = subprocess.Popen([sys.executable, "-m", "streaming.bench.client", spec], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    try:
        if child.stdout.readline().strip() != "warm":
            raise RuntimeError("the client process did not warm up")
        before = tree_cpu_s(triton)
        child.stdin.write("go\n")
        child.stdin.flush()
        measured = json.loads(child.stdout.readline())
        triton_s = tree_cpu_s(triton) - before
    finally:
        child.kill()
        child.wait()
    images = batch * calls
    return {"client_cpu_ms_per_image": 1000 * measured["cpu_s"] / images,
            "minor_faults_per_image": measured["minor_faults"] / images,
            "triton_cpu_ms_per_image": 1000 * triton_s / images,
            "wall_ms_per_batch": 1000 * measured["wall_s"] / calls, "peak_rss_mib": measured["max_rss_mib"]}


def child(spec: dict[str, Any]) -> None:
    """The measured side: the pipeline's own infer path, as the job's worker runs it."""
    import numpy as np

    from streaming.contract import INPUT_SIZE
    from streaming.infer import TritonClassifier
    from streaming.malloc import keep_large_buffers
    from streaming.pipeline import AsyncImagePipeline

    batch, calls = spec.pop("batch"), spec.pop("calls")
    config = PipelineConfig(**spec)
    keep_large_buffers(config.malloc_keep_bytes)  # what AsyncImagePipeline.open() does first
    classifier = TritonClassifier(config)
    classifier.open()
    try:
        pipeline = AsyncImagePipeline(config, classifier=classifier)
        rng = np.random.default_rng(0)
        tensors = [rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8) for _ in range(batch)]
        contract = classifier.contract
        for _ in range(WARM_CALLS):
            pipeline.infer(classifier, contract, tensors)
        print("warm", flush=True)
        sys.stdin.readline()
        faults, cpu, wall = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
        for _ in range(calls):
            pipeline.infer(classifier, contract, tensors)
        out = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
               "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
               "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB
        print(json.dumps(out), flush=True)
    finally:
        classifier.close()


def table(report: dict[str, Any]) -> str:
    lines = ["| batch | the batch goes | client CPU ms/image | ÷ baseline | minor page faults/image "
             "| Triton CPU ms/image | wall ms/batch | client's peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['batch']} | {r['variant']} | {figure(r['client_cpu_ms_per_image'], '.3f')} "
                     f"| {figure(r['client_cpu_vs_baseline'], '.2f')}× | {figure(r['minor_faults_per_image'], '.0f')} "
                     f"| {figure(r['triton_cpu_ms_per_image'], '.2f')} | {figure(r['wall_ms_per_batch'], '.1f')} "
                     f"| {figure(r.get('peak_rss_mib'), '.0f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
