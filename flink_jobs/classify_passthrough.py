"""The classify job with one more operator: a changed topology that restores classify's savepoints.

Between the Kafka source and the async operator sits a stateless pass-through `map` with a
uid of its own ("requests-passthrough"), where a real upgrade might validate or enrich the
event. The source, async operator and sink keep classify's uids ("requests",
"fetch-decode-infer", "results"), so a savepoint of `flink_jobs/classify.py` restores into this
job with allowNonRestoredState=false: the source resumes at the saved offsets, the sink
commits or aborts the saved transactions (no request lost, none answered twice). The new map
starts with no state.

`--source-uid UID` gives the source another uid, as an upgrade that forgot it would: the
savepoint's source state then maps to no operator and Flink refuses to start the job.

Submit with `jobs.submit(..., script=<this file>, savepoint_path=...)`; the configuration
is read from `IMGSTREAM_*` variables as in classify.
"""
from __future__ import annotations

import argparse
import sys

from pyflink.common import WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment

from flink_jobs.classify import REQUEST_TYPE, classify_and_write, environment, kafka_source, read_requests
from streaming.config import PipelineConfig

JOB_NAME = "imgstream-classify-passthrough"
PASSTHROUGH_UID = "requests-passthrough"


def _same(event: bytes) -> bytes:
    return event


def build(env: StreamExecutionEnvironment, config: PipelineConfig, source_uid: str | None = None) -> None:
    if source_uid is None:
        requests = read_requests(env, config)
    else:
        requests = env.from_source(kafka_source(config), WatermarkStrategy.no_watermarks(), "requests",
                                   type_info=REQUEST_TYPE).uid(source_uid)
    passed: DataStream = requests.map(_same, output_type=REQUEST_TYPE)
    passed = passed.name("requests-passthrough").uid(PASSTHROUGH_UID)
    classify_and_write(passed, config)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="classify_passthrough")
    parser.add_argument("name", nargs="?", default=JOB_NAME)
    parser.add_argument("--source-uid", default=None, help="another uid for the source (breaks restores)")
    args = parser.parse_args(argv[1:])
    config = PipelineConfig.from_env()
    env = environment(config)
    build(env, config, args.source_uid)
    env.execute_async(args.name)


if __name__ == "__main__":
    main(sys.argv)
