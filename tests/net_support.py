"""Loopback servers for the SSRF and http(s) fetch tests: a listener that only counts the
connections it accepts, a small scripted HTTP server, and a raw one that trickles (or floods)
whatever bytes a test gives it, a fetch from one (`fetch_both_ways`), and free ports. All bind to a loopback address given by the test
(127.0.0.x), on a free port."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable, Iterator

from streaming.config import PipelineConfig, Secret
from streaming.fetch import Fetcher
from streaming.uris import ObjectRef, parse_uri

TLS_DIR = Path(__file__).resolve().parent / "tls"  # a test CA and a certificate for images.test (not secrets)
FETCH_TIMEOUT_S = 0.5  # http_config's fetch deadline: short, these servers trickle or flood


class _LoopbackServer:
    """A TCP listener on loopback whose accept loop runs on a thread until `close()`; each
    accepted connection goes to `_handle`."""

    def __init__(self, host: str, port: int = 0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.host, self.port = host, self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CountingListener(_LoopbackServer):
    """Accepts TCP connections on `host`, counts them and closes each at once."""

    def __init__(self, host: str = "127.0.0.2", port: int = 0):
        self.count = 0
        super().__init__(host, port)

    def _handle(self, conn: socket.socket) -> None:
        self.count += 1
        conn.close()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # no Content-Length: the body streams in chunks


Route = Callable[[BaseHTTPRequestHandler], Reply]


class ScriptedHttpServer:
    """Answers GET paths from `routes` (path -> Reply or function of the handler); 404 else.
    Records every request's path and headers. With `tls_cert`, speaks https."""

    def __init__(self, routes: dict[str, Reply | Route], host: str = "127.0.0.1", tls_cert: Path | None = None):
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.requests.append((self.path, dict(self.headers.items())))
                route = server.routes.get(self.path.split("?")[0])
                reply = Reply(404, b"no") if route is None else route(self) if callable(route) else route
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if reply.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(reply.body), 4096):
                        piece = reply.body[start:start + 4096]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    if "Content-Length" not in reply.headers:
                        self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    try:
                        self.wfile.write(reply.body)
                    except OSError:
                        pass  # the client stopped reading (a size limit)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        if tls_cert is not None:  # key and certificate in one PEM file
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ScriptedHttpServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", {"Location": location})


class TrickleServer(_LoopbackServer):
    """A raw HTTP server on loopback for hostile-server tests: for every request (or, without
    `read_request`, every connection, at once: a TLS server that never finishes its hello) it
    writes the pieces `pieces()` yields, sleeping `delay_s` after each, then closes the connection. An
    endless generator trickles until the client hangs up or the server is closed. Records the
    request heads, and how many connections are still open (the client's side not yet closed)."""

    def __init__(self, pieces: Callable[[], Iterable[bytes]], delay_s: float = 0.0, host: str = "127.0.0.1",
                 read_request: bool = True):
        self.pieces, self.delay_s, self.read_request = pieces, delay_s, read_request
        self.requests: list[bytes] = []
        self.open_connections = 0
        self._lock = threading.Lock()
        super().__init__(host)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _handle(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.open_connections += 1
        try:
            conn.settimeout(5)
            head = b"" if self.read_request else b"(not read)"
            while self.read_request and b"\r\n\r\n" not in head and len(head) < 65536:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            self.requests.append(head)
            for piece in self.pieces():
                if self._stop.is_set():
                    return
                conn.sendall(piece)
                if self.delay_s:
                    time.sleep(self.delay_s)
        except OSError:
            pass  # the client hung up: what these tests want
        finally:
            conn.close()
            with self._lock:
                self.open_connections -= 1


def byte_by_byte(*parts: bytes, forever: bytes = b"") -> Iterator[bytes]:
    """`parts` one byte at a time, then `forever` one byte at a time, for ever (if given)."""
    for part in parts:
        for i in range(len(part)):
            yield part[i:i + 1]
    while forever:
        for i in range(len(forever)):
            yield forever[i:i + 1]


def http_config(**overrides) -> PipelineConfig:
    """A config that fetches http and S3 from loopback servers, no retries, a FETCH_TIMEOUT_S deadline."""
    values = dict(allowed_schemes=("s3", "http"), allowed_hosts=("*:*",), http_trusted_networks=("127.0.0.1/32",),
                  fetch_retries=0, fetch_timeout_s=FETCH_TIMEOUT_S, max_object_bytes=2_000_000,
                  s3_access_key=Secret("AKIATESTACCESSKEY123"), s3_secret_key=Secret("s3cr3t"))
    return PipelineConfig(**{**values, **overrides})


def fetch_both_ways(server: TrickleServer, scheme: str, config: PipelineConfig, path: str = "/bucket/key.jpg"):
    """Fetch `path` from `server` as an http URI or as S3 (the server as the S3 endpoint)."""
    if scheme == "s3":
        config = PipelineConfig(**{**config.__dict__, "s3_endpoint": server.endpoint})
        bucket, _, key = path[1:].partition("/")
        ref = ObjectRef("s3", bucket, key)
    else:
        ref = parse_uri(server.url(path), config)
    with Fetcher(config, sleep=lambda s: None) as fetcher:
        return fetcher.fetch(ref)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (bound together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def free_port() -> int:
    """A loopback port nobody listens on (a moment ago)."""
    return free_ports(1)[0]
