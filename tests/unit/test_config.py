import math
import re
from pathlib import Path

import pytest

from streaming.config import (CHECKPOINT_TIMEOUT_MS, KAFKA_SHADED_PREFIX, MAX_SECONDS, POSITIVE_FIELDS,
                              TOOL_ENV_VARIABLES, ConfigError, PipelineConfig, Secret, field_types)
from streaming.stack.layout import ENV_VARIABLES as STACK_ENV_VARIABLES
from tests.kafka_support import PASSWORD, sasl

NUMBERS = {name: kind for name, kind in field_types().items() if kind in (int, float)}
FLOATS = sorted(name for name, kind in NUMBERS.items() if kind is float)
NON_NEGATIVE = sorted(set(NUMBERS) - POSITIVE_FIELDS)
DURATIONS = sorted(name for name in NUMBERS if name.endswith(("_s", "_ms")))


def test_from_env_reads_only_prefixed_known_variables():
    config = PipelineConfig.from_env({
        "IMGSTREAM_MAX_BATCH_SIZE": "8", "IMGSTREAM_ALLOWED_SCHEMES": "s3, file",
        "IMGSTREAM_FETCH_TIMEOUT_S": "2.5", "OTHER_MAX_BATCH_SIZE": "99",
    })
    assert config.max_batch_size == 8
    assert config.allowed_schemes == ("s3", "file")
    assert config.fetch_timeout_s == 2.5


def test_overrides_win_over_environment():
    config = PipelineConfig.from_env({"IMGSTREAM_TOP_K": "3"}, top_k=7)
    assert config.top_k == 7


def test_secrets_never_show_in_repr():
    # s3_access_key too: one key without the other is refused (test_half_set_settings_are_refused)
    config = PipelineConfig.from_env({"IMGSTREAM_S3_ACCESS_KEY": "AKIA-canary",
                                      "IMGSTREAM_S3_SECRET_KEY": "hunter2-very-secret"})
    for text in (repr(config), str(config)):
        assert "hunter2" not in text and "AKIA-canary" not in text
    assert config.s3_secret_key == Secret("hunter2-very-secret")


def test_mapping_round_trip_keeps_every_field():
    config = PipelineConfig(s3_access_key=Secret("a"), s3_secret_key=Secret("b"),
                            allowed_buckets=("x", "y"), file_root="/srv")
    assert PipelineConfig.from_mapping(config.to_mapping()) == config


@pytest.mark.parametrize("values, message", [
    ({"max_batch_size": "0"}, "max_batch_size"),
    ({"start_from": "yesterday"}, "start_from"),
    ({"allowed_schemes": "gopher"}, "gopher"),
    ({"no_such_setting": "1"}, "unknown settings"),
    ({"top_k": "101"}, "top_k: must be at most 100"),
    ({"parallelism": str(2**31)}, "parallelism: must be at most 2147483647"),
    ({"max_in_flight": str(2**31)}, "max_in_flight: must be at most 2147483647"),
    ({"bundle_size": str(2**40)}, "bundle_size: must be at most 2147483647"),
    ({"consumer_group": ""}, "consumer_group: must be a non-empty string"),
    ({"transactional_id_prefix": ""}, "transactional_id_prefix: must be a non-empty string"),
    ({"model_name": " efficientnet_lite0"}, "model_name: must be a non-empty string without leading or trailing"),
    ({"requests_topic": "requests "}, "requests_topic: must be"),
])
def test_invalid_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_mapping(values)


def test_every_number_has_a_rule():
    """The parametrised tests below cover every int/float field: none is left unchecked."""
    assert POSITIVE_FIELDS <= set(NUMBERS)
    assert FLOATS and NON_NEGATIVE and len(NUMBERS) == len(POSITIVE_FIELDS) + len(NON_NEGATIVE)


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_float_fields_refuse_nan_and_inf(name, text):
    with pytest.raises(ConfigError, match=f"^{name}: must be a finite number") as caught:
        PipelineConfig.from_mapping({name: text})
    assert caught.value.field == name
    with pytest.raises(ConfigError, match=f"^{name}: must be a finite number"):
        PipelineConfig(**{name: float(text)})


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_numbers_refuse_text_that_is_not_one(name):
    for text in ("²", "ten", "", "1e3x"):
        with pytest.raises(ConfigError, match=f"^{name}: must be (an integer|a number), got") as caught:
            PipelineConfig.from_mapping({name: text})
        assert caught.value.field == name


