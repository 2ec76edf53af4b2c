"""Fetcher on file:// objects, its lifecycle and pickling, and its retry backoff.

S3 (signing, error mapping, retries) is tested against a stand-in S3 in
test_s3_get.py and against the real S3 server in tests/integration/test_fetch_s3.py;
http(s) in test_http_fetch.py; the per-attempt deadline in test_deadline.py, the response limits in
test_transport.py.
"""
from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streaming.config import PipelineConfig, Secret
from streaming.errors import ObjectNotFound, ObjectTooLarge, PipelineError, UriNotAllowed
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
    assert fetched.fetch_ms >= 0 and fetched.attempts == 1 and not fetched.not_modified
    assert fetched.uri == ref(config, "small.jpg").uri
    info = (root / "small.jpg").stat()
    assert fetched.etag == f"{info.st_size:x}-{info.st_mtime_ns:x}"  # as web servers make them


def test_conditional_file_fetch(fetcher, config, root):
    first = fetcher.fetch(ref(config, "small.jpg"))
    same = fetcher.fetch(ref(config, "small.jpg"), if_none_match=first.etag)
    assert same.not_modified and same.data == b"" and same.etag == first.etag
    other = fetcher.fetch(ref(config, "small.jpg"), if_none_match="0-0")
    assert not other.not_modified and other.data == first.data
    (root / "small.jpg").write_bytes(b"\xff\xd8\xff" + b"changed" * 10)
    changed = fetcher.fetch(ref(config, "small.jpg"), if_none_match=first.etag)
    assert not changed.not_modified and changed.etag != first.etag and b"changed" in changed.data


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


def test_a_folder_swapped_for_a_symlink_after_the_last_check_leads_nowhere(fetcher, config, root, monkeypatch):
    """The window between the fetch's own check of the real path and its open: a folder of the path
    replaced then by a symlink to a folder outside the root must not be followed."""
    from streaming import fetch as fetch_module

    (root / "album").mkdir()
    (root / "album" / "outside.jpg").write_bytes(b"inside")
    parsed = ref(config, "album/outside.jpg")
    (root / "album" / "outside.jpg").unlink()
    (root / "album").rmdir()
    (root / "album").symlink_to(root.parent)  # root.parent holds outside.jpg, b"secret"
    monkeypatch.setattr(fetch_module, "resolve_under", lambda path, _root: path)  # the check already passed
    with pytest.raises(UriNotAllowed, match="symlink") as caught:
        fetcher.fetch(parsed)
    assert caught.value.stage == "fetch"


def test_file_ref_outside_root_is_refused(fetcher, root):
    with pytest.raises(UriNotAllowed):
        fetcher.fetch(ObjectRef("file", "", str(root.parent / "outside.jpg")))



def test_a_fifo_is_refused_without_waiting_for_a_writer(fetcher, config, root):
    os.mkfifo(root / "pipe.jpg")
    with pytest.raises(ObjectNotFound, match="not a regular file"):
        fetcher.fetch(ref(config, "pipe.jpg"))


def test_concurrent_fetches_keep_their_own_outcomes(fetcher, config):
    names = ["small.jpg", "missing.jpg", "exact.bin", "big.bin", "small.jpg"] * 3

    def outcome(name):
        try:
            return fetcher.fetch(ref(config, name))
        except PipelineError as exc:
            return exc
    with ThreadPoolExecutor(config.fetch_concurrency) as pool:
        results = list(pool.map(outcome, names))
    for name, result in zip(names, results):
        if name in ("small.jpg", "exact.bin"):
            assert isinstance(result, FetchedObject) and result.uri.endswith(name)
        else:
            assert result.code == ("object_not_found" if name == "missing.jpg" else "object_too_large")


def test_fetcher_pickles_before_and_after_use(config):
    fetcher = Fetcher(config)
    fresh = pickle.loads(pickle.dumps(fetcher))
    assert fresh.fetch(ref(config, "small.jpg")).data.startswith(b"\xff\xd8\xff")
    again = pickle.loads(pickle.dumps(fresh))  # a used one travels as its config only
    assert set(fresh.__getstate__()) == {"_config", "_retry"}
    assert again.fetch(ref(config, "small.jpg")).data
    fresh.close()
    again.close()


@pytest.mark.parametrize("endpoint", ["ftp://s3.example.com", "s3.example.com:9000", "http://user:pw@host:9000"])
def test_a_bad_s3_endpoint_is_a_config_error(endpoint):
    with pytest.raises(ValueError, match="s3_endpoint"):
        Fetcher(PipelineConfig(s3_endpoint=endpoint))


def test_half_a_credential_is_a_config_error():
    with pytest.raises(ValueError, match="both"):
        Fetcher(PipelineConfig(s3_access_key=Secret(ACCESS_KEY)))


def test_backoff_is_full_jitter_under_the_cap():
    fetcher = Fetcher(PipelineConfig(), retry_base_s=0.1, retry_cap_s=0.3)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.3), (6, 0.3)):
        values = [fetcher.backoff_s(attempt) for _ in range(200)]
        assert all(0 <= v <= ceiling for v in values) and max(values) > ceiling / 2
