"""kafka-python's keywords for a config's Kafka security settings (`client_security`); the
settings' validation and the Java clients' properties: test_config.py; the local stack's SASL
mode: test_stack_kafka.py."""
from __future__ import annotations

from streaming.config import PipelineConfig, Secret
from streaming.ops import kafka_io
from tests.kafka_support import PASSWORD, sasl


def test_mutual_tls_properties():
    config = PipelineConfig(kafka_security_protocol="SSL", kafka_ssl_ca_file="/ca.pem",
                            kafka_ssl_keystore_file="/client.pem", kafka_ssl_key_password=Secret("kp"))
    props = config.kafka_client_properties()
    assert props == {"security.protocol": "SSL", "ssl.truststore.type": "PEM", "ssl.truststore.location": "/ca.pem",
                     "ssl.keystore.type": "PEM", "ssl.keystore.location": "/client.pem", "ssl.key.password": "kp"}
    assert kafka_io.client_security(config) == {
        "security_protocol": "SSL", "ssl_check_hostname": True, "ssl_cafile": "/ca.pem",
        "ssl_certfile": "/client.pem", "ssl_password": "kp"}


def test_kafka_python_keywords_from_the_config():
    assert kafka_io.client_security(PipelineConfig()) == {"security_protocol": "PLAINTEXT"}
    kwargs = kafka_io.client_security(sasl(kafka_security_protocol="SASL_PLAINTEXT"))
    assert kwargs == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "svc-imgstream", "sasl_plain_password": PASSWORD}
