"""The transport (`streaming.transport`), against loopback servers: the response-head limits
(header floods refused as they arrive, header lines `name: value` or refused, Content-Length an
agreed ASCII number or refused), for http and for S3 alike; and its keep-alive pools (a connection
is reused only when its response was read to the end and the server still holds it open)."""
from __future__ import annotations

import dataclasses
import http.client
import io
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.budget import ByteBudget
from streaming.config import PipelineConfig
from streaming.errors import FetchFailed, ObjectNotFound
from streaming.fetch import Fetcher
from streaming.transport import (MAX_CHUNK_LINE_BYTES, MAX_FRAMING_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, MAX_POOLS,
                                 WHOLE_READ_BYTES, ResponseRefused, Tls, Transport, content_length, parse_fields)
from streaming.uris import ObjectRef, parse_uri
from tests.net_support import Reply, ScriptedHttpServer, TrickleServer, fetch_both_ways, http_config

BODY = b"\xff\xd8\xff" + b"k" * 9_000


@pytest.mark.parametrize("scheme", ["http", "s3"])
@pytest.mark.parametrize("head, reason", [
    (b"HTTP/1.1 200 OK\r\n" + b"X-Many: header\r\n" * 10_000, f"more than {MAX_HEADERS} header lines"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000, f"over {MAX_HEAD_BYTES} bytes"),
    (b"HTTP/1.1 200 " + b"O" * 200_000, f"over {MAX_HEAD_BYTES} bytes"),
])
def test_a_flood_of_headers_is_refused_as_it_arrives(scheme, head, reason):
    with TrickleServer(lambda: iter([head]), delay_s=0) as server:
        started = time.monotonic()
        with pytest.raises(FetchFailed, match=reason) as caught:
            fetch_both_ways(server, scheme, http_config(fetch_retries=2, fetch_timeout_s=5.0))
        assert time.monotonic() - started < 5.0  # refused, not waited out
        assert caught.value.code == "fetch_failed" and len(server.requests) == 1  # not retried


@pytest.mark.parametrize("scheme", ["http", "s3"])
@pytest.mark.parametrize("lengths", [["\u00b2"], ["\u0663"], ["-1"], ["1e3"], ["+5"], ["0x5"], [""], ["5, 6"],
                                     ["5", "6"], ["5 5"], ["99999999999999999999999"]])
def test_a_malformed_content_length_is_a_typed_fetch_error(scheme, lengths):
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(f"Content-Length: {v}\r\n".encode() for v in lengths) + b"\r\n"
    with TrickleServer(lambda: iter([head + b"hello"]), delay_s=0) as server:
        with pytest.raises(FetchFailed, match="Content-Length") as caught:
            fetch_both_ways(server, scheme, http_config(fetch_retries=2))
    assert caught.value.code == "fetch_failed" and caught.value.stage == "fetch"
    assert len(server.requests) == 1  # not retried: the server will say the same again


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_a_head_at_the_limits_is_accepted(scheme):
    headers = b"".join(b"X-Amz-Meta-K%d: v\r\n" % i for i in range(MAX_HEADERS - 1))
    head = b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 5\r\n\r\n"
    with TrickleServer(lambda: iter([head + b"hello"]), delay_s=0) as server:
        assert fetch_both_ways(server, scheme, http_config()).data == b"hello"


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_agreeing_content_lengths_are_accepted(scheme):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"
    with TrickleServer(lambda: iter([head + b"hello"]), delay_s=0) as server:
        assert fetch_both_ways(server, scheme, http_config()).data == b"hello"


@pytest.mark.parametrize("values, chunked, expected", [
    ([], False, None), (["0"], False, 0), (["12"], False, 12), (["12, 12", " 12 "], False, 12),
])
def test_content_length_accepts_plain_agreeing_digits(values, chunked, expected):
    assert content_length(values, chunked=chunked) == expected


@pytest.mark.parametrize("values, chunked", [
    (["12"], True), (["1 2"], False), (["12,"], False), (["\u00b2"], False), (["-0"], False), (["12", "13"], False),
])
def test_content_length_refuses_everything_else(values, chunked):
    with pytest.raises(ResponseRefused):
        content_length(values, chunked=chunked)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12) | st.from_regex(r"\A[0-9]{1,4}( ?, ?[0-9]{1,4})*\Z"), max_size=3), st.booleans())
def test_content_length_is_an_agreed_ascii_number_or_refused(values, chunked):
    try:
        length = content_length(values, chunked=chunked)
    except ResponseRefused:
        return
    parts = [p.strip() for v in values for p in v.split(",")]
    assert length is None if not values else (not chunked and {int(p) for p in parts} == {length})
    assert all(p.isascii() and p.isdigit() for p in parts)


@pytest.mark.parametrize("scheme", ["http", "s3"])
@pytest.mark.parametrize("line", [b"No colon here", b"Space Before : colon", b": no name", b"Bad\x00Name: v",
                                  b"X-Nul: a\x00b", b"X-Cr: a\rb", b"Na\xefve: v"])
