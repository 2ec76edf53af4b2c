"""S3 GETs (SigV4 signing, credentials, XML error mapping, retries, size limits) against a
scripted stand-in S3 on loopback. The real S3 server is exercised by
tests/integration/test_fetch_s3.py; deadlines against trickling servers by test_deadline.py."""
from __future__ import annotations

import datetime
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.session
import pytest
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import CredentialRetrievalError

from streaming.config import PipelineConfig, Secret
from streaming.errors import AccessDenied, FetchFailed, ObjectNotFound, ObjectTooLarge, Retryable
from streaming.fetch import Fetcher
from streaming.uris import ObjectRef

ACCESS_KEY, SECRET_KEY = "AKIATESTACCESSKEY123", "s3cr3t/Key+ThatMustNeverLeak"


# -- S3 retries, timeouts and streaming limits, against a stand-in S3 on loopback -------------
class StandInS3(ThreadingHTTPServer):
    """Answers GETs of /bucket/<key> from a script: key -> list of responses, one per request
    (the last one repeats). Counts requests per key."""

    daemon_threads = True

    def __init__(self, script: dict[str, list[tuple]]):
        super().__init__(("127.0.0.1", 0), _StandInHandler)
        self.script, self.requests, self.headers = script, {}, []

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
        self.server.headers.append(dict(self.headers.items()))
        if key.startswith("error/"):  # error/<status>/<code>
            _, status, code = key.split("/")
            return self._error(int(status), code, f"key {ACCESS_KEY} secret {SECRET_KEY}")
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

    def _error(self, status: int, code: str, message: str = "") -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f'<Message>scripted {code} {message}</Message></Error>').encode()
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
    stand_in.headers.clear()
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


def test_body_cut_short_is_retried(s3_fetcher):
    fetcher, requests, _ = s3_fetcher
    fetched = fetcher.fetch(s3ref("cut-once"))
    assert fetched.data == BODY and fetched.attempts == 2 and requests == {"cut-once": 2}


@pytest.mark.parametrize("status, code, error, attempts", [
    (404, "NoSuchKey", ObjectNotFound, 1),
    (404, "NoSuchBucket", ObjectNotFound, 1),
    (404, "Whatever", ObjectNotFound, 1),
    (403, "AccessDenied", AccessDenied, 1),
    (403, "InvalidAccessKeyId", AccessDenied, 1),
    (403, "SignatureDoesNotMatch", AccessDenied, 1),
    (400, "ExpiredToken", AccessDenied, 1),
    (503, "SlowDown", FetchFailed, 4),
    (400, "Throttling", FetchFailed, 4),
    (500, "InternalError", FetchFailed, 4),
    (400, "RequestTimeout", FetchFailed, 4),
    (503, "ServiceUnavailable", FetchFailed, 4),
    (301, "PermanentRedirect", FetchFailed, 1),
])
def test_s3_error_bodies_map_to_the_error_tree(s3_fetcher, status, code, error, attempts):
    fetcher, requests, _ = s3_fetcher
    key = f"error/{status}/{code}"
    with pytest.raises(error) as caught:
        fetcher.fetch(s3ref(key))
    assert type(caught.value) is error and caught.value.stage == "fetch"
    assert f"S3 {code} (HTTP {status})" in caught.value.message
    assert requests == {key: attempts}
    assert SECRET_KEY not in caught.value.message and ACCESS_KEY not in caught.value.message


def test_requests_are_signed_path_style_with_the_configured_key(s3_fetcher, stand_in):
    fetcher, requests, _ = s3_fetcher
    stand_in.script["dir/a%20b%2Bc~.jpg"] = [("ok", BODY)]  # the key as botocore percent-encodes it
    assert fetcher.fetch(s3ref("dir/a b+c~.jpg")).data == BODY
    assert requests == {"dir/a%20b%2Bc~.jpg": 1}
    headers = stand_in.headers[-1]
    assert headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/us-east-1/s3/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Content-SHA256"] and headers["X-Amz-Date"] and headers["Accept-Encoding"] == "identity"
    assert SECRET_KEY not in str(headers)


