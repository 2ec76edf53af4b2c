"""The one HTTP transport of S3 and http(s) fetches: urllib3 pools whose connections put their
sockets under the current attempt's deadline (`streaming.deadline`), a bounded response head,
a strict Content-Length, and the one size- and deadline-limited body reader (also used for
files).

* Deadline: every new socket and every reused one (before the request is sent) is watched;
  connect and read timeouts are set to the time the attempt has left (which also bounds a TLS
  handshake as a whole).
* Head: at most `MAX_HEADERS` header lines and `MAX_HEAD_BYTES` for status line + headers;
  more is refused as it arrives (`ResponseRefused`), never buffered.
* Content-Length: ASCII digits only; several values (one header listing them, or repeated
  headers) must agree; with chunked transfer coding it must be absent. Anything else (``²``,
  ``-1``, ``1e3``, ``5, 6``) is `ResponseRefused` (fetch_failed, not retried).
* Errors: urllib3's are translated in `transport_errors` only, into `Transient` (retried)
  without urllib3's text (it names the pool's IP address).
"""
from __future__ import annotations

import http.client
import re
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import urllib3
import urllib3.exceptions as ue
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from streaming import deadline
from streaming.deadline import Attempt, Transient
from streaming.errors import FetchFailed, ObjectTooLarge, PipelineError

CHUNK_BYTES = 256 * 1024  # bodies are read in pieces of at most this much
MAX_HEADERS = 99  # header lines in a response head: the most http.client (so boto3 too) ever took
MAX_HEAD_BYTES = 32 * 1024  # status line and headers together
USER_AGENT = "imgstream/0.1"
_DIGITS = re.compile(r"[0-9]{1,18}")


class ResponseRefused(FetchFailed):
    """The response head is malformed or too large (not retried)."""


# -- the response head -------------------------------------------------------------------
class _HeadBudget:
    """Wraps the response file while its head is parsed: counts lines and bytes."""

    def __init__(self, raw: Any):
        self._raw, self._bytes, self._lines = raw, 0, 0

    def readline(self, limit: int = -1) -> bytes:
        room = MAX_HEAD_BYTES - self._bytes
        line = self._raw.readline(room + 1 if limit < 0 else min(limit, room + 1))
        self._bytes += len(line)
        self._lines += line not in (b"\r\n", b"\n", b"")
        if self._bytes > MAX_HEAD_BYTES:
            raise ResponseRefused(f"response head is over {MAX_HEAD_BYTES} bytes")
        if self._lines > MAX_HEADERS + 1:  # + the status line
            raise ResponseRefused(f"response has more than {MAX_HEADERS} header lines")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _BoundedResponse(http.client.HTTPResponse):
    def begin(self) -> None:
        raw = self.fp
        self.fp = _HeadBudget(raw)
        try:
            super().begin()
        finally:
            if self.fp is not None:
                self.fp = raw
        content_length(self.msg.get_all("Content-Length") or [], chunked=bool(self.chunked))


def content_length(values: list[str], *, chunked: bool = False) -> int | None:
    """The one length all Content-Length values agree on; `ResponseRefused` otherwise."""
    if not values:
        return None
    if chunked:
        raise ResponseRefused("response has both Content-Length and chunked transfer coding")
    parts = [part.strip() for value in values for part in str(value).split(",")]
    if not all(_DIGITS.fullmatch(part) for part in parts):
        raise ResponseRefused("response has a malformed Content-Length")
    lengths = {int(part) for part in parts}
    if len(lengths) != 1:
        raise ResponseRefused("response has conflicting Content-Length values")
    return lengths.pop()