def test_a_malformed_header_line_is_refused_not_retried(scheme, line):
    head = b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 5\r\n\r\n"
    with TrickleServer(lambda: iter([head + b"hello"]), delay_s=0) as server:
        with pytest.raises(FetchFailed, match="header line") as caught:
            fetch_both_ways(server, scheme, http_config(fetch_retries=2))
    assert caught.value.code == "fetch_failed" and len(server.requests) == 1


@pytest.mark.parametrize("scheme", ["http", "s3"])
@pytest.mark.parametrize("size", [WHOLE_READ_BYTES, WHOLE_READ_BYTES + 1])  # one read; pieces
def test_a_body_is_read_whole_and_one_cut_short_is_a_retryable_failure(scheme, size):
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
    config = http_config(max_object_bytes=2 * WHOLE_READ_BYTES)
    with TrickleServer(lambda: iter([head, body]), delay_s=0) as server:
        assert fetch_both_ways(server, scheme, config).data == body
    with TrickleServer(lambda: iter([head, body[:size // 2]]), delay_s=0) as server:
        with pytest.raises(FetchFailed, match=f"cut short: {size // 2} of {size} bytes .after 2 attempts"):
            fetch_both_ways(server, scheme, dataclasses.replace(config, fetch_retries=1))
    assert len(server.requests) == 2  # retried


def _fields(head: bytes) -> list[tuple[str, str]]:
    return parse_fields(io.BytesIO(head).readline).items()


def test_fields_are_split_trimmed_kept_in_order_and_folded_lines_joined():
    head = b"ETag: \"v1\" \r\nx-amz-meta-a:\tone\r\n  two\r\n\tthree\r\nX-Empty:\r\nx-amz-meta-a: 2\n\r\nbody"
    assert _fields(head) == [("ETag", '"v1"'), ("x-amz-meta-a", "one two three"), ("X-Empty", ""),
                             ("x-amz-meta-a", "2")]
    assert parse_fields(io.BytesIO(head).readline).get_all("X-AMZ-META-A") == ["one two three", "2"]


@pytest.mark.parametrize("head, error", [
    (b" folded: first\r\n\r\n", ResponseRefused),  # nothing to fold onto
    (b"ETag: 1\r\n", http.client.RemoteDisconnected),  # the stream ended before the blank line
    (b"ETag: 1\r\nX-Cut: sho", http.client.RemoteDisconnected),
])
def test_a_head_without_its_end_or_starting_folded_is_refused(head, error):
    with pytest.raises(error):
        parse_fields(io.BytesIO(head).readline)


_NAMES = st.from_regex(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}\Z")
_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                  max_size=30).map(lambda v: v.strip(" \t"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
def test_well_formed_fields_parse_as_http_client_parses_them(fields):
    head = b"".join(f"{name}: {value}\r\n".encode("iso-8859-1") for name, value in fields) + b"\r\n"
    assert _fields(head) == http.client.parse_headers(io.BytesIO(head)).items() == list(fields)


def _pools(fetcher: Fetcher) -> list:
    return list(fetcher._transport._pools.values())


def test_one_keep_alive_connection_serves_plain_chunked_and_not_modified_answers():
    routes = {"/plain.jpg": Reply(200, BODY, {"ETag": '"v1"'}), "/chunked.jpg": Reply(200, BODY, chunked=True),
              "/same.jpg": lambda h: Reply(304) if h.headers.get("If-None-Match") == '"v1"' else Reply(200, BODY)}
    config = http_config()
    with ScriptedHttpServer(routes) as web, Fetcher(config) as fetcher:
        for _ in range(3):
            assert fetcher.fetch(parse_uri(web.url("/plain.jpg"), config)).data == BODY
            assert fetcher.fetch(parse_uri(web.url("/chunked.jpg"), config)).data == BODY
            assert fetcher.fetch(parse_uri(web.url("/same.jpg"), config), if_none_match="v1").not_modified
        [pool] = _pools(fetcher)
    assert (pool.connections, pool.requests) == (1, 9) and len(web.requests) == 9


def test_interim_answers_are_skipped_so_the_next_request_on_the_connection_gets_its_own_body():
    # 103 Early Hints (RFC 8297) before the answer: taken as the answer, the real 200 would be left
    # on the pooled connection, where the next request (for another object) would read it
    def hints_then(body, etag):
        def route(handler):
            for status in (100, 103):
                handler.send_response_only(status)
                handler.send_header("Link", "</style.css>; rel=preload")
                handler.end_headers()
            return Reply(200, body, {"ETag": etag})
        return route

    config = http_config()
    routes = {"/a.jpg": hints_then(b"AAAAA", '"A"'), "/b.jpg": Reply(200, b"BBBBB", {"ETag": '"B"'})}
    with ScriptedHttpServer(routes) as web, Fetcher(config) as fetcher:
        a = fetcher.fetch(parse_uri(web.url("/a.jpg"), config))
        b = fetcher.fetch(parse_uri(web.url("/b.jpg"), config))
        [pool] = _pools(fetcher)
    assert (a.data, a.etag, b.data, b.etag) == (b"AAAAA", "A", b"BBBBB", "B")
    assert (pool.connections, pool.requests) == (1, 2)


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_a_protocol_switch_nobody_asked_for_is_refused(scheme):
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    with TrickleServer(lambda: iter([head + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"]),
                       delay_s=0) as server:
        with pytest.raises(ResponseRefused, match="101"):
            fetch_both_ways(server, scheme, http_config(fetch_retries=2))
    assert len(server.requests) == 1


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("scheme", ["http", "s3"])
@pytest.mark.parametrize("body, reason", [
    (b"5;" + b"x" * MAX_CHUNK_LINE_BYTES + b"\r\nhello\r\n0\r\n\r\n", "chunk-size line over"),
    (b"5\r\nhello\r\n0\r\nX-Trailer: " + b"t" * MAX_CHUNK_LINE_BYTES + b"\r\n\r\n", "trailer line over"),
    (b"5\r\nhello\r\n0\r\n" + (b"X-T: " + b"t" * 1000 + b"\r\n") * (MAX_FRAMING_BYTES // 1000 + 1),
     "bytes of chunk-size and trailer lines"),
    ((b"1;" + b"e" * 100 + b"\r\nA\r\n") * (MAX_FRAMING_BYTES // 100 + 1) + b"0\r\n\r\n",
     "bytes of chunk-size and trailer lines"),  # 10 KB of data in 1 MiB of framing
    (b"-5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
    (b"0x5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
])
def test_chunked_framing_is_bounded_and_well_formed_or_refused(scheme, body, reason):
    # max_object_bytes counts a chunked body's data only: its framing has limits of its own
    with TrickleServer(lambda: iter([CHUNKED + body]), delay_s=0) as server:
        started = time.monotonic()
        with pytest.raises(ResponseRefused, match=reason):
            fetch_both_ways(server, scheme, http_config(fetch_retries=2, fetch_timeout_s=10.0))
        assert time.monotonic() - started < 10.0 and len(server.requests) == 1


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_chunks_with_extensions_and_trailers_within_the_limits_are_read(scheme):
    body = b"5;name=value\r\nhello\r\n0000000000000006\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"  # zero-padded
    with TrickleServer(lambda: iter([CHUNKED + body]), delay_s=0) as server:
        assert fetch_both_ways(server, scheme, http_config()).data == b"hello world"


def test_a_connection_whose_answer_was_not_read_to_the_end_is_not_reused():
    config = http_config()
    with ScriptedHttpServer({"/x.jpg": Reply(200, BODY)}) as web, Fetcher(config) as fetcher:
        with pytest.raises(ObjectNotFound):  # its body ("no") is left unread
            fetcher.fetch(parse_uri(web.url("/missing.jpg"), config))
        assert fetcher.fetch(parse_uri(web.url("/x.jpg"), config)).data == BODY
        assert fetcher.fetch(parse_uri(web.url("/x.jpg"), config)).data == BODY
        [pool] = _pools(fetcher)
    assert (pool.connections, pool.requests) == (2, 3)


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_a_pooled_connection_the_server_closed_meanwhile_is_replaced_not_failed(scheme):
    """The server answers as if keeping the connection alive, then closes it: the next fetch
    sees that before sending (no retries here) and opens a new one."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
    with TrickleServer(lambda: iter([reply]), delay_s=0) as server:
        config = http_config(fetch_retries=0)
        if scheme == "s3":
            config = PipelineConfig(**{**config.__dict__, "s3_endpoint": server.endpoint})
            ref = ObjectRef("s3", "bucket", "key.jpg")
        else:
            ref = parse_uri(server.url("/key.jpg"), config)
        with Fetcher(config) as fetcher:
            assert fetcher.fetch(ref).data == BODY
            deadline = time.monotonic() + 5
            while server.open_connections and time.monotonic() < deadline:
                time.sleep(0.01)
            assert fetcher.fetch(ref).data == BODY
            [pool] = _pools(fetcher)
    assert (pool.connections, pool.requests) == (2, 2) and len(server.requests) == 2


def test_pools_are_bounded_the_least_recently_used_closed():
    transport = Transport(4, ByteBudget(1 << 20))
    first = transport.pool("http", "10.0.0.1", 80)
    others = []
    for i in range(MAX_POOLS):
        others.append(transport.pool("http", f"10.0.1.{i}", 80))
        assert transport.pool("http", "10.0.0.1", 80) is first  # used again: stays
    assert others[0]._closed and not any(p._closed for p in others[1:])  # the least recently used
    assert len(transport._pools) == MAX_POOLS and first in transport._pools.values() and not first._closed
    assert transport.pool("http", "10.0.1.0", 80) is not others[0]
    with pytest.raises(ValueError, match="https"):
        transport.pool("https", "10.0.0.1", 443)
    with pytest.raises(ValueError, match="https"):
        transport.pool("http", "10.0.0.1", 80, Tls("x.test"))
