"""A SASL_SSL job config with a canary password, for the unit tests of Kafka security settings."""
from __future__ import annotations

from streaming.config import PipelineConfig, Secret

PASSWORD = "p4ss-Canary"


def sasl(**overrides) -> PipelineConfig:
    values = dict(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                  kafka_sasl_username="svc-imgstream", kafka_sasl_password=Secret(PASSWORD))
    return PipelineConfig(**{**values, **overrides})
