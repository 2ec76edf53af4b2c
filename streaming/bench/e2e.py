"""`imgstream bench e2e`: the pipeline end to end on the local stack, against the cost of its
work alone and against the naive design, in one run.

1. The work alone, on the same photos and cores: preprocessing CPU-seconds per image (the
   engine, S3 fetch included, CPU time of this process: the preprocessing benchmark's own
   loop) and inference CPU-seconds per image (batched gRPC load on Triton at the job's batch
   size; CPU time of the Triton processes, read with psutil). Ideal = cores / (pre + inf).
2. The naive design (`naive.py`): one and two consumer processes.
3. The pipeline, one job per configuration, each on fresh topics: bursts as fast as possible
   (peak images/s: first send to last result, the best burst), then (the main job: the job as
   configured, at-least-once) fixed rates at 25/50/75/100% of peak (p50/p95/p99 and the stages
   of `timings_ms`) and a long run at 50% of peak with the RSS of the TaskManager, its Python
   workers and Triton sampled; then the other parallelism (1 <-> 2), INT8, and exactly-once.

Every run records the CPU-seconds each process group used (`memory.CpuMeter`), and the
machine's busy time that no stack process accounts for ("other"), so a shared machine shows.

Workloads (`workloads.py`): the first one (by default `large`, the photos above) gets all of the
above; each further one (by default `small`, ImageNet-sized photos) gets its own preprocessing
alone (inference alone does not depend on the photos) and a main job with its bursts and one
rate point at 50% of its peak, under `report["other_workloads"][name]` with the same keys.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from streaming.ops import jobs
from streaming.bench import load, memory
from streaming.bench.workloads import Workload, builtin_workload
from streaming.bench.e2e_report import rate as rate_of
from streaming.bench.photos import BenchPhoto, sample_photos
from streaming.config import PipelineConfig
from streaming.stack.layout import StackLayout

BUCKET = "bench-e2e"
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
MEMORY_FRACTION = 0.5


@dataclass(frozen=True)
class Settings:
    mode: str  # "full", "quick" or "smoke"
    pre_seconds: float  # CPU seconds per preprocessing round
    inf_seconds: float  # wall seconds per inference round and model
    rounds: int
    peak_seconds: float  # a burst is sized to last about this long at the expected rate
    curve_seconds: float  # per rate point
    memory_seconds: float  # the long run at 50% of peak
    memory_from_s: float  # RSS growth is measured from here to the end of the long run
    eo_seconds: float  # exactly-once latency run
    naive_rounds: int  # requests per naive run = rounds x photos
    fractions: tuple[float, ...] = FRACTIONS
    naive_processes: tuple[int, ...] = (1, 2)
    extra_jobs: bool = True  # the other parallelism, INT8, exactly-once
    min_requests: int = 40
    peak_rounds: int = 1  # bursts per job; the best counts (other work on a shared machine only slows one down)
    slot_wait_s: float = 300.0  # how long a job waits for task slots that other jobs hold


MODES = {
    "full": Settings("full", 2.0, 4.0, 3, 40, 40, 600, 120, 45, 8, peak_rounds=2),
    "quick": Settings("quick", 1.0, 2.0, 2, 20, 15, 120, 30, 25, 3),
    "smoke": Settings("smoke", 0.1, 0.5, 1, 3, 2, 10, 2, 0, 1, fractions=(0.5, 1.0), naive_processes=(1,),
                      extra_jobs=False, min_requests=8, slot_wait_s=60.0),
}


def e2e_photos(samples_dir: Path, *, smoke: bool = False) -> list[BenchPhoto]:
    """Real photos of several sizes: the mate-backgrounds JPEGs as published (1.3-4.9 MP,
    two progressive) and the 12 MP mosaic of the preprocessing benchmark."""
    from io import BytesIO

    from PIL import Image

    mate = samples_dir / "mate-backgrounds"
    photos = []
    for path in sorted(mate.glob("*.jpg")):
        data = path.read_bytes()
        with Image.open(BytesIO(data)) as image:
            width, height = image.size
        group = "progressive" if image.info.get("progressive") else "baseline"
        photos.append(BenchPhoto(path.name, f"{width * height / 1e6:.1f}MP {group}", data, width, height))
    if smoke:
        return photos[:3]
    mosaic = next(p for p in sample_photos(mate) if p.group == "12MP baseline")
    return [*photos, dataclasses.replace(mosaic, group="12.0MP baseline")]


class Progress:
    """`label  n/total` on stderr, rewritten at most every half second."""

    def __init__(self, label: str, total: int, stream=sys.stderr):
        self.label, self.total, self.stream = label, total, stream
        self._last = 0.0

    def __call__(self, n: int) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5 or n >= self.total:
            self._last = now
            width = 30
            done = int(width * min(n, self.total) / max(1, self.total))
            self.stream.write(f"\r  {self.label:<28} [{'#' * done}{'.' * (width - done)}] {n}/{self.total}")
            if n >= self.total:
                self.stream.write("\n")
            self.stream.flush()


@dataclass
class Bench:
    """What every phase needs."""

    layout: StackLayout
    base: PipelineConfig
    settings: Settings
    connector_jar: Path
    uris: list[str]
    groups: memory.ProcessGroups
    log: Callable[[str], None]
    progress: bool = True

    def load(self, config: PipelineConfig, label: str, count: int, rate: float | None = None,
             timeout_s: float = 900.0) -> dict[str, Any]:
        """One load run with its CPU accounting; the LoadResult row plus `cpu_s`."""
        meter = memory.CpuMeter(self.groups).start()
        result = load.run_load(config, self.uris, count, rate_per_s=rate, timeout_s=timeout_s,
                               progress=Progress(label, count) if self.progress else None)
        cpu = meter.stop()
        row = result.row()
        row["cpu_s"] = cpu
        row["wall_s"] = round(meter.wall_s, 2)
        row["cpu_s_per_image"] = {k: round(v / result.results, 5) for k, v in cpu.items()} if result.results else {}
        row["cpu_s_within"] = meter.within  # parts of a group (the decoder processes of the Python workers)
        row["cpu_s_per_image_within"] = ({k: round(v / result.results, 5) for k, v in meter.within.items()}
                                         if result.results else {})
        if result.results < count:
            self.log(f"  {label}: only {result.results}/{count} results")
        return row

    def burst_count(self, expected_per_s: float) -> int:
        return max(self.settings.min_requests, int(expected_per_s * self.settings.peak_seconds))


def default_workloads(layout: StackLayout, settings: Settings) -> list[Workload]:
    return [builtin_workload(name, layout.samples_dir, smoke=settings.mode == "smoke") for name in ("large", "small")]


def run(layout: StackLayout, base: PipelineConfig, connector_jar: Path, settings: Settings,
        log: Callable[[str], None] = print, progress: bool = True,
        workloads: list[Workload] | None = None) -> dict[str, Any]:
    """Every measurement; returns the report (see `e2e_report.py` for its tables and targets)."""
    from streaming.bench import e2e_alone as alone

    started = time.time()
    load_before = os.getloadavg()
    first, *others = workloads or default_workloads(layout, settings)
    photos = list(first.photos)
    bench = new_bench(layout, base, connector_jar, settings, first, log, progress)
    base = bench.base
    log(f"workload {first.name}: {len(photos)} photos ({', '.join(sorted({p.group for p in photos}))}); "
        f"mode {settings.mode}")

    report: dict[str, Any] = {"benchmark": "e2e", "mode": settings.mode,
                              "settings": dataclasses.asdict(settings),
                              "config": {k: getattr(base, k) for k in CONFIG_KEYS},
                              "workload": first.summary(), "photos": photo_rows(photos)}
    log("the work alone: preprocessing ...")
    report["alone"] = {"preprocess": alone.preprocess(bench, photos)}
    log("the work alone: inference ...")
    models = (base.model_name,) if not settings.extra_jobs else (base.model_name, int8_name(base.model_name))
    report["alone"]["inference"] = alone.inference(bench, models, base.max_batch_size)
    cores = os.cpu_count() or 1
    pre = report["alone"]["preprocess"]["cpu_s_per_image"]
    report["alone"]["ideal_images_per_s"] = {
        m: round(cores / (pre + row["triton_cpu_s_per_image"]), 2) for m, row in report["alone"]["inference"].items()}
    expected = report["alone"]["ideal_images_per_s"][base.model_name]

    log("the naive design ...")
    report["naive"] = alone.naive_runs(bench)

    # the job as configured (parallelism 1 by default), at-least-once for latency; then the other
    # parallelism (1 <-> 2: the TaskManager has 2 slots), INT8 and exactly-once
    main_config = dataclasses.replace(base, delivery_guarantee="at_least_once")
    other = 2 if main_config.parallelism == 1 else 1
    jobs_plan = [("main", main_config, "curve")]
    if settings.extra_jobs:
        jobs_plan += [(f"parallelism_{other}", dataclasses.replace(main_config, parallelism=other), "peak"),
                      ("int8", dataclasses.replace(main_config, model_name=int8_name(base.model_name)), "peak"),
                      ("exactly_once", dataclasses.replace(main_config, delivery_guarantee="exactly_once"), "eo")]
    report["runs"] = {}
    for name, config, plan in jobs_plan:
        log(f"job {name}: parallelism {config.parallelism}, {config.model_name}, {config.delivery_guarantee} ...")
        report["runs"][name] = job_runs(bench, name, config, plan, expected, report["runs"].get("main"))
    report["other_workloads"] = {}
    for workload in others:
        report["other_workloads"][workload.name] = workload_runs(bench, workload, main_config, report["alone"])
    report["machine"] = machine(load_before, started)
    return report


def workload_runs(bench: Bench, workload: Workload, config: PipelineConfig, alone_first: dict) -> dict[str, Any]:
    """A further workload: its preprocessing alone, and the main job's bursts and 50% point."""
    from streaming.bench import e2e_alone as alone

    photos = list(workload.photos)
    bench = dataclasses.replace(bench, uris=upload(bench.layout, photos, workload.name))
    bench.log(f"workload {workload.name}: {len(photos)} photos; the work alone: preprocessing ...")
    pre = alone.preprocess(bench, photos)
    cores = os.cpu_count() or 1
    inference = alone_first["inference"]
    out: dict[str, Any] = {"workload": workload.summary(), "photos": photo_rows(photos),
                           "alone": {"preprocess": pre, "inference": inference, "inference_from": "the first workload",
                                     "ideal_images_per_s": {m: round(cores / (pre["cpu_s_per_image"]
                                                                              + row["triton_cpu_s_per_image"]), 2)
                                                            for m, row in inference.items()}}}
    expected = out["alone"]["ideal_images_per_s"][config.model_name]
    name = f"{_slug(workload.name)}-main"
    bench.log(f"job {name}: parallelism {config.parallelism}, {config.model_name}, {config.delivery_guarantee} ...")
    out["runs"] = {"main": job_runs(bench, name, config, "half", expected, None)}
    return out


