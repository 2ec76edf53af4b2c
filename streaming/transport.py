"""The one HTTP transport of S3 and http(s) fetches: pools of keep-alive `http.client`
connections whose sockets are under the current attempt's deadline (`streaming.deadline`), a
bounded response head, a strict Content-Length, and the one size- and deadline-limited body
reader (also used for files).

* Why not urllib3: its request/response layers (Retry and Timeout objects, header maps, pool
  queues, the header-parsing check) cost ~0.5 ms of CPU per small GET on top of http.client's
  own ~0.4 ms; this transport keeps what the fetches use of it, in ~100 lines.
* Pools: one per (scheme, host, port, TLS name), at most `MAX_POOLS` (the least recently used
  is closed), each keeping at most `max_connections` idle connections (more may be open at
  once; the extra ones are closed when done). A pooled connection is reused only when its
  response was read to the end, the server did not ask to close, and it has not been closed
  meanwhile (checked before reuse). No proxy from the environment, no cookies.
* TLS: verified (`CERT_REQUIRED`, the name checked) against `ca_certs` or the default store
  (which honours ``SSL_CERT_FILE``); the name given for SNI and the check may differ from the
  address connected to (`http_fetch` connects to the address it checked). The context is made
  per connection, so a changed trust store applies to the next connection.
* Deadline: every new socket (before and after the TLS handshake) and every reused one is
  watched; the socket timeout is the time the attempt has left (which also bounds a TLS
  handshake as a whole).
* Head: at most `MAX_HEADERS` header lines and `MAX_HEAD_BYTES` for status line + headers;
  more is refused as it arrives (`ResponseRefused`), never buffered. Header lines are parsed by
  `parse_fields` (RFC 9112 section 5), not by http.client's `email` parser (0.043 ms of a small S3
  GET's 0.27 ms of CPU): a line that is not `token ":" value` is refused.
* Interim answers (1xx: 100 Continue, 103 Early Hints) are skipped, their fields counted in the
  head; 101 (a protocol switch nobody asked for) is refused. Were a 1xx taken as the answer, the
  real one would be left on the pooled connection, the next request's.
* Chunked bodies: a chunk-size line is hex digits (and extensions) in at most `MAX_CHUNK_LINE_BYTES`;
  chunk-size and trailer lines together at most `MAX_FRAMING_BYTES` per body (the body limit
  counts only data bytes, so framing needs its own). Anything else is `ResponseRefused`.
* Content-Length: ASCII digits only; several values (one header listing them, or repeated
  headers) must agree; with chunked transfer coding it must be absent. Anything else (``²``,
  ``-1``, ``1e3``, ``5, 6``) is `ResponseRefused` (fetch_failed, not retried).
* Errors: socket and http.client errors are translated in `transport_errors` only, into
  `Transient` (retried) or `FetchFailed` (a TLS failure), naming the host, never the address.
"""
from __future__ import annotations

import collections
import http.client
import re
import select
import socket
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from streaming import deadline
from streaming.budget import ByteBudget
from streaming.deadline import Attempt, Transient
from streaming.errors import FetchFailed, ObjectTooLarge, PipelineError

CHUNK_BYTES = 256 * 1024  # bodies are read in pieces of at most this much
# A body whose Content-Length is at most this is read in one call into a buffer of that size (no
# pieces to join: one copy fewer); its buffer is allocated before the bytes arrive, so this, not
# max_object_bytes, bounds what a server's word alone makes a fetch allocate.
WHOLE_READ_BYTES = 4 * 1024 * 1024
MAX_HEADERS = 99  # header lines in a response head: the most http.client (so boto3 too) ever took
MAX_HEAD_BYTES = 32 * 1024  # status line and headers together
MAX_CHUNK_LINE_BYTES = 1024  # one chunk-size line with its extensions, or one trailer line
MAX_FRAMING_BYTES = 1024 * 1024  # chunk-size and trailer lines of one body together
MAX_POOLS = 64  # hosts with pooled connections at once (hostile events may name many)
USER_AGENT = "imgstream/0.1"
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"0*([0-9A-Fa-f]{1,15})")  # a chunk size: leading zeros, then at most 15 digits
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a field name (RFC 9110 section 5.1)
_OWS = " \t"  # optional whitespace around a field value


# -- the response head -------------------------------------------------------------------
class ResponseRefused(FetchFailed):
    """The response head is malformed or too large (not retried)."""


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


def parse_fields(readline: Callable[[], bytes]) -> http.client.HTTPMessage:
    """The header fields up to the blank line that ends a head, as http.client's `HTTPMessage`.

    Each line is `name: value` with a token for name (no space before the colon) and a value of
    no NUL or bare CR; a line folded onto the one before (obs-fold) joins it with a space, as RFC
    9112 asks of a user agent. Anything else is `ResponseRefused`; a head cut short by the end of
    the stream is `RemoteDisconnected` (retried)."""
    fields: list[list[str]] = []
    while True:
        line = readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line.endswith(b"\n"):
            raise http.client.RemoteDisconnected("the response head was cut short")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if "\0" in text or "\r" in text:
            raise ResponseRefused("response has a control character in a header line")
        if text[:1] in (" ", "\t"):
            if not fields:
                raise ResponseRefused("response head starts with a folded line")
            fields[-1][1] = " ".join(part for part in (fields[-1][1], text.strip(_OWS)) if part)
            continue
        name, colon, value = text.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ResponseRefused("response has a malformed header line")
        fields.append([name, value.strip(_OWS)])
    message = http.client.HTTPMessage()
    for name, value in fields:
        message[name] = value
    return message


