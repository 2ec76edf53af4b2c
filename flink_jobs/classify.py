"""PyFlink job: Kafka image requests → fetch, decode, infer (one async Python operator) → Kafka results.

Images never cross the Python/JVM bridge: the operator takes the small JSON event and emits
the small JSON result. Inside it, up to `max_in_flight` requests overlap (async I/O, process
mode); their tensors go to Triton in micro-batches. A full operator stops taking input, so a
slow Triton backpressures the Kafka source instead of filling memory.

Configuration comes from `IMGSTREAM_*` variables (streaming/config.py), read once here in the
client and shipped to the workers with the function. Submit with `imgstream job submit`.
"""
from __future__ import annotations

import sys

from pyflink.common import Configuration, Row, Time, Types, WatermarkStrategy
from pyflink.common.serialization import ByteArraySchema, SerializationSchema, SimpleStringSchema
from pyflink.datastream import AsyncDataStream, AsyncFunction, CheckpointingMode, RuntimeContext
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import (
    DeliveryGuarantee, KafkaOffsetResetStrategy, KafkaOffsetsInitializer, KafkaRecordSerializationSchema,
    KafkaSink, KafkaSource,
)
from pyflink.datastream.formats.json import JsonRowSerializationSchema
from pyflink.java_gateway import get_gateway

from flink_jobs import JOB_NAME
from flink_jobs.async_starts import start_requests_together
from flink_jobs.beam_sampler import skip_sampler_thread
from streaming.config import PipelineConfig
from streaming.events import MAX_RESULT_BYTES
from streaming.metrics import PipelineStats
from streaming.pipeline import AsyncImagePipeline

# The sink producer's max.request.size, set explicitly: four times the largest result
# `result_to_json` can return (1 MiB, Kafka's default), so no result can fail the writer (a failed
# write restores the job, which replays the same event and fails again, for ever). The broker's
# message.max.bytes and the results topic's max.message.bytes (1 MiB + 12 bytes by default) must
# not be set lower.
SINK_MAX_REQUEST_BYTES = 4 * MAX_RESULT_BYTES
REQUEST_TYPE = Types.PRIMITIVE_ARRAY(Types.BYTE())  # raw event bytes, never pickled
# A result leaves the operator as (key, JSON). The Kafka record's key is `{"id": "<request id>"}`
# (JSON; `{"id": null}` for an event without a readable id), its value the result's JSON: a
# compacted results topic or any consumer can dedupe by key what at-least-once delivery repeats,
# and a request's results land on one partition.
RESULT_TYPE = Types.ROW_NAMED(["id", "result"], [Types.STRING(), Types.STRING()])
KEY_TYPE = Types.ROW_NAMED(["id"], [Types.STRING()])  # JSON of the row's first field only


class ClassifyImages(AsyncFunction):
    """JSON request in, exactly one JSON result out; never raises for bad input."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.pipeline: AsyncImagePipeline | None = None
        self.stats: PipelineStats | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        skip_sampler_thread()  # before the first bundle: PyFlink opens operators as it builds them
        start_requests_together()  # before its runner starts: PyFlink opens the function first
        self.pipeline = AsyncImagePipeline(self.config)
        self.pipeline.open()
        self.stats = PipelineStats()
        group = runtime_context.get_metrics_group().add_group("imgstream")
        self.stats.register(group, in_flight=lambda: self.pipeline.in_flight)

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()

    async def async_invoke(self, value: bytes):
        result, key, text = await self.pipeline.answer(value)
        self.stats.record(result)
        return [Row(key, text)]


def kafka_source(config: PipelineConfig) -> KafkaSource:
    if config.start_from == "committed":
        starting = KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    elif config.start_from == "earliest":
        starting = KafkaOffsetsInitializer.earliest()
    else:
        starting = KafkaOffsetsInitializer.latest()
    builder = (KafkaSource.builder()
               .set_bootstrap_servers(config.kafka_bootstrap)
               .set_topics(config.requests_topic)
               .set_group_id(config.consumer_group)
               .set_starting_offsets(starting)
               # raw bytes: the Python side decides what is valid (bad UTF-8 becomes an invalid_event
               # result, not silently replaced characters); tombstones (null values) carry no
               # request and are skipped by the connector instead of failing the job
               .set_value_only_deserializer(ByteArraySchema())
               .set_property("commit.offsets.on.checkpoint", "true")
               .set_property("isolation.level", "read_committed"))
    for key, value in config.kafka_client_properties().items():
        builder = builder.set_property(key, value)
    return builder.build()


def result_value_schema() -> SerializationSchema:
    """The row's second field (the result's JSON) as UTF-8: PyFlink's own column serializer."""
    second_column = get_gateway().jvm.org.apache.flink.python.util.PythonConnectorUtils.SecondColumnSerializationSchema
    return SerializationSchema(second_column(SimpleStringSchema()._j_serialization_schema))


