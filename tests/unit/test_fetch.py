"""Fetcher on file:// objects, its lifecycle, its botocore error mapping, and its S3 retry,
timeout and size rules against a scripted stand-in S3 on loopback; http(s) fetching (limits,
retries, redirects, the SSRF guard, TLS) against scripted loopback web servers.

S3 itself is exercised by the integration tests against the real S3 server
(tests/integration/test_fetch_s3.py).
"""
from __future__ import annotations

import gzip
import pickle
import socket
import socket as _socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from streaming.config import PipelineConfig, Secret
from streaming.errors import (AccessDenied, FetchFailed, ObjectNotFound, ObjectTooLarge,
                              PipelineError, TooManyRedirects, UriNotAllowed)
from streaming.fetch import FetchedObject, Fetcher
from streaming.uris import ObjectRef, parse_uri
from tests.net_support import TLS_DIR, CountingListener, Reply, ScriptedHttpServer, redirect

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


# -- http(s): limits, retries, redirects and the SSRF guard, against loopback servers -----------
JPEG = b"\xff\xd8\xff" + b"j" * 500
GZIPPED = gzip.compress(JPEG, mtime=0)


def http_config(**overrides) -> PipelineConfig:
    """http allowed to any host and port; only 127.0.0.1 exempt from the address guard."""
    values = dict(allowed_schemes=("s3", "http", "https"), allowed_hosts=("*:*",),
                  http_trusted_networks=("127.0.0.1/32",), fetch_retries=2, fetch_timeout_s=2.0,
                  max_object_bytes=20_000, max_redirects=3)
    return PipelineConfig(**{**values, **overrides})


@pytest.fixture
def web():
    routes = {
        "/img.jpg": Reply(200, JPEG, {"ETag": '"v1"', "Content-Type": "image/jpeg"}),
        "/big-declared": Reply(200, b"x" * 100, {"Content-Length": "50000"}),
        "/big-chunked": Reply(200, b"x" * 40_000, chunked=True),
        "/gone": Reply(410), "/forbidden": Reply(403), "/teapot": Reply(418),
        "/always-500": Reply(500), "/gzip": Reply(200, GZIPPED, {"Content-Encoding": "gzip"}),
    }
    with ScriptedHttpServer(routes) as server:
        yield server


def hits(server, path):
    return sum(1 for p, _ in server.requests if p == path)


def http_fetch(uri: str, config: PipelineConfig | None = None, **kwargs):
    config = config or http_config()
    fetcher = Fetcher(config, sleep=lambda s: None, **kwargs)  # not open(): no S3 client is needed
    try:
        return fetcher.fetch(parse_uri(uri, config))
    finally:
        fetcher.close()


def test_http_fetch_returns_body_and_etag(web):
    fetched = http_fetch(web.url("/img.jpg"))
    assert (fetched.data, fetched.etag, fetched.attempts) == (JPEG, "v1", 1)
    path, headers = web.requests[0]
    assert headers["Host"] == f"127.0.0.1:{web.port}" and headers["Accept-Encoding"] == "identity"
    assert not {"Authorization", "Cookie", "Proxy-Authorization"} & set(headers)


def test_http_conditional_fetch(web):
    web.routes["/etag.jpg"] = lambda h: Reply(304) if h.headers.get("If-None-Match") == '"v1"' else Reply(200, JPEG)
    config = http_config()
    with Fetcher(config, resolver=None) as fetcher:
        same = fetcher.fetch(parse_uri(web.url("/etag.jpg"), config), if_none_match="v1")
        other = fetcher.fetch(parse_uri(web.url("/etag.jpg"), config), if_none_match="v0")
    assert same.not_modified and same.data == b"" and same.etag == "v1"
    assert not other.not_modified and other.data == JPEG


