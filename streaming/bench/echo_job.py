"""The bridge benchmark's job: classify's Kafka source and sink around one trivial Python
operator that answers each request at once (`imgstream bench bridge`).

What it costs is what PyFlink itself costs per record and per bundle: the Kafka source and
sink, the TaskManager's side of the Python operator, the Beam bridge (process mode) and the
Python worker; no fetch, decode or inference. Arguments: the job name, then the operator:

- `async`: the async operator classify uses (`AsyncDataStream.unordered_wait`), process mode;
- `map`: a plain `map`, process mode;
- `thread`: the same `map` in PyFlink's thread mode (the function runs in the TaskManager's JVM
  through PEMJA; no Beam bridge, no bundles, no Python worker process).

The configuration comes from `IMGSTREAM_*` variables as in classify (topics, bundle time).
"""
from __future__ import annotations

import json
import sys

from pyflink.common import Configuration, Row, Time
from pyflink.datastream import AsyncDataStream, AsyncFunction

from flink_jobs.classify import RESULT_TYPE, environment, kafka_sink, read_requests
from streaming.config import PipelineConfig

OPERATORS = ("async", "map", "thread")
ASYNC_CAPACITY = 256


def answer(raw: bytes) -> Row:
    """The result row a prediction would make, with the request's id: no work."""
    event = json.loads(raw)
    return Row(str(event["id"]), json.dumps({"id": event["id"], "uri": event.get("uri"), "timings_ms": {"total": 0.0},
                                             "batch_size": 1}))


class AsyncAnswer(AsyncFunction):
    async def async_invoke(self, value: bytes):
        return [answer(value)]


def main(argv: list[str]) -> None:
    name, operator = argv[1], argv[2]
    if operator not in OPERATORS:
        raise SystemExit(f"operator must be one of {', '.join(OPERATORS)}, not {operator!r}")
    config = PipelineConfig.from_env()
    env = environment(config)
    if operator == "thread":
        settings = Configuration()
        settings.set_string("python.execution-mode", "thread")
        env.configure(settings)
    requests = read_requests(env, config)
    if operator == "async":
        results = AsyncDataStream.unordered_wait(requests, AsyncAnswer(), Time.milliseconds(0),
                                                 capacity=ASYNC_CAPACITY, output_type=RESULT_TYPE)
    else:
        results = requests.map(answer, output_type=RESULT_TYPE)
    results.sink_to(kafka_sink(config))
    env.execute_async(name)


if __name__ == "__main__":
    main(sys.argv)