def bench_config(base: PipelineConfig) -> PipelineConfig:
    """The job settings every benchmark job runs with: the benchmark's bucket allowed, no cache
    (every image is decoded), topics read from the start."""
    return dataclasses.replace(base, allowed_buckets=tuple(dict.fromkeys((*base.allowed_buckets, BUCKET))),
                               cache_bytes=0, start_from="earliest")


def new_bench(layout: StackLayout, base: PipelineConfig, connector_jar: Path, settings: Settings,
              workload: Workload, log: Callable[[str], None], progress: bool = True) -> Bench:
    """A Bench over `workload`'s photos, uploaded to the benchmark's bucket, with `bench_config(base)`."""
    uris = upload(layout, list(workload.photos), workload.name)
    return Bench(layout, bench_config(base), settings, connector_jar, uris, memory.ProcessGroups(layout), log,
                 progress)


def photo_rows(photos: list[BenchPhoto]) -> list[dict[str, Any]]:
    return [{"name": p.name, "group": p.group, "width": p.width, "height": p.height, "bytes": len(p.data)}
            for p in photos]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "photos"


CONFIG_KEYS = ("model_name", "max_batch_size", "max_batch_wait_ms", "infer_concurrency", "max_in_flight",
               "fetch_concurrency", "decode_concurrency", "bundle_size", "bundle_time_ms", "checkpoint_interval_ms",
               "cache_bytes")