@pytest.mark.parametrize("path, error, message", [
    ("/big-declared", ObjectTooLarge, "50000 bytes, limit 20000"),
    ("/big-chunked", ObjectTooLarge, "over the limit of 20000"),
    ("/gone", ObjectNotFound, "HTTP 410"),
    ("/missing", ObjectNotFound, "HTTP 404"),
    ("/forbidden", AccessDenied, "HTTP 403"),
    ("/teapot", FetchFailed, "HTTP 418"),
])
def test_http_permanent_failures_are_not_retried(web, path, error, message):
    with pytest.raises(error, match=message) as caught:
        http_fetch(web.url(path))
    assert hits(web, path) == 1 and caught.value.stage == "fetch"


def test_http_5xx_is_retried_then_fetch_failed(web):
    with pytest.raises(FetchFailed, match=r"HTTP 500 from .* \(after 3 attempts\)"):
        http_fetch(web.url("/always-500"))
    assert hits(web, "/always-500") == 3


def test_http_content_encoding_is_never_decoded(web):
    assert http_fetch(web.url("/gzip")).data == GZIPPED  # a gzip bomb stays as small as it came


def test_http_slow_body_hits_the_timeout(web):
    def slow(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "4000")
        handler.end_headers()
        for _ in range(40):
            handler.wfile.write(b"x" * 100)
            handler.wfile.flush()
            time.sleep(0.05)
        return Reply(200)
    web.routes["/slow"] = slow
    started = time.monotonic()
    with pytest.raises(FetchFailed, match="fetch_timeout_s"):
        http_fetch(web.url("/slow"), http_config(fetch_timeout_s=0.5, fetch_retries=0))
    assert time.monotonic() - started < 1.5


def test_http_redirects_are_followed_up_to_max_redirects(web):
    web.routes.update({"/r1": redirect("/r2"), "/r2": redirect(web.url("/img.jpg"), 301),
                       "/loop": redirect("/loop")})
    assert http_fetch(web.url("/r1")).data == JPEG
    with pytest.raises(TooManyRedirects):
        http_fetch(web.url("/loop"))
    assert hits(web, "/loop") == 4  # the first request and 3 redirects
    with pytest.raises(TooManyRedirects):
        http_fetch(web.url("/r1"), http_config(max_redirects=1))


@pytest.mark.parametrize("target", [
    "http://127.0.0.2:{port}/x", "http://[::ffff:127.0.0.2]:{port}/x", "http://0.0.0.0:{port}/x",
    "http://2130706434:{port}/x", "http://0x7f000002:{port}/x", "http://127.0.2:{port}/x",
    "http://[::ffff:7f00:2]:{port}/x", "http://rebound.test:{port}/x",
])
def test_http_redirect_to_a_forbidden_address_makes_no_connection(web, target):
    with CountingListener("127.0.0.2") as listener:
        web.routes["/hop"] = redirect(target.format(port=listener.port))
        resolver = _resolver({"rebound.test": ["127.0.0.2"]})
        with pytest.raises(UriNotAllowed) as caught:
            http_fetch(web.url("/hop"), resolver=resolver)
        time.sleep(0.3)
        assert listener.count == 0
    assert hits(web, "/hop") == 1  # the first hop was made: the refusal is the redirect's
    assert caught.value.code in ("address_not_allowed", "uri_not_allowed") and caught.value.stage == "fetch"
    assert "127.0.0.2" not in caught.value.message or "rebound" not in target


@pytest.mark.parametrize("location", ["file:///etc/passwd", "s3://bucket/key", "https://user:pw@127.0.0.1/"])
def test_http_redirect_out_of_http_is_refused(web, location):
    web.routes["/hop"] = redirect(location)
    config = http_config(allowed_schemes=("s3", "file", "http", "https"), file_root="/")
    with pytest.raises(UriNotAllowed, match="redirect refused"):
        http_fetch(web.url("/hop"), config)


def _resolver(table, real=_socket.getaddrinfo):
    calls: list[str] = []

    def resolve(host, port, *args, **kwargs):
        calls.append(host)
        if host in table:
            answer = table[host] if not callable(table[host]) else table[host]()
            return [(_socket.AF_INET, _socket.SOCK_STREAM, 6, "", (a, port)) for a in answer]
        return real(host, port, *args, **kwargs)
    resolve.calls = calls
    return resolve


