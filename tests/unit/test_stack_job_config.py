"""The job's configuration for the local stack: the stack's endpoints, then the environment, then --set."""
from __future__ import annotations

from streaming.config import Secret
from streaming.stack.job_config import stack_config
from streaming.stack.layout import StackLayout


def test_the_environment_wins_over_the_stacks_endpoints_and_set_wins_over_both():
    layout = StackLayout.from_env({})
    assert stack_config(layout, environ={}).kafka_bootstrap == layout.kafka_bootstrap
    environ = {"IMGSTREAM_KAFKA_BOOTSTRAP": "kafka.example:9092", "IMGSTREAM_TRITON_GRPC": "triton.example:8001",
               "IMGSTREAM_ALLOWED_BUCKETS": "photos,thumbs", "IMGSTREAM_S3_ACCESS_KEY": "AKIA-from-env",
               "IMGSTREAM_S3_SECRET_KEY": "from-env"}
    config = stack_config(layout, environ=environ)
    assert (config.kafka_bootstrap, config.triton_grpc, config.allowed_buckets) == (
        "kafka.example:9092", "triton.example:8001", ("photos", "thumbs"))
    assert config.s3_access_key == Secret("AKIA-from-env") and config.s3_endpoint == layout.s3_endpoint
    assert config.requests_topic == layout.requests_topic  # what the environment leaves is the stack's
    assert stack_config(layout, ["triton_grpc=10.0.0.1:8001"], environ).triton_grpc == "10.0.0.1:8001"