# -- connections under the deadline -------------------------------------------------------
class _Watched:
    """Mixed into urllib3's connections: every socket they use is under the attempt's deadline."""

    response_class = _BoundedResponse

    def _new_conn(self) -> Any:
        sock = super()._new_conn()  # type: ignore[misc]
        # TLS wrapping detaches this socket object, so the watchdog cannot cut a handshake; CPython
        # bounds the whole handshake by the socket timeout instead, which is the time left
        deadline.watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # type: ignore[attr-defined]  # a pooled connection, reused
            deadline.watch(self.sock)  # type: ignore[attr-defined]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class Transport:
    """urllib3 pools, built lazily; safe to share between threads."""

    def __init__(self, max_connections: int):
        self._max = max_connections
        self._lock = threading.Lock()
        self._manager: urllib3.PoolManager | None = None

    def close(self) -> None:
        with self._lock:
            manager, self._manager = self._manager, None
        if manager is not None:
            manager.clear()

    def pool(self, scheme: str, host: str, port: int, **pool_kwargs: Any) -> HTTPConnectionPool:
        with self._lock:
            if self._manager is None:
                self._manager = urllib3.PoolManager(num_pools=64, maxsize=self._max, block=False, retries=False)
                self._manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
            manager = self._manager
        return manager.connection_from_host(host, port=port, scheme=scheme, pool_kwargs=pool_kwargs or None)

    @staticmethod
    def get(pool: HTTPConnectionPool, target: str, headers: dict[str, str], attempt: Attempt) -> Any:
        """Send one GET; the response's body is left to read (`read_body`). Raises urllib3's errors."""
        left = attempt.remaining_s()
        return pool.urlopen("GET", target, headers=headers, redirect=False, retries=False,
                            preload_content=False, decode_content=False, assert_same_host=False,
                            timeout=urllib3.Timeout(connect=left, read=left))


def read_body(response: Any, limit: int, attempt: Attempt) -> bytes:
    """The whole body, refused as soon as it is over `limit` (Content-Length checked first)."""
    length = content_length(response.headers.getlist("Content-Length"), chunked=response.chunked)
    if length is not None and length > limit:
        raise ObjectTooLarge(f"object is {length} bytes, limit {limit}")
    data = read_limited(lambda n: response.read1(n, decode_content=False), limit, attempt)
    if length is not None and len(data) != length:
        raise Transient(f"body cut short: {len(data)} of {length} bytes")
    return data


def read_limited(read: Callable[[int], bytes], limit: int, attempt: Attempt, *, truncate: bool = False) -> bytes:
    """Read until EOF; more than `limit` bytes is `ObjectTooLarge` (or, with `truncate`, the
    first `limit` bytes). The deadline is checked after every piece."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = read(min(CHUNK_BYTES, limit - total + 1))
        attempt.remaining_s()
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            if truncate:
                chunks.append(chunk[:len(chunk) - (total - limit)])
                return b"".join(chunks)
            raise ObjectTooLarge(f"object is over the limit of {limit} bytes")
        chunks.append(chunk)


@contextmanager
def transport_errors(where: str) -> Iterator[None]:
    """The one place urllib3 errors become the project's errors (without urllib3's text)."""
    try:
        yield
    except PipelineError:
        raise
    except (ue.HTTPError, http.client.HTTPException, OSError) as exc:
        raise _translate(exc, where) from None


def _translate(exc: Exception, where: str) -> PipelineError:
    attempt = deadline.current()
    if attempt is not None and attempt.expired:  # the watchdog cut the socket: a timeout
        return attempt.exceeded()
    if isinstance(exc, ue.SSLError):
        return FetchFailed(f"TLS handshake with {where} failed (certificate not valid for the host?)")
    if isinstance(exc, ue.ConnectTimeoutError):  # NewConnectionError is a kind of it
        return Transient(f"connecting to {where} {'failed' if isinstance(exc, ue.NewConnectionError) else 'timed out'}")
    if isinstance(exc, ue.ReadTimeoutError):
        return Transient(f"reading from {where} timed out")
    return Transient(f"HTTP transfer from {where} failed ({type(exc).__name__})")  # resets, cut bodies
