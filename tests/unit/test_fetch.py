"""Fetcher on file:// objects, its lifecycle, its botocore error mapping, and its S3 retry,
timeout and size rules against a scripted stand-in S3 on loopback.

S3 itself is exercised by the integration tests against the real S3 server
(tests/integration/test_fetch_s3.py).
"""
from __future__ import annotations

import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def test_fetch_many_passes_etags(fetcher, config):
    first = fetcher.fetch(ref(config, "small.jpg"))
    refs = [ref(config, "small.jpg"), ref(config, "exact.bin")]
    results = fetcher.fetch_many(refs, if_none_match=[first.etag, None])
    assert results[0].not_modified and not results[1].not_modified
    with pytest.raises(ValueError):
        fetcher.fetch_many(refs, if_none_match=[None])


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


# -- S3 retries, timeouts and streaming limits, against a stand-in S3 on loopback -------------
class StandInS3(ThreadingHTTPServer):
    """Answers GETs of /bucket/<key> from a script: key -> list of responses, one per request
    (the last one repeats). Counts requests per key."""

    daemon_threads = True

    def __init__(self, script: dict[str, list[tuple]]):
        super().__init__(("127.0.0.1", 0), _StandInHandler)
        self.script, self.requests = script, {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _StandInHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        key = self.path.split("?")[0].split("/", 2)[2]
        count = self.server.requests[key] = self.server.requests.get(key, 0) + 1
        responses = self.server.script[key]
        kind, *args = responses[min(count, len(responses)) - 1]
        getattr(self, f"_{kind}")(*args)

    def _ok(self, body: bytes, etag: str = "abc123") -> None:
        if self.headers.get("If-None-Match") == f'"{etag}"':
            self.send_response(304)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f'<Message>scripted {code}</Message></Error>').encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, total: int) -> None:  # no Content-Length: only streaming can catch the size
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        piece = b"x" * 4096
        sent = 0
        while sent < total:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        self.wfile.write(b"0\r\n\r\n")

    def _slow(self, chunks: int, delay_s: float) -> None:  # each read is quick, the whole is slow
        piece = b"s" * 65536
        self.send_response(200)
        self.send_header("Content-Length", str(len(piece) * chunks))
        self.end_headers()
        for _ in range(chunks):
            self.wfile.write(piece)
            self.wfile.flush()
            time.sleep(delay_s)

    def _cut(self, length: int, sent: int) -> None:  # promises `length` bytes, closes after `sent`
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(b"c" * sent)
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


BODY = b"\xff\xd8\xff" + b"p" * 5000
SCRIPT = {
    "ok": [("ok", BODY)],
    "throttled-twice": [("error", 503, "SlowDown"), ("error", 429, "TooManyRequests"), ("ok", BODY)],
    "5xx-always": [("error", 500, "InternalError")],
    "missing": [("error", 404, "NoSuchKey")],
    "forbidden": [("error", 403, "AccessDenied")],
    "bad-request": [("error", 400, "InvalidArgument")],
    "chunked-big": [("chunked", 40_000)],
    "slow": [("slow", 12, 0.15)],
    "cut-once": [("cut", len(BODY), 100), ("ok", BODY)],
}


@pytest.fixture(scope="module")
def stand_in():
    server = StandInS3(SCRIPT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3_fetcher(stand_in):
    stand_in.requests.clear()
    delays: list[float] = []
    config = PipelineConfig(s3_endpoint=stand_in.endpoint, s3_access_key=Secret(ACCESS_KEY),
                            s3_secret_key=Secret(SECRET_KEY), fetch_retries=3, fetch_timeout_s=0.6,
                            max_object_bytes=20_000)
    with Fetcher(config, retry_base_s=0.1, retry_cap_s=0.25, sleep=delays.append) as fetcher:
        yield fetcher, stand_in.requests, delays


def s3ref(key: str) -> ObjectRef:
    return ObjectRef("s3", "bucket", key)


def test_s3_fetch_keeps_etag_and_counts_one_attempt(s3_fetcher):
    fetcher, requests, delays = s3_fetcher
    fetched = fetcher.fetch(s3ref("ok"))
    assert (fetched.data, fetched.etag, fetched.attempts) == (BODY, "abc123", 1)
    assert requests == {"ok": 1} and delays == []


def test_s3_conditional_fetch_transfers_nothing_when_unchanged(s3_fetcher):
    fetcher, requests, _ = s3_fetcher
    same = fetcher.fetch(s3ref("ok"), if_none_match="abc123")
    assert same.not_modified and same.data == b"" and same.etag == "abc123"
    assert fetcher.fetch(s3ref("ok"), if_none_match="stale").data == BODY


def test_throttling_is_retried_with_jittered_backoff(s3_fetcher):
    fetcher, requests, delays = s3_fetcher
    fetched = fetcher.fetch(s3ref("throttled-twice"))
    assert fetched.data == BODY and fetched.attempts == 3
    assert requests == {"throttled-twice": 3}  # botocore itself retries nothing
    assert len(delays) == 2 and 0 <= delays[0] <= 0.1 and 0 <= delays[1] <= 0.2


def test_5xx_is_retried_then_fetch_failed(s3_fetcher):
    fetcher, requests, delays = s3_fetcher
    with pytest.raises(FetchFailed, match="after 4 attempts") as caught:
        fetcher.fetch(s3ref("5xx-always"))
    assert caught.value.code == "fetch_failed" and caught.value.stage == "fetch"
    assert requests == {"5xx-always": 4} and len(delays) == 3
    assert all(0 <= d <= 0.25 for d in delays)  # capped


@pytest.mark.parametrize("key, error", [("missing", ObjectNotFound), ("forbidden", AccessDenied),
                                        ("bad-request", FetchFailed)])
def test_4xx_is_not_retried(s3_fetcher, key, error):
    fetcher, requests, delays = s3_fetcher
    with pytest.raises(error):
        fetcher.fetch(s3ref(key))
    assert requests == {key: 1} and delays == []


def test_size_limit_holds_while_streaming_without_content_length(s3_fetcher):
    fetcher, requests, _ = s3_fetcher
    with pytest.raises(ObjectTooLarge, match="over the limit"):
        fetcher.fetch(s3ref("chunked-big"))
    assert requests == {"chunked-big": 1}


def test_slow_body_hits_the_per_request_timeout(stand_in):
    config = PipelineConfig(s3_endpoint=stand_in.endpoint, s3_access_key=Secret(ACCESS_KEY),
                            s3_secret_key=Secret(SECRET_KEY), fetch_retries=0, fetch_timeout_s=0.5)
    started = time.monotonic()
    with Fetcher(config) as fetcher, pytest.raises(FetchFailed, match="fetch_timeout_s"):
        fetcher.fetch(s3ref("slow"))
    assert time.monotonic() - started < 1.5  # the body alone would take 1.8 s


def test_body_cut_short_is_retried(s3_fetcher):
    fetcher, requests, _ = s3_fetcher
    fetched = fetcher.fetch(s3ref("cut-once"))
    assert fetched.data == BODY and fetched.attempts == 2 and requests == {"cut-once": 2}


def test_backoff_is_full_jitter_under_the_cap():
    fetcher = Fetcher(PipelineConfig(), retry_base_s=0.1, retry_cap_s=0.3)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.3), (6, 0.3)):
        values = [fetcher.backoff_s(attempt) for _ in range(200)]
        assert all(0 <= v <= ceiling for v in values) and max(values) > ceiling / 2
