"""`imgstream bench worker` on the stack: the job's operator without Flink, over real S3 and Triton."""
import statistics

import pytest

from streaming.bench import worker
from streaming.bench.photos import tiny_photos
from streaming.bench.workloads import Workload
from streaming.stack.job_config import stack_config


def test_the_operator_answers_every_request_and_its_cpu_is_measured_beside_the_decode(layout, prepared, tmp_path):
    workload = Workload("tiny", tuple(tiny_photos()), "synthetic")
    report = worker.run(layout, stack_config(layout), workload, requests=60, rounds=1, py_spy=None, out=tmp_path,
                        log=print)
    print(worker.table(report))
    median = report["median"]
    assert median["errors"] == 0, report["rounds"]
    assert median["operator_ms"] > 0 and median["decoders_ms"] > 0 and report["decode_alone_ms"] > 0
    operator = statistics.median(r["operator_ms"] for r in report["rounds"])  # from the rounds, not the summary
    assert report["operator_beyond_decode_vs_decode_alone"] == pytest.approx(operator / report["decode_alone_ms"], abs=0.01)
