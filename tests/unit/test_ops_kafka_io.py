"""Kafka security settings: validation, the Java clients' properties, kafka-python's keywords,
and the local stack's SASL mode (layout, broker config, the CLI's job config)."""
from __future__ import annotations

import pytest

from streaming.ops import kafka_io
from streaming.stack.job_config import stack_config
from streaming.config import KAFKA_SHADED_PREFIX, PipelineConfig, Secret
from streaming.stack import kafka
from streaming.stack.layout import StackLayout

PASSWORD = "p4ss-Canary"


def sasl(**overrides) -> PipelineConfig:
    values = dict(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                  kafka_sasl_username="svc-imgstream", kafka_sasl_password=Secret(PASSWORD))
    return PipelineConfig(**{**values, **overrides})


def test_scram_over_tls_properties_for_the_flink_connector():
    props = sasl(kafka_ssl_ca_file="/etc/kafka/ca.pem").kafka_client_properties()
    assert props["security.protocol"] == "SASL_SSL" and props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["sasl.jaas.config"] == (
        f'{KAFKA_SHADED_PREFIX}org.apache.kafka.common.security.scram.ScramLoginModule required '
        f'username="svc-imgstream" password="{PASSWORD}";')
    assert props["ssl.truststore.type"] == "PEM" and props["ssl.truststore.location"] == "/etc/kafka/ca.pem"
    assert "ssl.keystore.location" not in props


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


@pytest.mark.parametrize("overrides, message", [
    (dict(kafka_security_protocol="SASL_TLS"), "must be PLAINTEXT"),
    (dict(kafka_sasl_mechanism=None), "needs kafka_sasl_mechanism"),
    (dict(kafka_sasl_mechanism="GSSAPI"), "SASL needs"),
    (dict(kafka_sasl_password=None), "SASL needs"),
    (dict(kafka_sasl_password=Secret('x" admin="true')), "quotes"),
    (dict(kafka_sasl_username="a\\b"), "backslashes"),
    (dict(kafka_sasl_username="a\nb"), "control"),
    (dict(kafka_security_protocol="PLAINTEXT", kafka_sasl_mechanism=None, kafka_sasl_username=None,
          kafka_sasl_password=None, kafka_ssl_ca_file="/ca.pem"), "need kafka_security_protocol SSL"),
])
def test_bad_kafka_security_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message) as caught:
        sasl(**overrides)
    assert PASSWORD not in str(caught.value) and "admin" not in str(caught.value)


def test_secrets_stay_out_of_repr_but_travel_to_the_job():
    config = sasl(kafka_ssl_key_password=Secret("kp-Canary"), kafka_ssl_ca_file="/ca.pem")
    assert PASSWORD not in repr(config) and "kp-Canary" not in repr(config)
    round_trip = PipelineConfig.from_mapping(config.to_mapping())
    assert round_trip.kafka_sasl_password.value == PASSWORD and round_trip == config


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


def test_stack_up_sasl_flag_reaches_the_stack(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from streaming.cli import main as cli
    seen = []
    monkeypatch.setenv("IMGSTREAM_STACK_DIR", str(tmp_path))
    monkeypatch.delenv("IMGSTREAM_STACK_KAFKA_SASL", raising=False)
    monkeypatch.setattr(cli.local_stack, "up", lambda layout, log: seen.append(layout.kafka_sasl))
    monkeypatch.setattr(cli.local_stack, "status", lambda layout: {"kafka": {"security_protocol": layout.kafka_security_protocol}})
    result = CliRunner().invoke(cli.app, ["stack", "up", "--sasl"])
    assert result.exit_code == 0 and seen == [True] and "SASL_PLAINTEXT" in result.output
    assert CliRunner().invoke(cli.app, ["stack", "up"]).exit_code == 0 and seen == [True, False]