def test_http_connects_to_the_address_it_checked_not_a_second_answer(web, monkeypatch):
    """DNS rebinding: the first answer (checked) is 127.0.0.1, any later one 127.0.0.2. The
    fetch must use the first; a client that resolved the name again would hit the listener."""
    answers = iter([["127.0.0.1"]])
    with CountingListener("127.0.0.2", port=0) as listener:
        web2 = ScriptedHttpServer({"/img.jpg": Reply(200, JPEG)}, host="127.0.0.1")
        resolver = _resolver({"rebind.test": lambda: next(answers, ["127.0.0.2"])})
        monkeypatch.setattr(_socket, "getaddrinfo", resolver)  # what urllib3 would call with a name
        config = http_config(fetch_retries=0)
        try:
            with Fetcher(config) as fetcher:
                fetched = fetcher.fetch(parse_uri(f"http://rebind.test:{web2.port}/img.jpg", config))
        finally:
            web2.close()
        assert fetched.data == JPEG and listener.count == 0
        assert resolver.calls.count("rebind.test") == 1
        assert web2.requests[0][1]["Host"] == f"rebind.test:{web2.port}"


def test_http_ignores_proxy_settings_in_the_environment(web, monkeypatch):
    with CountingListener("127.0.0.1") as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        config = http_config(s3_access_key=Secret(ACCESS_KEY), s3_secret_key=Secret(SECRET_KEY))
        assert http_fetch(web.url("/img.jpg"), config).data == JPEG
        assert proxy.count == 0


def test_http_errors_name_the_host_not_its_address(web):
    resolver = _resolver({"images.test": ["127.0.0.1"]})
    with pytest.raises(FetchFailed) as caught:
        http_fetch(f"http://images.test:{web.port}/always-500", http_config(fetch_retries=0), resolver=resolver)
    assert "images.test" in caught.value.message and "127.0.0.1" not in caught.value.message
    closed = CountingListener("127.0.0.1")
    closed.close()  # a port nobody listens on
    with pytest.raises(FetchFailed, match="connecting to http://images.test") as caught:
        http_fetch(f"http://images.test:{closed.port}/x", http_config(fetch_retries=0), resolver=resolver)
    assert "127.0.0.1" not in caught.value.message


def test_http_refs_need_the_scheme_in_the_config_at_fetch_time_too():
    with Fetcher(PipelineConfig()) as fetcher, pytest.raises(UriNotAllowed, match="cannot be fetched"):
        fetcher.fetch(ObjectRef("http", "127.0.0.1:1", "x"))


def test_http_fetch_many_keeps_slots(web):
    config = http_config(fetch_retries=0)
    refs = [parse_uri(web.url(p), config) for p in ("/img.jpg", "/gone", "/img.jpg")]
    with Fetcher(config) as fetcher:
        out = fetcher.fetch_many(refs)
    assert out[0].data == JPEG and isinstance(out[1], ObjectNotFound) and out[2].data == JPEG


def test_https_goes_to_the_checked_address_but_verifies_the_name(monkeypatch):
    """The connection is made to the IP the guard checked, while SNI and the certificate check
    use the host name: a certificate for images.test serves images.test only."""
    resolver = _resolver({"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    config = http_config(fetch_retries=0)
    with ScriptedHttpServer({"/img.jpg": Reply(200, JPEG)}, tls_cert=TLS_DIR / "server.pem") as server:
        uri = f"https://images.test:{server.port}/img.jpg"
        monkeypatch.setenv("SSL_CERT_FILE", str(TLS_DIR / "ca.pem"))  # trust the test CA
        assert http_fetch(uri, config, resolver=resolver).data == JPEG
        with pytest.raises(FetchFailed, match="TLS handshake"):
            http_fetch(f"https://other.test:{server.port}/img.jpg", config, resolver=resolver)
        monkeypatch.setenv("SSL_CERT_FILE", str(TLS_DIR / "server.pem"))  # no longer trusted
        with pytest.raises(FetchFailed, match="TLS handshake"):
            http_fetch(uri, config, resolver=resolver)
    assert len(server.requests) == 1