def kafka_sink(config: PipelineConfig) -> KafkaSink:
    builder = (KafkaSink.builder()
               .set_bootstrap_servers(config.kafka_bootstrap)
               .set_property("max.request.size", str(SINK_MAX_REQUEST_BYTES))
               .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                      .set_topic(config.results_topic)
                                      .set_key_serialization_schema(
                                          JsonRowSerializationSchema.builder().with_type_info(KEY_TYPE).build())
                                      .set_value_serialization_schema(result_value_schema())
                                      .build()))
    if config.delivery_guarantee == "exactly_once":
        builder = (builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
                   .set_transactional_id_prefix(config.transactional_id_prefix)
                   .set_property("transaction.timeout.ms", str(config.transaction_timeout_ms)))
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    for key, value in config.kafka_client_properties().items():
        builder = builder.set_property(key, value)
    return builder.build()


def environment(config: PipelineConfig) -> StreamExecutionEnvironment:
    settings = Configuration()
    settings.set_string("restart-strategy.type", "exponential-delay")
    settings.set_string("restart-strategy.exponential-delay.initial-backoff", "1 s")
    settings.set_string("restart-strategy.exponential-delay.max-backoff", "30 s")
    settings.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    settings.set_string("python.fn-execution.bundle.size", str(config.bundle_size))
    settings.set_string("python.fn-execution.bundle.time", str(config.bundle_time_ms))
    settings.set_string("execution.checkpointing.timeout", f"{config.checkpoint_timeout_ms} ms")
    settings.set_string("execution.checkpointing.min-pause", f"{config.checkpoint_interval_ms // 2} ms")
    env = StreamExecutionEnvironment.get_execution_environment(settings)
    env.set_parallelism(config.parallelism)
    env.enable_checkpointing(config.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    return env


def read_requests(env: StreamExecutionEnvironment, config: PipelineConfig) -> DataStream:
    """The Kafka source (uid "requests"): raw request events as bytes."""
    requests = env.from_source(kafka_source(config), WatermarkStrategy.no_watermarks(), "requests",
                               type_info=REQUEST_TYPE)
    return requests.uid("requests")  # a stable operator id: savepoints map the source's offsets back to it


def classify_and_write(requests: DataStream, config: PipelineConfig) -> None:
    """The async operator (uid "fetch-decode-infer") and the Kafka sink (uid "results").

    The uids, not the topology, tie a savepoint's state to operators: a changed job (more
    stateless operators, other names) restores a savepoint of this one as long as these three
    uids stay (see flink_jobs/classify_passthrough.py and tests/integration/test_savepoint_upgrade.py)."""
    # Timeout 0: no per-record timer thread; the pipeline enforces request_timeout_s itself
    # and answers with a request_timeout error, so the operator never fails on a slow request.
    results = AsyncDataStream.unordered_wait(requests, ClassifyImages(config), Time.milliseconds(0),
                                             capacity=config.max_in_flight, output_type=RESULT_TYPE)
    results.name("fetch-decode-infer").uid("fetch-decode-infer")
    results.sink_to(kafka_sink(config)).name("results").uid("results")


def build(env: StreamExecutionEnvironment, config: PipelineConfig) -> None:
    classify_and_write(read_requests(env, config), config)


def main(argv: list[str]) -> None:
    config = PipelineConfig.from_env()
    env = environment(config)
    build(env, config)
    env.execute_async(argv[1] if len(argv) > 1 else JOB_NAME)


if __name__ == "__main__":
    main(sys.argv)