@pytest.mark.parametrize("name", sorted(name for name, kind in NUMBERS.items() if kind is int))
def test_int_fields_refuse_floats_and_bools(name):
    for value in (1.5, float("nan"), True):
        with pytest.raises(ConfigError, match=f"^{name}: must be an integer"):
            PipelineConfig(**{name: value})


@pytest.mark.parametrize("name", sorted(POSITIVE_FIELDS))
@pytest.mark.parametrize("value", ["0", "-1"])
def test_positive_fields_refuse_zero_and_negatives(name, value):
    with pytest.raises(ConfigError, match=f"^{name}: must be positive") as caught:
        PipelineConfig.from_mapping({name: value})
    assert caught.value.field == name


@pytest.mark.parametrize("name", NON_NEGATIVE)
def test_other_numbers_refuse_negatives_and_accept_zero(name):
    with pytest.raises(ConfigError, match=f"^{name}: must be >= 0"):
        PipelineConfig.from_mapping({name: "-1"})
    assert getattr(PipelineConfig.from_mapping({name: "0"}), name) == 0


@pytest.mark.parametrize("name", DURATIONS)
def test_durations_are_at_most_a_day(name):
    limit = MAX_SECONDS if name.endswith("_s") else MAX_SECONDS * 1000
    base = {"delivery_guarantee": "at_least_once", name: str(limit)}  # exactly-once ties three together: below
    assert math.isclose(getattr(PipelineConfig.from_mapping(base), name), limit)
    with pytest.raises(ConfigError, match=f"^{name}: must be at most {limit}"):
        PipelineConfig.from_mapping({**base, name: str(limit + 1)})


def test_exactly_once_transactions_outlive_the_interval_and_a_checkpoint_that_waits_for_requests():
    assert PipelineConfig().checkpoint_timeout_ms == CHECKPOINT_TIMEOUT_MS == 300_000
    assert PipelineConfig(request_timeout_s=600).checkpoint_timeout_ms == 660_000  # the drain waits for requests
    with pytest.raises(ConfigError, match=r"^transaction_timeout_ms: must exceed checkpoint_interval_ms \+ the "
                                          r"checkpoint timeout \(2000 \+ 660000 ms\)"):
        PipelineConfig(request_timeout_s=600, transaction_timeout_ms=600_000)
    with pytest.raises(ConfigError, match="^transaction_timeout_ms"):
        PipelineConfig(transaction_timeout_ms=302_000)
    assert PipelineConfig(transaction_timeout_ms=302_001).transaction_timeout_ms == 302_001
    assert PipelineConfig(request_timeout_s=600, transaction_timeout_ms=600_000, delivery_guarantee="at_least_once")


@pytest.mark.parametrize("values, field", [
    ({"s3_access_key": Secret("AKIA-canary")}, "s3_secret_key"),
    ({"s3_secret_key": Secret("sec-canary")}, "s3_access_key"),
    ({"kafka_sasl_mechanism": "SCRAM-SHA-512"}, "kafka_sasl_mechanism"),
    ({"kafka_sasl_username": "svc", "kafka_sasl_mechanism": "PLAIN"}, "kafka_sasl_mechanism"),
    ({"kafka_sasl_password": Secret("pw-canary")}, "kafka_sasl_password"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
      "kafka_sasl_username": "svc"}, "kafka_sasl_password"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN",
      "kafka_sasl_password": Secret("pw-canary")}, "kafka_sasl_username"),
    ({"kafka_ssl_keystore_file": "/client.pem"}, "kafka_ssl_keystore_file"),
])
def test_half_set_settings_are_refused(values, field):
    with pytest.raises(ConfigError) as caught:
        PipelineConfig(**values)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")
    assert "canary" not in str(caught.value)


