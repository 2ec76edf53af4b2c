"""The job's Python operator without Flink: `imgstream bench worker`.

`AsyncImagePipeline`, what the job's async operator runs, in this process on the stack's S3 and
Triton, with `max_in_flight` requests at once (the operator's capacity), over a workload's
photos; beside it, in the same run, the decode alone (`decode_to_tensor` of the same bytes in
this process, no fetch). Per image, the median of `rounds`: this process's CPU (fetch, the
hand-off to the decoder processes, batching, the gRPC client, the event loop and its threads,
results), the decoder processes' CPU, and the decode alone. The event loop runs on a thread of its
own and every request is handed to it with `run_coroutine_threadsafe`, as PyFlink's async
operator does. With `profile`, py-spy samples this process during one more round, not in the
median (`--gil`: the thread holding the GIL; `--nonblocking`), by stage (`pyspy`).

What Flink adds on top of this (the Beam bridge, the JVMs) is the end-to-end benchmark's "job's
own CPU" minus "operator beyond decoding" here; on a shared machine the two runs are minutes
apart, so read that difference as an estimate.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from streaming.bench import e2e, pyspy
from streaming.bench.e2e_workloads import figure
from streaming.bench.workloads import Workload
from streaming.config import PipelineConfig
from streaming.events import Prediction
from streaming.stack.layout import StackLayout

MAX_REQUESTS = 100_000
MAX_ROUNDS = 20
WARM_REQUESTS = 100


def check_plan(requests: int, rounds: int) -> None:
    """ValueError naming the option when a value is out of bounds."""
    if not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"--requests: 1..{MAX_REQUESTS}, got {requests}")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"--rounds: 1..{MAX_ROUNDS}, got {rounds}")


def run(layout: StackLayout, base: PipelineConfig, workload: Workload, requests: int, rounds: int,
        py_spy: str | None, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from streaming.pipeline import AsyncImagePipeline

    check_plan(requests, rounds)
    uris = e2e.upload(layout, list(workload.photos), workload.name)
    config = e2e.bench_config(base)
    events = [json.dumps({"id": f"w{i}", "uri": uris[i % len(uris)]}).encode() for i in range(requests)]
    decode_ms = _decode_alone(workload, config, rounds)
    pipeline = AsyncImagePipeline(config)
    pipeline.open()
    loop = asyncio.new_event_loop()  # on a thread of its own, fed from this one: as PyFlink's operator runs it
    runner = threading.Thread(target=loop.run_forever, name="worker-bench-loop", daemon=True)
    runner.start()
    runs, profile = [], None
    try:
        _feed(loop, pipeline, events[:WARM_REQUESTS], config.max_in_flight)
        for r in range(rounds):
            runs.append(_round(loop, pipeline, events, config.max_in_flight))
            log(f"round {r + 1}/{rounds}: {runs[-1]['images_per_s']:.1f} images/s, "
                f"{runs[-1]['operator_ms']:.2f} ms/image in this process")
        if py_spy:
            profile = _profiled(loop, pipeline, events, config.max_in_flight, py_spy,
                                out / f"worker-{e2e._slug(workload.name)}-{time.strftime('%Y%m%d-%H%M%S')}.collapsed.txt")
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        pipeline.close()
        loop.close()
    median = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
    return {"benchmark": "worker", "workload": workload.summary(), "model": config.model_name,
            "max_in_flight": config.max_in_flight, "requests": requests, "rounds": runs, "median": median,
            "decode_alone_ms": decode_ms,
            "operator_beyond_decode_vs_decode_alone": round(median["operator_ms"] / decode_ms, 2),
            "profile": profile}


def _round(loop: asyncio.AbstractEventLoop, pipeline: Any, events: list[bytes], in_flight: int) -> dict[str, float]:
    me = psutil.Process()
    before, decoders, wall = sum(me.cpu_times()[:2]), pipeline.decoder.cpu_seconds(), time.perf_counter()
    results = _feed(loop, pipeline, events, in_flight)
    wall = time.perf_counter() - wall
    own, decoders = sum(me.cpu_times()[:2]) - before, pipeline.decoder.cpu_seconds() - decoders
    n = len(events)
    errors = sum(1 for r in results if not isinstance(r, Prediction))
    return {"images_per_s": n / wall, "operator_ms": 1000 * own / n, "decoders_ms": 1000 * decoders / n,
            "errors": errors}


def _feed(loop: asyncio.AbstractEventLoop, pipeline: Any, events: list[bytes], in_flight: int) -> list:
    """Every event through `pipeline.process` on `loop`, at most `in_flight` at once: each one handed
    over with `run_coroutine_threadsafe`, as PyFlink's async operator hands over a record."""
    slots = threading.BoundedSemaphore(in_flight)
    futures = []
    for event in events:
        slots.acquire()
        future = asyncio.run_coroutine_threadsafe(pipeline.process(event), loop)
        future.add_done_callback(lambda _: slots.release())
        futures.append(future)
    return [future.result() for future in futures]


