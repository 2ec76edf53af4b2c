"""The job's configuration for the local stack: `PipelineConfig` with the stack's endpoints,
credentials and Kafka security filled in."""
from __future__ import annotations

from streaming.config import ConfigError, PipelineConfig, Secret
from streaming.stack.layout import StackLayout


def stack_config(layout: StackLayout, settings: list[str] | None = None) -> PipelineConfig:
    """The job's configuration for the local stack; `key=value` settings override."""
    security = dict(kafka_security_protocol=layout.kafka_security_protocol)
    if layout.kafka_sasl:
        security.update(kafka_sasl_mechanism=layout.kafka_sasl_mechanism, kafka_sasl_username=layout.kafka_sasl_username,
                        kafka_sasl_password=Secret(layout.kafka_sasl_password))
    if layout.kafka_ssl_ca_file is not None:
        security["kafka_ssl_ca_file"] = str(layout.kafka_ssl_ca_file)
    base = PipelineConfig.from_env(
        kafka_bootstrap=layout.kafka_bootstrap, requests_topic=layout.requests_topic,
        results_topic=layout.results_topic, s3_endpoint=layout.s3_endpoint,
        s3_access_key=Secret(layout.s3_access_key), s3_secret_key=Secret(layout.s3_secret_key),
        allowed_buckets=(layout.bucket,), triton_grpc=layout.triton_grpc, **security,
    )
    bad = [item for item in settings or [] if "=" not in item]
    if bad:
        raise ConfigError(bad[0], "--set expects KEY=VALUE")
    overrides = dict(item.split("=", 1) for item in settings or [])
    if not overrides:
        return base
    return PipelineConfig.from_mapping({**base.to_mapping(), **overrides})