def test_a_secret_given_as_plain_text_is_refused():
    with pytest.raises(ConfigError, match="^kafka_sasl_password: must be a Secret"):
        PipelineConfig(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                       kafka_sasl_username="svc", kafka_sasl_password="pw")


def test_values_are_read_by_the_fields_real_type():
    config = PipelineConfig.from_mapping({"s3_endpoint": "", "file_root": "/srv", "fetch_timeout_s": "3",
                                          "max_batch_size": " 8 ", "allowed_buckets": "a, ,b,"})
    assert config.s3_endpoint is None and config.file_root == "/srv"
    assert type(config.fetch_timeout_s) is float and config.fetch_timeout_s == 3.0
    assert config.max_batch_size == 8 and config.allowed_buckets == ("a", "b")


@pytest.mark.parametrize("variable, suggestion", [
    ("IMGSTREAM_MAX_BATCHSIZE", "IMGSTREAM_MAX_BATCH_SIZE"),
    ("IMGSTREAM_FETCH_TIMEOUT", "IMGSTREAM_FETCH_TIMEOUT_S"),
    ("IMGSTREAM_S3_SECRET", "IMGSTREAM_S3_SECRET_KEY"),
    ("IMGSTREAM_REQUEST_TOPIC", "IMGSTREAM_REQUESTS_TOPIC"),
])
def test_unknown_variables_are_reported_with_the_closest_field(variable, suggestion):
    with pytest.raises(ConfigError, match=f"unknown variables: '{variable}' \\(did you mean '{suggestion}'\\?\\)"):
        PipelineConfig.from_env({variable: "1", "IMGSTREAM_TOP_K": "3"})


def test_unknown_variable_without_a_close_field_is_still_reported():
    with pytest.raises(ConfigError, match="unknown variables: 'IMGSTREAM_ZZZ'$"):
        PipelineConfig.from_env({"IMGSTREAM_ZZZ": "1"})


def test_unknown_setting_names_the_closest_field():
    with pytest.raises(ConfigError, match="'model' \\(did you mean 'model_name'\\?\\)"):
        PipelineConfig.from_mapping({"model": "x"})


def test_the_stack_and_tool_variables_are_not_settings_and_not_errors():
    env = {name: "1" for name in (*STACK_ENV_VARIABLES, *TOOL_ENV_VARIABLES)}
    assert PipelineConfig.from_env({**env, "IMGSTREAM_TOP_K": "4"}).top_k == 4
    assert not {name[len("IMGSTREAM_"):].lower() for name in env} & set(field_types())


@pytest.mark.parametrize("endpoint", ["ftp://s3.local", "http://", "http://user:pw@s3.local",
                                      "http://s3.local/?x=1", "http://s3.local:99999", "s3.local:9000"])
def test_a_bad_s3_endpoint_is_refused_naming_it(endpoint):
    with pytest.raises(ConfigError, match="s3_endpoint"):
        PipelineConfig(s3_endpoint=endpoint)


def test_max_uri_chars_is_bounded_by_what_results_carry():
    from streaming.config import MAX_URI_CHARS

    PipelineConfig(max_uri_chars=MAX_URI_CHARS)
    with pytest.raises(ConfigError, match="max_uri_chars"):
        PipelineConfig(max_uri_chars=MAX_URI_CHARS + 1)


# -- Kafka security settings (kafka-python's keywords: test_ops_kafka_io.py) ------------------
def test_scram_over_tls_properties_for_the_flink_connector():
    props = sasl(kafka_ssl_ca_file="/etc/kafka/ca.pem").kafka_client_properties()
    assert props["security.protocol"] == "SASL_SSL" and props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["sasl.jaas.config"] == (
        f'{KAFKA_SHADED_PREFIX}org.apache.kafka.common.security.scram.ScramLoginModule required '
        f'username="svc-imgstream" password="{PASSWORD}";')
    assert props["ssl.truststore.type"] == "PEM" and props["ssl.truststore.location"] == "/etc/kafka/ca.pem"
    assert "ssl.keystore.location" not in props


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


def test_every_field_is_in_the_readme_configuration_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| field | default | meaning |", 1)[1].split("\n\n", 1)[0]
    named = {name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert named == set(field_types())
