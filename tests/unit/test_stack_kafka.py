"""The local stack's Kafka security: the SASL switch of its layout, the broker's listeners, the
stack's kafka-python keywords and the job config `stack_config` builds for it."""
from __future__ import annotations

from streaming.stack import kafka
from streaming.stack.job_config import stack_config
from streaming.stack.layout import StackLayout
from tests.kafka_support import PASSWORD


def test_stack_layout_sasl_switch():
    assert StackLayout.from_env({}).kafka_sasl is False
    layout = StackLayout.from_env({"IMGSTREAM_STACK_KAFKA_SASL": "1"})
    assert layout.kafka_sasl and layout.kafka_security_protocol == "SASL_PLAINTEXT"


def test_sasl_broker_config_has_no_plaintext_client_listener(tmp_path):
    layout = StackLayout(root=tmp_path, kafka_sasl=True, kafka_sasl_password=PASSWORD)
    props = kafka.server_properties(layout)
    assert props["listeners"].startswith("SASL_PLAINTEXT://") and "PLAINTEXT://" not in props["listeners"].replace(
        "SASL_PLAINTEXT://", "")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert kafka.client_security(layout)["sasl_plain_password"] == PASSWORD
    assert kafka.client_security(StackLayout(root=tmp_path)) == {}
    assert "sasl.enabled.mechanisms" not in kafka.server_properties(StackLayout(root=tmp_path))


def test_cli_job_config_logs_in_to_a_sasl_stack(tmp_path):
    config = stack_config(StackLayout(root=tmp_path, kafka_sasl=True, kafka_sasl_password=PASSWORD))
    assert config.kafka_security_protocol == "SASL_PLAINTEXT" and config.kafka_sasl_username == "imgstream"
    assert config.kafka_sasl_password.value == PASSWORD
    assert stack_config(StackLayout(root=tmp_path)).kafka_security_protocol == "PLAINTEXT"