def int8_name(model: str) -> str:
    return model if model.endswith("_int8") else f"{model}_int8"


def upload(layout: StackLayout, photos: list[BenchPhoto], workload: str = "large") -> list[str]:
    from streaming.stack import s3 as stack_s3

    client = stack_s3.s3_client(layout)
    stack_s3.ensure_bucket(layout, BUCKET, client)
    prefix = f"photos/{_slug(workload)}"
    for photo in photos:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{photo.name}", Body=photo.data)
    return [f"s3://{BUCKET}/{prefix}/{p.name}" for p in photos]


def free_slots(layout: StackLayout) -> int:
    from streaming.stack import flink

    return int((flink.overview(layout) or {}).get("slots-available", 0))


def wait_for_slots(bench: Bench, needed: int) -> int:
    """Free task slots, after waiting up to `slot_wait_s` for other jobs to end."""
    deadline = time.monotonic() + bench.settings.slot_wait_s
    slots = free_slots(bench.layout)
    if slots < needed:
        bench.log(f"  waiting up to {bench.settings.slot_wait_s:.0f} s for {needed} free task slot(s) ({slots} now)")
    while slots < needed and time.monotonic() < deadline:
        time.sleep(5)
        slots = free_slots(bench.layout)
    return slots


def job_runs(bench: Bench, name: str, config: PipelineConfig, plan: str, expected: float,
             main: dict | None) -> dict[str, Any]:
    """One job on fresh topics: warm-up, then the runs of `plan`; always cancelled."""
    out: dict[str, Any] = {"parallelism": config.parallelism, "model": config.model_name,
                           "delivery_guarantee": config.delivery_guarantee}
    slots = wait_for_slots(bench, config.parallelism)
    if slots < config.parallelism:
        out["skipped"] = f"{slots} free task slot(s), {config.parallelism} needed (another job holds them)"
        bench.log(f"  skipped: {out['skipped']}")
        return out
    job = jobs.submit_on_fresh_topics(bench.layout, config, bench.connector_jar, f"bench-e2e-{name}")
    job_id, config = job.id, job.config
    try:
        warm = bench.load(config, f"{name}: warm-up", max(len(bench.uris) * 2, bench.settings.min_requests // 2))
        out["warmup"] = {"results": warm["results"], "images_per_s": warm["images_per_s"]}
        s = bench.settings
        if plan == "eo":  # latency at the main job's 50% rate first: the price of exactly-once
            rate = MEMORY_FRACTION * (rate_of((main or {}).get("peak")) or expected)
            count = max(s.min_requests, int(rate * s.eo_seconds))
            out["at_50pct"] = bench.load(config, f"{name}: {rate:.1f}/s", count, rate)
        bursts = [bench.load(config, f"{name}: peak (burst {i + 1}/{s.peak_rounds})", bench.burst_count(expected))
                  for i in range(s.peak_rounds)]
        peak = out["peak"] = max(bursts, key=lambda row: rate_of(row) or 0.0)
        out["peak_rounds_images_per_s"] = [rate_of(row) for row in bursts]
        if plan in ("curve", "half"):  # "half": only the 50% point, for a further workload
            top = rate_of(peak)
            out["curve"] = []
            for fraction in s.fractions if plan == "curve" else (MEMORY_FRACTION,):
                rate = fraction * top
                count = max(s.min_requests, int(rate * s.curve_seconds))
                row = bench.load(config, f"{name}: {fraction:.0%} = {rate:.1f}/s", count, rate)
                row["fraction"] = fraction
                out["curve"].append(row)
            if plan == "curve":
                out["memory"] = memory_run(bench, config, MEMORY_FRACTION * top)
    finally:
        load.stop_job(bench.layout, job_id, config)
    return out


def memory_run(bench: Bench, config: PipelineConfig, rate: float) -> dict[str, Any]:
    """`memory_seconds` at `rate` with the RSS of the TaskManager JVM, its Python workers and Triton."""
    s = bench.settings
    count = max(s.min_requests, int(rate * s.memory_seconds))
    sampler = memory.RssSampler(bench.groups, interval_s=max(1.0, min(10.0, s.memory_seconds / 60))).start()
    row = bench.load(config, f"long run: {s.memory_seconds:.0f}s at {rate:.1f}/s", count, rate)
    samples = sampler.stop()
    row["rss_mib"] = samples
    row["rss_from_s"] = s.memory_from_s
    row["rss_growth"] = {name: _round(memory.growth(samples, name, s.memory_from_s))
                         for name in memory.RSS_GROUPS}
    return row


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def machine(load_before: tuple[float, float, float], started: float) -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "load_average_before": [round(v, 2) for v in load_before],
                            "load_average_after": [round(v, 2) for v in os.getloadavg()],
                            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                            "duration_s": round(time.time() - started, 1)}
    try:
        model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        info["cpu"] = model[0] if model else platform.processor()
    except OSError:
        pass
    return info