def _profiled(loop: asyncio.AbstractEventLoop, pipeline: Any, events: list[bytes], in_flight: int, py_spy: str,
              raw: Path) -> dict[str, Any]:
    """One more round (not in the median) while py-spy samples this process; its stages."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen([py_spy, "record", "--gil", "--nonblocking", "--pid", str(os.getpid()), "--rate", "200",
                            "--format", "raw", "--output", str(raw)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)  # attached before the round starts
    _feed(loop, pipeline, events, in_flight)
    spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
    output, _ = spy.communicate(timeout=60)
    if not raw.exists():
        return {"error": output.strip()[-500:]}
    rows = pyspy.group(pyspy.parse_collapsed(raw.read_text()))
    return {"stages": [dataclasses.asdict(row) for row in rows], "collapsed": str(raw)}


def _decode_alone(workload: Workload, config: PipelineConfig, rounds: int) -> float:
    """CPU ms per image of `decode_to_tensor` over the photos, this process, median of `rounds`."""
    from streaming.contract import Resize
    from streaming.decode import decode_to_tensor

    data = [p.data for p in workload.photos]
    for d in data:
        decode_to_tensor(d, Resize(), max_pixels=config.max_pixels)
    per_image = []
    for _ in range(rounds):
        start, n = time.process_time(), 0
        while time.process_time() - start < 1.0 or n < len(data):
            decode_to_tensor(data[n % len(data)], Resize(), max_pixels=config.max_pixels)
            n += 1
        per_image.append(1000 * (time.process_time() - start) / n)
    return round(statistics.median(per_image), 3)


def table(report: dict[str, Any]) -> str:
    m, decode = report["median"], report["decode_alone_ms"]
    lines = ["| CPU ms per image | |", "|---|---|",
             f"| decode alone (this process, the same photos) | {figure(decode, '.2f')} |",
             f"| decoder processes (decode + resize + their side of the hand-off) | {figure(m['decoders_ms'], '.2f')} |",
             f"| **operator beyond decoding** (this process: fetch, hand-off, batching, gRPC, event loop, results) "
             f"| **{figure(m['operator_ms'], '.2f')}** |",
             f"| operator beyond decoding ÷ decode alone | {figure(report['operator_beyond_decode_vs_decode_alone'], '.2f')}× |",
             f"| images/s (this process and its decoders; errors: {m['errors']:.0f}) | {figure(m['images_per_s'], '.1f')} |"]
    profile = report.get("profile") or {}
    if profile.get("stages"):
        rows = [pyspy.StageRow(**row) for row in profile["stages"]]
        lines += ["", pyspy.table(rows, m["operator_ms"])]
    elif profile.get("error"):
        lines += ["", f"py-spy failed: {profile['error']}"]
    return "\n".join(lines)
