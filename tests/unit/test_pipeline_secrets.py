"""Credentials never reach results, logs, metric names or exception messages.

A pipeline runs with known canary credentials (S3 keys, a Kafka SASL password, a password in
a URI's user info) against endpoints that fail in the ways that tend to leak: an S3 stand-in
that echoes every request header (the SigV4 Authorization header holds the access key) in
its error messages, one that fails with 5xx the same way, an endpoint nobody listens on, and
http redirects that carry user info. Every result, every log record (DEBUG and up, all
loggers), every metric name and every exception message is then searched for each canary.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming import pipeline as pipeline_module
from streaming.config import PipelineConfig, Secret
from streaming.contract import lite_contract
from streaming.errors import InferenceUnavailable
from streaming.events import Label, Prediction, result_to_json
from streaming.fetch import Fetcher
from streaming.metrics import PipelineStats
from streaming.pipeline import ImagePipeline
from tests.net_support import Reply, ScriptedHttpServer, redirect

ACCESS_KEY = "AKIACANARY7Q2W9E4R1T"
SECRET_KEY = "s3cr3t+Canary/9f8e7d6c5b4a3"
KAFKA_PASSWORD = "kafka-Canary-Pa55w0rd"
URI_PASSWORD = "uri-Canary-Pa55w0rd"
NEVER_ANYWHERE = (SECRET_KEY, KAFKA_PASSWORD, URI_PASSWORD)


class EchoingS3(ThreadingHTTPServer):
    """An S3 stand-in whose errors repeat the request headers (as a buggy proxy might)."""

    def __init__(self, status: int):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                headers = "; ".join(f"{k}={v}" for k, v in self.headers.items())
                code = "AccessDenied" if outer.status == 403 else "InternalError"
                body = (f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>denied for {headers}"
                        f"</Message><RequestId>{headers}</RequestId></Error>").encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("x-echo", headers[:2000])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.status = status
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class MetricGroup:
    """Records every metric and group name the stats register."""

    def __init__(self, names: list[str]):
        self.names = names

    def gauge(self, name, _fn):
        self.names.append(name)

    def add_group(self, name):
        self.names.append(name)
        return self


@pytest.fixture
def servers():
    forbidden, failing = EchoingS3(403), EchoingS3(500)
    web = ScriptedHttpServer({})
    web.routes["/to-userinfo"] = redirect(f"http://admin:{URI_PASSWORD}@127.0.0.1:{web.port}/x.jpg")
    web.routes["/denied"] = Reply(401, b"", {"WWW-Authenticate": "Basic"})
    yield forbidden, failing, web
    for server in (forbidden, failing):
        server.shutdown()
        server.server_close()
    web.close()


class UnreachableModel:
    """The Lite contract (so requests get as far as fetching), and a Triton that never answers."""

    contract = lite_contract()

    def infer(self, batch, contract):
        raise InferenceUnavailable("triton: StatusCode.UNAVAILABLE failed to connect to 127.0.0.1:1")


def test_canary_credentials_never_leak(servers, caplog, capsys, monkeypatch):
    forbidden, failing, web = servers
    monkeypatch.setattr(pipeline_module, "TRITON_STARTUP_WAIT_S", 0.2)
    caplog.set_level(logging.DEBUG)
    base = PipelineConfig(
        s3_access_key=Secret(ACCESS_KEY), s3_secret_key=Secret(SECRET_KEY),
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="imgstream", kafka_sasl_password=Secret(KAFKA_PASSWORD),
        allowed_schemes=("s3", "http"), allowed_hosts=("127.0.0.1:*",), http_trusted_networks=("127.0.0.1/32",),
        triton_grpc="127.0.0.1:1", infer_retry_window_s=0.2, fetch_retries=1, fetch_timeout_s=2.0)
    events = [
        {"id": "s3", "uri": "s3://bucket/cat.jpg"},
        {"id": "userinfo", "uri": f"http://admin:{URI_PASSWORD}@127.0.0.1:{web.port}/x.jpg"},
        {"id": "redirect", "uri": web.url("/to-userinfo")},
        {"id": "401", "uri": web.url("/denied")},
    ]
    results, names = [], []
    stats = PipelineStats()
    stats.register(MetricGroup(names), in_flight=lambda: 0)
    for endpoint in (forbidden.endpoint, failing.endpoint, "http://127.0.0.1:1"):
        engine = ImagePipeline(dataclasses.replace(base, s3_endpoint=endpoint), classifier=UnreachableModel())
        engine.open()
        try:
            for event in events:
                result = engine.process(json.dumps(event))
                stats.record(result)
                results.append(result_to_json(result))
        finally:
            engine.close()
        with Fetcher(engine.config) as fetcher:
            texts = [repr(engine.config), str(engine.config), repr(fetcher)]
    codes = [json.loads(r)["error"]["code"] for r in results]
    assert codes == ["access_denied", "uri_not_allowed", "uri_not_allowed", "access_denied",
                     "fetch_failed", "uri_not_allowed", "uri_not_allowed", "access_denied",
                     "fetch_failed", "uri_not_allowed", "uri_not_allowed", "access_denied"]
    assert any("AKIA" not in r and "denied for" in r for r in results)  # the echo reached the message, redacted
    captured = capsys.readouterr()
    logs = [caplog.text, captured.out, captured.err] + [r.getMessage() for r in caplog.records]
    everything = results + logs + names + texts
    for canary in NEVER_ANYWHERE:
        leaks = [text for text in everything if canary in text]
        assert not leaks, f"{canary!r} leaked: {leaks[0][:300]}"
    # The access key id is not a secret to AWS, but it is ours: not in results, metrics, or our logs.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("streaming")]
    assert not [t for t in results + names + texts + ours if ACCESS_KEY in t]


# -- user info in any form never reaches a result (issue 12 item 8) ------------------------
CANARY = "Cn4ry"
_RESERVED = ":/?#[]@!$&'()*+,;= %\\"
_credential_text = st.text(st.sampled_from(list(_RESERVED + "aZ09-._~é")), max_size=8)
_PERMISSIVE = PipelineConfig(allowed_schemes=("s3", "http", "https"), allowed_hosts=("*:*",),
                             http_trusted_networks=("0.0.0.0/0", "::/0"), max_event_bytes=1024)


@settings(max_examples=400, deadline=None)
@given(lead=st.sampled_from(["", " ", "  ", "\t"]),
       scheme=st.sampled_from(["s3", "S3", "http", "https", "HTTPS"]),
       user=_credential_text, before=_credential_text, after=_credential_text,
       at=st.sampled_from(["@", "@@", "@@@"]),
       target=st.sampled_from(["bucket/key.jpg", "images.example.com/a.jpg", "h:8080/x?y=1", "b/a@b.jpg", "host"]),
       padded=st.booleans())
def test_credentials_with_any_reserved_character_never_reach_a_result(lead, scheme, user, before, after, at,
                                                                        target, padded):
    """``user:password@`` with every reserved character in user and password, leading blanks,
    doubled '@': the request is refused (uri_not_allowed, or event_too_large when padded past
    max_event_bytes) and the password is nowhere in the result."""
    uri = f"{lead}{scheme}://{user}:{before}{CANARY}{after}{at}{target}"
    event = {"id": "x", "uri": uri, **({"pad": "p" * 70_000} if padded else {})}
    text = result_to_json(ImagePipeline(_PERMISSIVE).process(json.dumps(event)))
    body = json.loads(text)
    assert body["error"]["code"] == ("event_too_large" if padded else "uri_not_allowed")
    assert CANARY not in text
    assert CANARY not in result_to_json(Prediction("x", uri, "m", (Label("l", 1, 0.5),)))
