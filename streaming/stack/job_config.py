"""The job's configuration for the local stack: `PipelineConfig` with the stack's endpoints,
credentials and Kafka security filled in.

One story: `StackLayout` takes its topics, host and ports from `PipelineConfig`'s defaults; the
settings below are the only place where the stack's layout becomes job settings, and the stack's
own kafka-python clients get theirs from the same config (`kafka_config` ->
`streaming.ops.kafka_io.client_security`)."""
from __future__ import annotations

import os
from typing import Any, Mapping

from streaming.config import ENV_PREFIX, ConfigError, PipelineConfig, Secret
from streaming.stack.layout import StackLayout


def kafka_settings(layout: StackLayout) -> dict[str, Any]:
    """The `PipelineConfig` fields that reach the stack's Kafka: bootstrap, topics and security."""
    settings: dict[str, Any] = dict(kafka_bootstrap=layout.kafka_bootstrap, requests_topic=layout.requests_topic,
                                    results_topic=layout.results_topic,
                                    kafka_security_protocol=layout.kafka_security_protocol)
    if layout.kafka_sasl:
        settings.update(kafka_sasl_mechanism=layout.kafka_sasl_mechanism, kafka_sasl_username=layout.kafka_sasl_username,
                        kafka_sasl_password=Secret(layout.kafka_sasl_password))
    if layout.kafka_ssl_ca_file is not None:
        settings["kafka_ssl_ca_file"] = str(layout.kafka_ssl_ca_file)
    return settings


def kafka_config(layout: StackLayout) -> PipelineConfig:
    """A config holding only the stack's Kafka settings (defaults elsewhere; no environment read)."""
    return PipelineConfig(**kafka_settings(layout))


def stack_config(layout: StackLayout, settings: list[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> PipelineConfig:
    """The job's configuration for the local stack: its endpoints, then `IMGSTREAM_*` variables
    (`environ`, else the process's), then `key=value` settings, each over the one before."""
    env = os.environ if environ is None else environ
    stack = dict(**kafka_settings(layout), s3_endpoint=layout.s3_endpoint,
                 s3_access_key=Secret(layout.s3_access_key), s3_secret_key=Secret(layout.s3_secret_key),
                 allowed_buckets=(layout.bucket,), triton_grpc=layout.triton_grpc)
    base = PipelineConfig.from_env(env, **{name: value for name, value in stack.items()
                                           if ENV_PREFIX + name.upper() not in env})
    bad = [item for item in settings or [] if "=" not in item]
    if bad:
        raise ConfigError(bad[0], "--set expects KEY=VALUE")
    overrides = dict(item.split("=", 1) for item in settings or [])
    if not overrides:
        return base
    return PipelineConfig.from_mapping({**base.to_mapping(), **overrides})
