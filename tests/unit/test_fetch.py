"""Fetcher on file:// objects, its lifecycle, and its botocore error mapping.

S3 itself is exercised by the integration tests against the real S3 server; the only S3
call here goes to a closed local port, to see a connection failure become FetchFailed.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from streaming.config import PipelineConfig, Secret
from streaming.errors import (AccessDenied, FetchFailed, ObjectNotFound, ObjectTooLarge,
                              PipelineError, UriNotAllowed)
from streaming.fetch import FetchedObject, Fetcher
from streaming.uris import ObjectRef, parse_uri

LIMIT = 1000
ACCESS_KEY, SECRET_KEY = "AKIATESTACCESSKEY123", "s3cr3t/Key+ThatMustNeverLeak"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "small.jpg").write_bytes(b"\xff\xd8\xff" + b"a" * 100)
    (root / "exact.bin").write_bytes(b"e" * LIMIT)
    (root / "big.bin").write_bytes(b"b" * (LIMIT + 1))
    (root / "dir.jpg").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    return root


@pytest.fixture
def config(root: Path) -> PipelineConfig:
    return PipelineConfig(allowed_schemes=("s3", "file"), file_root=str(root),
                          max_object_bytes=LIMIT, fetch_concurrency=4)


@pytest.fixture
def fetcher(config: PipelineConfig):
    with Fetcher(config) as fetcher:
        yield fetcher


def ref(config: PipelineConfig, name: str) -> ObjectRef:
    return parse_uri(f"file://{config.file_root}/{name}", config)


def test_fetch_file(fetcher, config, root):
    fetched = fetcher.fetch(ref(config, "small.jpg"))
    assert isinstance(fetched, FetchedObject)
    assert fetched.data == (root / "small.jpg").read_bytes()
    assert fetched.etag is None and fetched.fetch_ms >= 0
    assert fetched.uri == ref(config, "small.jpg").uri


@pytest.mark.parametrize("name, error", [
    ("missing.jpg", ObjectNotFound),
    ("dir.jpg", ObjectNotFound),
    ("big.bin", ObjectTooLarge),
])
def test_fetch_file_errors(fetcher, config, name, error):
    with pytest.raises(error) as caught:
        fetcher.fetch(ref(config, name))
    assert caught.value.stage == "fetch"


def test_size_limit_is_inclusive(fetcher, config):
    assert len(fetcher.fetch(ref(config, "exact.bin")).data) == LIMIT


def test_file_swapped_for_symlink_after_parse_is_refused(fetcher, config, root):
    target = root / "swapped.jpg"
    target.write_bytes(b"ok")
    parsed = ref(config, "swapped.jpg")
    target.unlink()
    target.symlink_to(root.parent / "outside.jpg")
    with pytest.raises(UriNotAllowed) as caught:
        fetcher.fetch(parsed)
    assert caught.value.stage == "fetch"


def test_file_ref_outside_root_is_refused(fetcher, root):
    with pytest.raises(UriNotAllowed):
        fetcher.fetch(ObjectRef("file", "", str(root.parent / "outside.jpg")))


def test_fetch_many_keeps_order_and_returns_errors(fetcher, config):
    names = ["small.jpg", "missing.jpg", "exact.bin", "big.bin", "small.jpg"] * 3
    results = fetcher.fetch_many([ref(config, n) for n in names])
    assert len(results) == len(names)
    for name, result in zip(names, results):
        if name in ("small.jpg", "exact.bin"):
            assert isinstance(result, FetchedObject) and result.uri.endswith(name)
        else:
            assert isinstance(result, PipelineError)
            assert result.code == ("object_not_found" if name == "missing.jpg" else "object_too_large")
    assert fetcher.fetch_many([]) == []


def test_fetch_many_reuses_one_pool(fetcher, config):
    refs = [ref(config, "small.jpg")] * 3
    fetcher.fetch_many(refs)
    pool = fetcher._pool
    fetcher.fetch_many(refs)
    assert fetcher._pool is pool and pool._max_workers == config.fetch_concurrency


def test_fetcher_pickles_before_and_after_use(config):
    fetcher = Fetcher(config)
    fresh = pickle.loads(pickle.dumps(fetcher))
    assert fresh.fetch(ref(config, "small.jpg")).data.startswith(b"\xff\xd8\xff")
    fresh.fetch_many([ref(config, "small.jpg")] * 2)
    again = pickle.loads(pickle.dumps(fresh))  # an opened one travels as its config only
    assert again._pool is None and again._client is None
    assert again.fetch(ref(config, "small.jpg")).data
    fresh.close()
    again.close()


def test_half_a_credential_is_a_config_error():
    with pytest.raises(ValueError, match="both"):
        Fetcher(PipelineConfig(s3_access_key=Secret(ACCESS_KEY)))


def test_unreachable_s3_is_fetch_failed_without_credentials_in_message():
    config = PipelineConfig(s3_endpoint="http://127.0.0.1:1", fetch_retries=0, fetch_timeout_s=2.0,
                            s3_access_key=Secret(ACCESS_KEY), s3_secret_key=Secret(SECRET_KEY))
    with Fetcher(config) as fetcher:
        assert SECRET_KEY not in repr(fetcher)
        with pytest.raises(FetchFailed) as caught:
            fetcher.fetch(ObjectRef("s3", "bucket", "cat.jpg"))
    assert caught.value.stage == "fetch" and caught.value.code == "fetch_failed"
    assert SECRET_KEY not in str(caught.value) and ACCESS_KEY not in str(caught.value)


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize("code, status, error", [
    ("NoSuchKey", 404, ObjectNotFound),
    ("NoSuchBucket", 404, ObjectNotFound),
    ("404", 404, ObjectNotFound),
    ("AccessDenied", 403, AccessDenied),
    ("InvalidAccessKeyId", 403, AccessDenied),
    ("SignatureDoesNotMatch", 403, AccessDenied),
    ("403", 403, AccessDenied),
    ("SlowDown", 503, FetchFailed),
    ("Throttling", 400, FetchFailed),
    ("InternalError", 500, FetchFailed),
    ("RequestTimeout", 400, FetchFailed),
    ("ServiceUnavailable", 503, FetchFailed),
])
def test_s3_client_errors_map_to_the_error_tree(code, status, error):
    config = PipelineConfig(s3_access_key=Secret(ACCESS_KEY), s3_secret_key=Secret(SECRET_KEY))
    fetcher = Fetcher(config)
    with pytest.raises(error) as caught, fetcher._s3_errors():
        raise client_error(code, status, f"key {ACCESS_KEY} secret {SECRET_KEY}")
    assert caught.value.stage == "fetch"
    assert code in caught.value.message
    assert SECRET_KEY not in caught.value.message and ACCESS_KEY not in caught.value.message
