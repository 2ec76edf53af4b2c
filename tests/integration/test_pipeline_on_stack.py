"""The job's request path (AsyncImagePipeline, through the blocking ImagePipeline) without Flink:
real S3Proxy and real Triton, with the decoder pool and cache open() builds, one request at a time."""
import json

import pytest

from streaming.events import ErrorResult, Prediction
from streaming.pipeline import ImagePipeline


@pytest.fixture(scope="module")
def pipeline(pipeline_config):
    with ImagePipeline(pipeline_config) as pipe:
        yield pipe


def event(uri: str, rid: str = "r1") -> bytes:
    return json.dumps({"id": rid, "uri": uri}).encode()


def test_ladybird_photo_is_a_ladybug(pipeline, test_bucket):
    result = pipeline.process(event(f"s3://{test_bucket}/photos/LadyBird.jpg"))
    assert isinstance(result, Prediction), result
    assert result.top_k[0].label == "ladybug"
    assert len(result.top_k) == 5  # the contract's top_k (config top_k 0)
    assert {"fetch", "decode", "resize", "infer", "total"} <= set(result.timings_ms)


def test_png_goes_through_the_fallback_decoder(pipeline, test_bucket):
    result = pipeline.process(event(f"s3://{test_bucket}/photos/coffee.png"))
    assert isinstance(result, Prediction), result
    assert result.top_k[0].label in {"espresso", "cup", "coffee mug"}


@pytest.mark.parametrize("raw, code, stage", [
    ("s3://{bucket}/photos/missing.jpg", "object_not_found", "fetch"),
    ("s3://no-such-bucket-here/x.jpg", "uri_not_allowed", "parse"),
    ("s3://{bucket}/bad/not-an-image.jpg", "unsupported_image", "decode"),
    ("s3://{bucket}/bad/truncated.jpg", "corrupt_image", "decode"),
])
def test_bad_requests_become_error_results(pipeline, test_bucket, raw, code, stage):
    result = pipeline.process(event(raw.format(bucket=test_bucket), rid="bad-1"))
    assert isinstance(result, ErrorResult), result
    assert (result.id, result.code, result.stage) == ("bad-1", code, stage)


def test_malformed_event_keeps_what_id_it_can(pipeline):
    result = pipeline.process(b'{"id": "only-id"}')
    assert isinstance(result, ErrorResult)
    assert (result.id, result.code) == ("only-id", "invalid_event")