class _BoundedResponse(http.client.HTTPResponse):
    def begin(self) -> None:
        """CPython 3.11's `HTTPResponse.begin`, with the head read under `_HeadBudget` and its
        fields parsed by `parse_fields`."""
        if self.headers is not None:
            return
        raw = self.fp
        self.fp = budget = _HeadBudget(raw)
        try:
            version, status, reason = self._read_status()
            while 100 <= status < 200 and status != http.client.SWITCHING_PROTOCOLS:
                parse_fields(budget.readline)  # an interim answer's fields: skipped, still counted
                version, status, reason = self._read_status()
            self.headers = self.msg = parse_fields(budget.readline)
        finally:
            if self.fp is not None:
                self.fp = raw
        if status == http.client.SWITCHING_PROTOCOLS:
            raise ResponseRefused("response switches protocols (101), which the request did not ask for")
        self._framing = 0  # chunk-size and trailer bytes read so far
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        transfer = self.headers.get("Transfer-Encoding")
        self.chunked = bool(transfer) and transfer.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = content_length(self.headers.get_all("Content-Length") or [], chunked=self.chunked)
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or status < 200 or self._method == "HEAD":
            self.length = 0  # no body (_read_status took only 100-999)
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # no length, no chunks: the body ends when the connection does

    def _framing_line(self, what: str) -> bytes:
        line = self.fp.readline(MAX_CHUNK_LINE_BYTES + 1)
        self._framing += len(line)
        if len(line) > MAX_CHUNK_LINE_BYTES:
            raise ResponseRefused(f"response has a {what} line over {MAX_CHUNK_LINE_BYTES} bytes")
        if self._framing > MAX_FRAMING_BYTES:
            raise ResponseRefused(f"response has over {MAX_FRAMING_BYTES} bytes of chunk-size and trailer lines")
        return line

    def _read_next_chunk_size(self) -> int:
        """As http.client's, with the line bounded and the size hex digits only (no sign)."""
        line = self._framing_line("chunk-size")
        if not line:
            raise ValueError("end of stream before a chunk size")  # http.client: IncompleteRead (retried)
        size = line.split(b";", 1)[0].strip(b" \t\r\n")
        digits = _HEX.fullmatch(size)
        if digits is None:
            raise ResponseRefused("response has a malformed chunk size")
        return int(digits.group(1), 16)

    def _read_and_discard_trailer(self) -> None:
        while self._framing_line("trailer") not in (b"\r\n", b"\n", b""):
            pass


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
class ConnectFailed(OSError):
    """No connection to the address: refused, unreachable or timed out (the next address may do)."""

    def __init__(self, cause: OSError):
        super().__init__(cause.errno, f"connect failed ({type(cause).__name__})")
        self.timed_out = isinstance(cause, TimeoutError)


class _Connection(http.client.HTTPConnection):
    response_class = _BoundedResponse

    def connect(self) -> None:
        try:
            super().connect()  # create_connection, TCP_NODELAY
        except OSError as exc:
            raise ConnectFailed(exc) from None
        deadline.watch(self.sock)


class _TlsConnection(_Connection):
    def __init__(self, host: str, port: int, timeout: float, tls: "Tls"):
        super().__init__(host, port, timeout)
        self._tls = tls

    def connect(self) -> None:
        super().connect()
        # wrapping detaches the watched socket, so the watchdog cannot cut a handshake; CPython
        # bounds the whole handshake by the socket timeout instead: the time left after connecting
        attempt = deadline.current()
        self.sock.settimeout(attempt.remaining_s() if attempt is not None else self.timeout)
        self.sock = self._tls.context().wrap_socket(self.sock, server_hostname=self._tls.server_hostname)
        deadline.watch(self.sock)


@dataclass(frozen=True)
class Tls:
    """How a pool's connections are verified: against `ca_certs` (a file) or the default store."""

    server_hostname: str
    ca_certs: str | None = None

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_certs)  # CERT_REQUIRED, check_hostname


