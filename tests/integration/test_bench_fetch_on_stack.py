"""`imgstream bench fetch` on the stack: boto3 and the job's fetcher over the real S3Proxy."""
import pytest

from streaming.bench import fetch
from streaming.bench.photos import tiny_photos
from streaming.bench.workloads import Workload
from streaming.stack.job_config import stack_config


def test_both_ways_fetch_the_same_bytes_and_their_cpu_is_measured(layout, prepared):
    workload = Workload("tiny", tuple(tiny_photos()), "synthetic")
    report = fetch.run(layout, stack_config(layout), workload, gets=40, rounds=2, log=print)
    print(fetch.table(report))
    rows = {row["variant"]: row for row in report["rows"]}
    assert list(rows) == list(fetch.VARIANTS)
    assert all(len(row["rounds_cpu_ms_per_get"]) == 2 and row["cpu_ms_per_get"] > 0 for row in rows.values())
    job = rows[fetch.VARIANTS[1]]
    assert job["vs_baseline"] == pytest.approx(job["cpu_ms_per_get"] / rows[fetch.BASELINE]["cpu_ms_per_get"], abs=2e-3)
