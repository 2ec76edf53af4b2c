"""Fetcher and the decoded-image cache against the real local S3 server (S3Proxy), in a bucket
of this test module's own."""
from __future__ import annotations

import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from streaming.cache import DecodedImageCache
from streaming.stack.job_config import stack_config
from streaming.config import Secret
from streaming.contract import Resize
from streaming.errors import AccessDenied, ObjectNotFound, ObjectTooLarge, PipelineError
from streaming.fetch import FetchedObject, Fetcher
from streaming.prepare import fetch_decode
from streaming.stack import s3
from streaming.uris import parse_uri

LIMIT = 400_000  # LadyBird.jpg is 351,588 bytes


@pytest.fixture(scope="module")
def bucket(layout, prepared) -> str:
    name = f"it-fetch-{uuid.uuid4().hex[:10]}"
    s3.ensure_bucket(layout, name)
    client = s3.s3_client(layout)
    photo = next(p for p in prepared.samples if p.name == "LadyBird.jpg").read_bytes()
    client.put_object(Bucket=name, Key="photo.jpg", Body=photo)
    client.put_object(Bucket=name, Key="big.bin", Body=b"\0" * (LIMIT + 1))
    client.put_object(Bucket=name, Key="exact.bin", Body=b"\1" * LIMIT)
    return name


@pytest.fixture(scope="module")
def config(layout, prepared, bucket):
    return dataclasses.replace(stack_config(layout), allowed_buckets=(bucket,), max_object_bytes=LIMIT,
                               fetch_retries=1, fetch_timeout_s=10.0)


@pytest.fixture(scope="module")
def fetcher(config):
    with Fetcher(config) as fetcher:
        yield fetcher


def ref(config, bucket: str, key: str):
    return parse_uri(f"s3://{bucket}/{key}", config)


def test_found_with_its_etag(fetcher, config, bucket, layout, prepared):
    fetched = fetcher.fetch(ref(config, bucket, "photo.jpg"))
    head = s3.s3_client(layout).head_object(Bucket=bucket, Key="photo.jpg")
    assert fetched.data == next(p for p in prepared.samples if p.name == "LadyBird.jpg").read_bytes()
    assert fetched.etag and fetched.etag == head["ETag"].strip('"')
    assert fetched.attempts == 1 and fetched.fetch_ms > 0 and not fetched.not_modified


def test_conditional_get_transfers_nothing_when_unchanged(fetcher, config, bucket):
    first = fetcher.fetch(ref(config, bucket, "photo.jpg"))
    same = fetcher.fetch(ref(config, bucket, "photo.jpg"), if_none_match=first.etag)
    assert same.not_modified and same.data == b"" and same.etag == first.etag
    other = fetcher.fetch(ref(config, bucket, "photo.jpg"), if_none_match="0" * 32)
    assert not other.not_modified and other.data == first.data


@pytest.mark.parametrize("key, error, code", [
    ("missing.jpg", ObjectNotFound, "object_not_found"),
    ("big.bin", ObjectTooLarge, "object_too_large"),
])
def test_errors_have_their_codes(fetcher, config, bucket, key, error, code):
    with pytest.raises(error) as caught:
        fetcher.fetch(ref(config, bucket, key))
    assert caught.value.code == code and caught.value.stage == "fetch"


def test_missing_bucket_is_object_not_found(layout, prepared):
    config = dataclasses.replace(stack_config(layout), allowed_buckets=())
    with Fetcher(config) as fetcher, pytest.raises(ObjectNotFound):
        fetcher.fetch(parse_uri(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x.jpg", config))


def test_size_limit_is_inclusive(fetcher, config, bucket):
    assert len(fetcher.fetch(ref(config, bucket, "exact.bin")).data) == LIMIT


def test_wrong_secret_is_access_denied_and_not_leaked(config, bucket):
    wrong = dataclasses.replace(config, s3_secret_key=Secret("not-the-secret-key-123"))
    with Fetcher(wrong) as fetcher, pytest.raises(AccessDenied) as caught:
        fetcher.fetch(ref(config, bucket, "photo.jpg"))
    assert "SignatureDoesNotMatch" in caught.value.message and caught.value.code == "access_denied"
    assert "not-the-secret-key-123" not in caught.value.message


def test_unknown_access_key_is_access_denied(config, bucket):
    wrong = dataclasses.replace(config, s3_access_key=Secret("AKIANOSUCHKEY0000000"))
    with Fetcher(wrong) as fetcher, pytest.raises(AccessDenied) as caught:
        fetcher.fetch(ref(config, bucket, "photo.jpg"))
    assert "AKIANOSUCHKEY0000000" not in caught.value.message


def test_keys_with_reserved_characters_are_signed_and_found(fetcher, config, bucket, layout):
    key = "dir/a b+c=d&e~f,g;h(i)'!*$@:é.jpg"
    s3.s3_client(layout).put_object(Bucket=bucket, Key=key, Body=b"reserved")
    assert fetcher.fetch(ref(config, bucket, key)).data == b"reserved"


def test_one_keep_alive_connection_serves_many_gets(config, bucket):
    with Fetcher(dataclasses.replace(config, fetch_concurrency=1)) as fetcher:
        for _ in range(5):
            assert fetcher.fetch(ref(config, bucket, "exact.bin")).data
        pools = list(fetcher._transport._pools.values())
    assert len(pools) == 1 and pools[0].connections == 1 and pools[0].requests == 5


def test_parallel_fetches_share_the_pools_and_keep_their_outcomes(fetcher, config, bucket):
    keys = ["photo.jpg", "missing.jpg", "big.bin", "exact.bin"] * 4

    def outcome(key):
        try:
            return fetcher.fetch(ref(config, bucket, key))
        except PipelineError as exc:
            return exc
    with ThreadPoolExecutor(config.fetch_concurrency) as pool:
        results = list(pool.map(outcome, keys))
    for key, result in zip(keys, results):
        if key in ("photo.jpg", "exact.bin"):
            assert isinstance(result, FetchedObject) and result.uri.endswith(key)
        else:
            assert result.code == ("object_not_found" if key == "missing.jpg" else "object_too_large")


def test_cache_hit_skips_transfer_and_decode(fetcher, config, bucket):
    cache = DecodedImageCache(16 * 1024 * 1024)
    photo = ref(config, bucket, "photo.jpg")
    first = fetch_decode(fetcher, photo, resize=Resize(224), max_pixels=config.max_pixels, cache=cache)
    second = fetch_decode(fetcher, photo, resize=Resize(224), max_pixels=config.max_pixels, cache=cache)
    assert not first.cache_hit and second.cache_hit
    assert second.tensor is first.tensor and second.etag == first.etag
    assert (cache.stats().hits, cache.stats().misses) == (1, 1)


def test_benchmark_store_uploads_and_reads_back(prepared):
    from streaming.bench.photos import tiny_photos
    from streaming.bench.stores import s3_store

    photos = tiny_photos()[:1]
    store = s3_store(photos)
    with store.fetcher() as fetcher:
        assert fetcher.fetch(store.refs[photos[0].name]).data == photos[0].data
