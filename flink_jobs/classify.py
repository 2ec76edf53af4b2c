"""PyFlink job: Kafka image requests → fetch, decode, infer (one Python operator) → Kafka results.

Images never cross the Python/JVM bridge: the operator takes the small JSON event and emits
the small JSON result. Configuration comes from `IMGSTREAM_*` variables (see
streaming/config.py), read once here in the client and shipped to the workers with the function.

Submit with `imgstream job submit` (it adds the Kafka connector jar and the venv's Python).
"""
from __future__ import annotations

import sys

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import CheckpointingMode, MapFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import (
    DeliveryGuarantee, KafkaOffsetResetStrategy, KafkaOffsetsInitializer, KafkaRecordSerializationSchema,
    KafkaSink, KafkaSource,
)

from streaming.config import PipelineConfig
from streaming.events import result_to_json
from streaming.pipeline import ImagePipeline

JOB_NAME = "imgstream-classify"


class ClassifyImage(MapFunction):
    """JSON request in, JSON result out; never raises for bad input."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.pipeline: ImagePipeline | None = None
        self.requests = self.errors = None

    def open(self, runtime_context: RuntimeContext) -> None:
        self.pipeline = ImagePipeline(self.config)
        self.pipeline.open()
        group = runtime_context.get_metrics_group().add_group("imgstream")
        self.requests = group.counter("requests")
        self.errors = group.counter("errors")

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()

    def map(self, value: str) -> str:
        self.requests.inc()
        result = self.pipeline.process(value)
        if hasattr(result, "code"):
            self.errors.inc()
        return result_to_json(result)


def build(env: StreamExecutionEnvironment, config: PipelineConfig) -> None:
    env.enable_checkpointing(config.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    env.set_parallelism(config.parallelism)
    if config.start_from == "committed":
        starting = KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    elif config.start_from == "earliest":
        starting = KafkaOffsetsInitializer.earliest()
    else:
        starting = KafkaOffsetsInitializer.latest()
    source = (KafkaSource.builder()
              .set_bootstrap_servers(config.kafka_bootstrap)
              .set_topics(config.requests_topic)
              .set_group_id(config.consumer_group)
              .set_starting_offsets(starting)
              .set_value_only_deserializer(SimpleStringSchema())
              .set_property("commit.offsets.on.checkpoint", "true")
              .build())
    sink = (KafkaSink.builder()
            .set_bootstrap_servers(config.kafka_bootstrap)
            .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                   .set_topic(config.results_topic)
                                   .set_value_serialization_schema(SimpleStringSchema())
                                   .build())
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
            .build())
    (env.from_source(source, WatermarkStrategy.no_watermarks(), "requests")
        .map(ClassifyImage(config), output_type=Types.STRING()).name("fetch-decode-infer")
        .sink_to(sink).name("results"))


def main(argv: list[str]) -> None:
    config = PipelineConfig.from_env()
    env = StreamExecutionEnvironment.get_execution_environment()
    build(env, config)
    env.execute_async(argv[1] if len(argv) > 1 else JOB_NAME)


if __name__ == "__main__":
    main(sys.argv)
