"""The response-head limits (`streaming.transport`): header floods refused as they arrive,
Content-Length an agreed ASCII number or refused, against raw loopback servers: for http and for
S3 alike."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.errors import FetchFailed
from streaming.transport import MAX_HEAD_BYTES, MAX_HEADERS, ResponseRefused, content_length
from tests.net_support import TrickleServer, fetch_both_ways, http_config


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
