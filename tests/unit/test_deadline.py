"""One wall-clock deadline per attempt, enforced on the socket, against raw loopback servers that
trickle: for http and for S3 alike (the response-head limits: test_transport.py).

Every server here would hold a client that only has per-read socket timeouts for ever (each
byte comes well within any read timeout); the fetch must end by fetch_timeout_s + MARGIN_S.
"""
from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from streaming import deadline
from streaming.errors import FetchFailed, PipelineError
from streaming.fetch import Fetcher
from streaming.uris import parse_uri
from tests.net_support import (FETCH_TIMEOUT_S, TLS_DIR, ScriptedHttpServer, TrickleServer, byte_by_byte,
                               fetch_both_ways, http_config)

TIMEOUT_S = FETCH_TIMEOUT_S  # http_config's fetch_timeout_s
MARGIN_S = 1.0  # generous: the mechanism, not the machine's speed, is under test
OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"

TRICKLES = {  # each endless, one byte every 20 ms
    "status line": lambda: byte_by_byte(b"HTTP/1.1 200 ", forever=b"OK"),
    "headers": lambda: byte_by_byte(b"HTTP/1.1 200 OK\r\n", forever=b"X-Slow: yes\r\n"),
    "body": lambda: byte_by_byte(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", forever=b"\xff"),
    "chunked body": lambda: byte_by_byte(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                         forever=b"1\r\nx\r\n"),
}


@pytest.mark.parametrize("scheme", ["http", "s3"])
@pytest.mark.parametrize("what", list(TRICKLES))
def test_a_trickling_server_is_cut_off_at_the_deadline(what, scheme):
    with TrickleServer(TRICKLES[what], delay_s=0.02) as server:
        started = time.monotonic()
        with pytest.raises(FetchFailed, match=f"longer than fetch_timeout_s={TIMEOUT_S}") as caught:
            fetch_both_ways(server, scheme, http_config())
        elapsed = time.monotonic() - started
        assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + MARGIN_S, elapsed
        assert caught.value.code == "fetch_failed" and caught.value.stage == "fetch"
        assert len(server.requests) == 1
        _wait_until(lambda: server.open_connections == 0)  # our side closed it: never pooled
        assert server.open_connections == 0


def test_a_tls_handshake_that_trickles_is_cut_off_at_the_deadline():
    """The handshake is bounded as a whole by the socket timeout, set to the time left."""
    hello = b"\x16\x03\x03\x40\x00\x02"  # a ServerHello record header promising 16 KiB
    with TrickleServer(lambda: byte_by_byte(hello, forever=b"\x00"), delay_s=0.02, read_request=False) as server:
        config = http_config(allowed_schemes=("https",))
        started = time.monotonic()
        with Fetcher(config) as fetcher, pytest.raises(FetchFailed, match="fetch_timeout_s"):
            fetcher.fetch(parse_uri(f"https://127.0.0.1:{server.port}/x.jpg", config))
        assert time.monotonic() - started < TIMEOUT_S + MARGIN_S
        _wait_until(lambda: server.open_connections == 0)
        assert server.open_connections == 0


def test_a_tls_handshake_after_a_slow_connect_gets_only_the_time_left():
    """The listener's accept queue is full, so the client's SYNs are dropped until a slot frees
    (~2 s in): the connect takes most of the attempt, and the handshake that follows (never
    answered) may take only what is left of it, not a whole fetch_timeout_s of its own."""
    timeout_s = 3.0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port, fillers, held = listener.getsockname()[1], [], []
    while True:  # fill the accept queue: further SYNs are dropped
        filler = socket.socket()
        filler.settimeout(0.3)
        try:
            filler.connect(("127.0.0.1", port))
        except OSError:
            filler.close()
            break
        fillers.append(filler)

    def free_a_slot_then_accept_silently():
        time.sleep(2.0)
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed: the test is over
                return

    threading.Thread(target=free_a_slot_then_accept_silently, daemon=True).start()
    config = http_config(allowed_schemes=("https",), fetch_timeout_s=timeout_s, fetch_retries=0)
    started = time.monotonic()
    try:
        with Fetcher(config) as fetcher, pytest.raises(FetchFailed, match="fetch_timeout_s"):
            fetcher.fetch(parse_uri(f"https://127.0.0.1:{port}/x.jpg", config))
        assert time.monotonic() - started < timeout_s + MARGIN_S  # was connect + a whole timeout_s
    finally:
        for sock in (listener, *fillers, *held):
            sock.close()


def test_headers_trickling_over_tls_are_cut_off_at_the_deadline(monkeypatch):
    def trickle(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for byte in byte_by_byte(forever=b"X-Slow: yes\r\n"):  # until the client hangs up
            handler.wfile.write(byte)
            handler.wfile.flush()
            time.sleep(0.02)
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS_DIR / "ca.pem"))  # trust the test CA
    config = http_config(allowed_schemes=("https",))
    resolver = lambda host, port, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
    with ScriptedHttpServer({"/slow.jpg": trickle}, tls_cert=TLS_DIR / "server.pem") as server:
        started = time.monotonic()
        with Fetcher(config, resolver=resolver) as fetcher, pytest.raises(FetchFailed, match="fetch_timeout_s"):
            fetcher.fetch(parse_uri(f"https://images.test:{server.port}/slow.jpg", config))
        assert TIMEOUT_S * 0.9 <= time.monotonic() - started < TIMEOUT_S + MARGIN_S
        assert len(server.requests) == 1


