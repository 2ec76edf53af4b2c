"""What one S3 GET costs the job, per object: `imgstream bench fetch`.

A workload's photos in the stack's S3, fetched one after another in this process, `gets` GETs
per variant and round:

- boto3 `get_object` + `read()` (the baseline: what a user's own fetcher would call);
- the job's `Fetcher.fetch` (`streaming.fetch`: the URI policy, a SigV4-signed GET over a pooled
  keep-alive connection under a deadline, the bounded head and body reader).

CPU is this process's (`time.process_time`: every thread, SigV4 signing, TLS were it on, the
socket calls), never wall time; S3Proxy's CPU is not counted. The rounds rotate the variants'
order so a drifting machine spreads over both; the medians are reported, each as a ratio of the
baseline's. Before timing, every photo is fetched both ways and the bytes compared.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from streaming.bench import e2e
from streaming.bench.e2e_workloads import figure
from streaming.bench.workloads import Workload
from streaming.config import PipelineConfig
from streaming.stack.layout import StackLayout

MAX_GETS = 100_000
MAX_ROUNDS = 20
BASELINE = "boto3 get_object"
VARIANTS = (BASELINE, "Fetcher.fetch (the job's)")


def check_plan(gets: int, rounds: int) -> None:
    """ValueError naming the option when a value is out of bounds."""
    if not 1 <= gets <= MAX_GETS:
        raise ValueError(f"--gets: 1..{MAX_GETS}, got {gets}")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"--rounds: 1..{MAX_ROUNDS}, got {rounds}")


def run(layout: StackLayout, base: PipelineConfig, workload: Workload, gets: int, rounds: int,
        log: Callable[[str], None]) -> dict[str, Any]:
    from streaming.fetch import Fetcher
    from streaming.stack import s3 as stack_s3
    from streaming.uris import parse_uri

    check_plan(gets, rounds)
    uris = e2e.upload(layout, list(workload.photos), workload.name)
    config = e2e.bench_config(base)
    refs = [parse_uri(uri, config) for uri in uris]
    client = stack_s3.s3_client(layout)
    with Fetcher(config) as fetcher:
        calls: dict[str, Callable[[int], bytes]] = {
            BASELINE: lambda i: client.get_object(Bucket=refs[i].bucket, Key=refs[i].key)["Body"].read(),
            VARIANTS[1]: lambda i: fetcher.fetch(refs[i]).data,
        }
        for i in range(len(refs)):  # the same bytes both ways (this also opens the connections)
            if calls[BASELINE](i) != calls[VARIANTS[1]](i):
                raise RuntimeError(f"the two ways fetched different bytes for {uris[i]}")
        per_get: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for r in range(rounds):
            for name in VARIANTS[r % 2:] + VARIANTS[:r % 2]:
                started = time.process_time()
                for n in range(gets):
                    calls[name](n % len(refs))
                per_get[name].append((time.process_time() - started) / gets * 1000)
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.3f} ms" for n, v in per_get.items()))
    baseline = statistics.median(per_get[BASELINE])
    rows = [{"variant": name, "cpu_ms_per_get": round(statistics.median(values), 4),
             "rounds_cpu_ms_per_get": [round(v, 4) for v in values],
             "vs_baseline": round(statistics.median(values) / baseline, 3)} for name, values in per_get.items()]
    mean_kb = sum(len(p.data) for p in workload.photos) / len(workload.photos) / 1024
    return {"benchmark": "fetch", "workload": workload.name, "photos": len(workload.photos),
            "mean_kb": round(mean_kb, 1), "gets": gets, "rounds": rounds, "rows": rows}


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['gets']} GETs per variant and round, median of {report['rounds']} rounds; "
             f"{report['photos']} photos of the {report['workload']} workload, mean {report['mean_kb']} KB",
             "", "| fetch | CPU ms per GET (this process) | ÷ boto3 |", "|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['variant']} | {figure(row['cpu_ms_per_get'], '.3f')} "
                     f"| {figure(row['vs_baseline'], '.2f')}× |")
    return "\n".join(lines)