def test_credentials_come_from_the_default_chain_when_not_configured(stand_in, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMTHEENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    with Fetcher(PipelineConfig(s3_endpoint=stand_in.endpoint, fetch_retries=0)) as fetcher:
        assert fetcher.fetch(s3ref("ok")).data == BODY
    headers = stand_in.headers[-1]
    assert "Credential=AKIAFROMTHEENVIRONMENT/" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "env-token"


def test_no_credentials_anywhere_is_access_denied(stand_in, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    stand_in.requests.clear()
    with Fetcher(PipelineConfig(s3_endpoint=stand_in.endpoint)) as fetcher, \
            pytest.raises(AccessDenied, match="no S3 credentials"):
        fetcher.fetch(s3ref("ok"))
    assert stand_in.requests == {}


def test_a_failed_refresh_of_temporary_credentials_is_retried_then_fetch_failed(stand_in, monkeypatch):
    # a container or instance role's credentials expire; their endpoint is away when they are due
    refreshes = []

    def refresh() -> dict:
        refreshes.append(1)
        raise CredentialRetrievalError(provider="container-role", error_msg="the endpoint timed out")

    long_ago = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    expired = RefreshableCredentials(ACCESS_KEY, SECRET_KEY, "token", long_ago, refresh, "container-role")
    monkeypatch.setattr(botocore.session.Session, "get_credentials", lambda self: expired)
    stand_in.requests.clear()
    with Fetcher(PipelineConfig(s3_endpoint=stand_in.endpoint, fetch_retries=2), sleep=lambda s: None) as fetcher, \
            pytest.raises(FetchFailed, match="refreshing the S3 credentials failed") as failed:
        fetcher.fetch(s3ref("ok"))
    assert isinstance(failed.value, Retryable) and len(refreshes) == 3 and stand_in.requests == {}


def test_unreachable_s3_is_fetch_failed_without_credentials_in_message():
    config = PipelineConfig(s3_endpoint="http://127.0.0.1:1", fetch_retries=0, fetch_timeout_s=2.0,
                            s3_access_key=Secret(ACCESS_KEY), s3_secret_key=Secret(SECRET_KEY))
    with Fetcher(config) as fetcher:
        assert SECRET_KEY not in repr(fetcher)
        with pytest.raises(FetchFailed) as caught:
            fetcher.fetch(ObjectRef("s3", "bucket", "cat.jpg"))
    assert caught.value.stage == "fetch" and caught.value.code == "fetch_failed"
    assert "connecting to S3 http://127.0.0.1:1 failed" in caught.value.message
    assert SECRET_KEY not in str(caught.value) and ACCESS_KEY not in str(caught.value)


@pytest.mark.parametrize("key", ["plain.jpg", "dir/a b+c~.jpg", "ünï/cødé €.jpg", "odd/%41?x=1#y&z=2.jpg", "a//b/"])
@pytest.mark.parametrize("etag", [None, "abc123"])
@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "https://s3.eu-west-3.amazonaws.com/prefix"])
def test_the_signer_gives_botocores_headers_for_the_same_instant(monkeypatch, key, etag, token, endpoint):
    """sigv4_headers against botocore's S3SigV4Auth: the same Authorization, byte for byte."""
    import datetime
    from urllib.parse import quote

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from streaming.s3_get import sigv4_headers

    now = datetime.datetime(2026, 12, 2, 15, 4, 5, tzinfo=datetime.timezone.utc)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_: now.replace(tzinfo=None))
    credentials = Credentials(ACCESS_KEY, SECRET_KEY, token).get_frozen_credentials()
    scheme, _, rest = endpoint.partition("://")
    netloc, _, prefix = rest.partition("/")
    target = (f"/{prefix}" if prefix else "") + f"/bucket/{quote(key, safe='/~')}"
    headers = {"If-None-Match": f'"{etag}"'} if etag else {}
    request = AWSRequest(method="GET", url=f"{scheme}://{netloc}{target}", headers={"Host": netloc, **headers})
    botocore.auth.S3SigV4Auth(credentials, "s3", "eu-west-3").add_auth(request)
    ours = sigv4_headers(target, netloc, headers, credentials, "eu-west-3", now)
    assert ours == dict(request.headers.items())
