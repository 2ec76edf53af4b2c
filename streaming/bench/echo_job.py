"""The bridge benchmark's job: classify's Kafka source and sink around one trivial Python
operator that answers each request at once (`imgstream bench bridge`).

What it costs is what PyFlink itself costs per record and per bundle: the Kafka source and
sink, the TaskManager's side of the Python operator, the Beam bridge (process mode) and the
Python worker; no fetch, decode or inference. Arguments: the job name, then the operator:

- `async`: the async operator classify uses (`AsyncDataStream.unordered_wait`), process mode,
  in a Python worker set up as classify's (`flink_jobs.beam_sampler`, `flink_jobs.async_starts`);
- `stats`: the same, with classify's gauges (`metrics.PipelineStats`) registered and each answer
  recorded as classify records its results: what the operator's metrics cost per bundle;
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

from flink_jobs.async_starts import start_requests_together
from flink_jobs.beam_sampler import skip_sampler_thread
from flink_jobs.classify import RESULT_TYPE, environment, kafka_sink, read_requests
from streaming.config import PipelineConfig
from streaming.events import Prediction
from streaming.metrics import STAGES, PipelineStats

OPERATORS = ("async", "stats", "map", "thread")
ASYNC_CAPACITY = 256
URI_UNREAD = "-"  # the recorded prediction's URI: the gauges never read it
ECHO_TIMINGS_MS = {stage: 0.0 for stage in STAGES}


def answer(raw: bytes) -> Row:
    """The result row a prediction would make, with the request's id: no work."""
    event = json.loads(raw)
    return Row(str(event["id"]), json.dumps({"id": event["id"], "uri": event.get("uri"), "timings_ms": {"total": 0.0},
                                             "batch_size": 1}))


class AsyncAnswer(AsyncFunction):
    """The async echo, in a Python worker set up as classify's is (no Beam sampler thread, a
    bundle's requests started together)."""

    def open(self, runtime_context) -> None:  # noqa: ANN001 - PyFlink's RuntimeContext
        skip_sampler_thread()
        start_requests_together()

    async def async_invoke(self, value: bytes):
        return [answer(value)]


class AsyncAnswerWithStats(AsyncAnswer):
    """`AsyncAnswer` with classify's gauges: each answer is recorded as a prediction would be."""

    def open(self, runtime_context) -> None:  # noqa: ANN001 - PyFlink's RuntimeContext
        super().open(runtime_context)
        self.stats = PipelineStats()
        self.stats.register(runtime_context.get_metrics_group().add_group("imgstream"), in_flight=lambda: 0)

    async def async_invoke(self, value: bytes):
        row = answer(value)
        self.stats.record(Prediction(row[0], URI_UNREAD, "echo", (), ECHO_TIMINGS_MS, batch_size=1))
        return [row]


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
    if operator in ("async", "stats"):
        function = AsyncAnswer() if operator == "async" else AsyncAnswerWithStats()
        results = AsyncDataStream.unordered_wait(requests, function, Time.milliseconds(0),
                                                 capacity=ASYNC_CAPACITY, output_type=RESULT_TYPE)
    else:
        results = requests.map(answer, output_type=RESULT_TYPE)
    results.sink_to(kafka_sink(config))
    env.execute_async(name)


if __name__ == "__main__":
    main(sys.argv)
