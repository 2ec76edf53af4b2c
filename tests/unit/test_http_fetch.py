"""http(s) fetching (limits, retries, redirects, the SSRF guard, TLS) against scripted loopback
web servers. Deadlines against trickling servers: test_deadline.py."""
from __future__ import annotations

import gzip
import socket as _socket
import time

import pytest

from streaming.config import PipelineConfig, Secret
from streaming.errors import AccessDenied, FetchFailed, ObjectNotFound, ObjectTooLarge, TooManyRedirects, UriNotAllowed
from streaming.fetch import Fetcher
from streaming.uris import ObjectRef, parse_uri
from tests.net_support import TLS_DIR, CountingListener, Reply, ScriptedHttpServer, redirect

ACCESS_KEY, SECRET_KEY = "AKIATESTACCESSKEY123", "s3cr3t/Key+ThatMustNeverLeak"


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


@pytest.mark.parametrize("location", ["file:///etc/passwd", "s3://bucket/key", "https://user:pw@127.0.0.1/",
                                      "http://[evil/x.jpg", "//[::1/x.jpg", "https://[/", "http://[x::]/a.jpg"])
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
