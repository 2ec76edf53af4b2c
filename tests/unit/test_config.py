import pytest

from streaming.config import PipelineConfig, Secret


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
    config = PipelineConfig.from_env({"IMGSTREAM_S3_SECRET_KEY": "hunter2-very-secret"})
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
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
])
def test_invalid_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_mapping(values)