class Pool:
    """Idle keep-alive connections to one host; safe to share between threads."""

    def __init__(self, host: str, port: int, max_idle: int, tls: Tls | None):
        self.host, self.port, self._max_idle, self._tls = host, port, max_idle, tls  # https when tls
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self.requests = self.connections = 0  # sent through it, and made by it

    def take(self, timeout_s: float) -> _Connection:
        """An idle connection still open (its socket under the deadline), else a new one (not
        connected yet: `request` connects it)."""
        conn = self._reuse(timeout_s)
        with self._lock:
            self.requests += 1
            self.connections += conn is None
        if conn is not None:
            return conn
        if self._tls is not None:
            return _TlsConnection(self.host, self.port, timeout_s, self._tls)
        return _Connection(self.host, self.port, timeout_s)

    def _reuse(self, timeout_s: float) -> _Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if _still_open(conn.sock):
                conn.sock.settimeout(timeout_s)
                deadline.watch(conn.sock)
                return conn
            conn.close()

    def give_back(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _still_open(sock: socket.socket | None) -> bool:
    """False when an idle keep-alive socket is closed, or readable (EOF, or bytes nobody asked for)."""
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


class Response:
    """An answer whose body is still to read (`read_body`); `close()` pools its connection when
    the body was read to the end and the server keeps it open, else closes it."""

    def __init__(self, pool: Pool, conn: _Connection, raw: http.client.HTTPResponse):
        self._pool, self._conn, self._raw = pool, conn, raw
        self.status: int = raw.status
        self.headers: http.client.HTTPMessage = raw.msg
        self.length: int | None = raw.length  # Content-Length as `begin` checked it (None: chunked or none)

    def read1(self, n: int) -> bytes:
        return self._raw.read1(n)

    def read(self, n: int) -> bytes:
        """Up to `n` bytes of the body in one buffer, read straight into it (fewer if it ends)."""
        return self._raw.read(n)

    def close(self) -> None:
        raw = self._raw
        if raw.length == 0 and not raw.chunked and not raw.isclosed():
            raw.read()  # the body was read to its length (or a 304 has none): marks the response done
        reusable = raw.isclosed() and not raw.will_close and self._conn.sock is not None
        raw.close()
        if reusable:
            self._pool.give_back(self._conn)
        else:
            self._conn.close()


class Transport:
    """Connection pools, built lazily, and the budget the bodies read over them are paid from;
    safe to share between threads."""

    def __init__(self, max_connections: int, budget: ByteBudget):
        self._max = max_connections
        self.budget = budget
        self._lock = threading.Lock()
        self._pools: collections.OrderedDict[tuple, Pool] = collections.OrderedDict()

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), collections.OrderedDict()
        for pool in pools:
            pool.close()

    def pool(self, scheme: str, host: str, port: int, tls: Tls | None = None) -> Pool:
        """The pool for `host` (a name or an address); https needs `tls`."""
        if (scheme == "https") != (tls is not None):
            raise ValueError("https pools, and only they, take a Tls")
        key = (scheme, host, port, tls)
        evicted = None
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = Pool(host, port, self._max, tls)
                if len(self._pools) > MAX_POOLS:
                    _, evicted = self._pools.popitem(last=False)
            else:
                self._pools.move_to_end(key)
        if evicted is not None:
            evicted.close()
        return pool

    @staticmethod
    def get(pool: Pool, target: str, headers: dict[str, str], attempt: Attempt) -> Response:
        """Send one GET; the response's body is left to read (`read_body`). Raises OSError
        (`ConnectFailed` when no connection was made), http.client's errors, `ResponseRefused`."""
        conn = pool.take(attempt.remaining_s())
        try:
            conn.request("GET", target, headers=headers)
            return Response(pool, conn, conn.getresponse())
        except BaseException:
            conn.close()
            raise


def read_body(response: Response, limit: int, attempt: Attempt, budget: ByteBudget) -> bytes:
    """The whole body, refused as soon as it is over `limit` (Content-Length checked first), paid
    for from `budget` before it is read: its length when read in one call, twice that (the pieces
    and their join) or twice `limit` (no length given) when read in pieces."""
    length = response.length  # not read yet: the Content-Length `begin` already checked
    if length is not None and length > limit:
        raise ObjectTooLarge(f"object is {length} bytes, limit {limit}")
    whole = length is not None and length <= WHOLE_READ_BYTES

    def read() -> bytes:
        if whole:
            data = response.read(length)  # one read into one buffer (the deadline's watchdog bounds it)
            attempt.remaining_s()
        else:
            data = read_limited(response.read1, limit, attempt)
        if length is not None and len(data) != length:
            raise Transient(f"body cut short: {len(data)} of {length} bytes")
        return data

    return budget.read(read, length if whole else 2 * (limit if length is None else length), attempt)


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
    """The one place socket, TLS and http.client errors become the project's errors (naming
    `where`, never the address connected to)."""
    try:
        yield
    except PipelineError:
        raise
    except (http.client.HTTPException, OSError) as exc:
        raise _translate(exc, where) from None


def _translate(exc: Exception, where: str) -> PipelineError:
    attempt = deadline.current()
    if attempt is not None and attempt.expired:  # the watchdog cut the socket: a timeout
        return attempt.exceeded()
    if isinstance(exc, ssl.SSLError):  # a certificate refused, or not TLS at all
        return FetchFailed(f"TLS handshake with {where} failed (certificate not valid for the host?)")
    if isinstance(exc, ConnectFailed):
        return Transient(f"connecting to {where} {'timed out' if exc.timed_out else 'failed'}")
    if isinstance(exc, TimeoutError):
        return Transient(f"reading from {where} timed out")
    return Transient(f"HTTP transfer from {where} failed ({type(exc).__name__})")  # resets, cut bodies