def test_a_slow_dns_answer_is_cut_off_at_the_deadline():
    def slow_resolver(host, port, *args, **kwargs):
        time.sleep(3)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
    config = http_config()
    started = time.monotonic()
    with Fetcher(config, resolver=slow_resolver) as fetcher, pytest.raises(FetchFailed, match="fetch_timeout_s"):
        fetcher.fetch(parse_uri("http://slow-dns.test:8080/x.jpg", config))
    assert time.monotonic() - started < TIMEOUT_S + MARGIN_S


def test_each_retry_gets_its_own_deadline_and_the_whole_is_bounded():
    with TrickleServer(TRICKLES["body"], delay_s=0.02) as server:
        started = time.monotonic()
        with pytest.raises(FetchFailed, match=r"fetch_timeout_s.*\(after 3 attempts\)"):
            fetch_both_ways(server, "http", http_config(fetch_retries=2))
        assert time.monotonic() - started < 3 * TIMEOUT_S + MARGIN_S
        assert len(server.requests) == 3


def test_sixteen_trickling_uris_free_all_fetch_threads_by_the_deadline():
    config = http_config(fetch_concurrency=16)
    with TrickleServer(TRICKLES["headers"], delay_s=0.02) as server, Fetcher(config) as fetcher:
        refs = [parse_uri(server.url(f"/slow/{i}.jpg"), config) for i in range(16)]

        def outcome(ref):
            try:
                return fetcher.fetch(ref)
            except PipelineError as exc:
                return exc
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(outcome, refs))
        elapsed = time.monotonic() - started
        assert elapsed < TIMEOUT_S + MARGIN_S, elapsed
        assert all(isinstance(r, FetchFailed) and "fetch_timeout_s" in r.message for r in results)
        assert len(server.requests) == 16
    assert deadline.WATCHDOG.pending() == 0


def test_a_good_fetch_after_a_cut_one_uses_a_fresh_connection():
    served = iter([TRICKLES["body"](), iter([OK_HEAD + b"hello"])])
    config = http_config()
    with TrickleServer(lambda: next(served), delay_s=0.02) as server, Fetcher(config) as fetcher:
        ref = parse_uri(server.url("/x.jpg"), config)
        with pytest.raises(FetchFailed, match="fetch_timeout_s"):
            fetcher.fetch(ref)
        assert fetcher.fetch(ref).data == b"hello"
        assert len(server.requests) == 2


def test_watchdog_cuts_only_the_expired_attempt():
    left, right = socket.socketpair()
    other_left, other_right = socket.socketpair()
    try:
        with deadline.attempt(0.2) as short:
            short.watch(left)
            with deadline.attempt(60) as long:
                long.watch(other_left)
                started = time.monotonic()
                assert left.recv(10) == b""  # blocked until the watchdog shut it down
                assert time.monotonic() - started < 0.2 + MARGIN_S
                other_right.sendall(b"ok")
                assert other_left.recv(10) == b"ok"  # the other attempt's socket still works
            assert short.expired and not long.expired
            with pytest.raises(deadline.DeadlineExceeded):
                short.remaining_s()
    finally:
        for sock in (left, right, other_left, other_right):
            sock.close()


def test_an_earlier_deadline_wakes_a_watchdog_sleeping_on_a_later_one():
    left, right = socket.socketpair()
    try:
        with deadline.attempt(60):
            time.sleep(0.05)  # the watchdog now sleeps until the 60 s deadline
            with deadline.attempt(0.2) as short:
                short.watch(left)
                started = time.monotonic()
                assert left.recv(10) == b""
                assert time.monotonic() - started < 0.2 + MARGIN_S
    finally:
        left.close()
        right.close()


def _wait_until(condition, limit_s: float = 3.0) -> None:
    end = time.monotonic() + limit_s
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)
