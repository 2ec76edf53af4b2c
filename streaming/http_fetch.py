"""One http(s) GET attempt for `Fetcher`, with the SSRF guard applied to every hop.

For each hop: the host is resolved once (`netpolicy.resolve_checked`: refused if any address
is loopback/private/link-local/... and not trusted), then the connection goes to one of
those checked addresses (the pool is keyed by IP; the Host header, TLS SNI and certificate
check use the name), so a second DNS answer can never be what we connect to. Redirects
(301/302/303/307/308) are not followed by urllib3 but here, each Location checked by the URI
policy again (`uris.redirect_target`), at most `max_redirects` of them. No proxy from the
environment is used, no cookies are kept, no credentials are sent.

Limits: Content-Length above `max_object_bytes` is refused before reading, and the body is
counted while it streams; `fetch_timeout_s` bounds connect, each read, and the whole attempt
(all hops). The body is taken as sent (``Accept-Encoding: identity``, nothing decompressed,
so no gzip bomb).

`HttpTransient` marks failures worth another attempt (connection failures, timeouts, 429,
5xx); `Fetcher` retries those. urllib3's exceptions are translated in `_http_errors` only,
and their text (which names the pool's IP address) never reaches a message.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from streaming import netpolicy
from streaming.config import PipelineConfig
from streaming.errors import (AccessDenied, FetchFailed, ObjectNotFound, ObjectTooLarge,
                              PipelineError, TooManyRedirects)
from streaming.uris import ObjectRef, redirect_target, trusted_networks

CHUNK_BYTES = 256 * 1024
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "imgstream/0.1"


class HttpTransient(FetchFailed):
    """An http(s) failure worth another attempt; `Fetcher`'s retry loop catches it."""


@dataclass(frozen=True)
class HttpResult:
    data: bytes
    etag: str | None
    not_modified: bool = False


class HttpGetter:
    """Builds urllib3 pools lazily; safe to share between threads."""

    def __init__(self, config: PipelineConfig, resolver: netpolicy.Resolver | None = None):
        self._config = config
        self._resolver = resolver
        self._lock = threading.Lock()
        self._manager: Any = None

    def close(self) -> None:
        with self._lock:
            manager, self._manager = self._manager, None
        if manager is not None:
            manager.clear()

    def get(self, ref: ObjectRef, if_none_match: str | None = None) -> HttpResult:
        """Follow up to `max_redirects` checked redirects from `ref`; raises `PipelineError`s."""
        config = self._config
        deadline = time.monotonic() + config.fetch_timeout_s
        current = ref
        for _hop in range(config.max_redirects + 1):
            outcome = self._get_once(current, if_none_match, deadline)
            if isinstance(outcome, HttpResult):
                return outcome
            current = redirect_target(outcome, current, config)
        raise TooManyRedirects(f"more than max_redirects={config.max_redirects} redirects")

    # -- one hop -------------------------------------------------------------------------
    def _get_once(self, ref: ObjectRef, if_none_match: str | None, deadline: float) -> HttpResult | str:
        """The result, or the Location of a redirect."""
        import urllib3

        authority = netpolicy.parse_authority(ref.bucket, ref.scheme)
        addresses = netpolicy.resolve_checked(authority, trusted_networks(self._config), self._resolver)
        headers = {"Host": ref.bucket, "User-Agent": USER_AGENT, "Accept": "image/*",
                   "Accept-Encoding": "identity"}
        if if_none_match:
            headers["If-None-Match"] = if_none_match if if_none_match.startswith("W/") else f'"{if_none_match}"'
        timeout = urllib3.Timeout(connect=self._config.fetch_timeout_s, read=self._config.fetch_timeout_s)
        where = f"{ref.scheme}://{ref.bucket}"
        response = None
        with _http_errors(where):
            for index, address in enumerate(addresses):
                pool = self._pool(ref.scheme, address, authority)
                try:
                    response = pool.urlopen("GET", "/" + ref.key, headers=headers, redirect=False,
                                            retries=False, preload_content=False, decode_content=False,
                                            assert_same_host=False, timeout=timeout)
                    break
                except urllib3.exceptions.NewConnectionError:
                    if index == len(addresses) - 1:
                        raise  # the host's last address refused too
            try:
                return self._handle(response, where, if_none_match, deadline)
            finally:
                response.close()

    def _handle(self, response: Any, where: str, if_none_match: str | None, deadline: float) -> HttpResult | str:
        status = response.status
        if status in REDIRECT_CODES:
            location = response.headers.get("Location")
            if not location:
                raise FetchFailed(f"HTTP {status} from {where} without a Location")
            return location
        if status == 304 and if_none_match:
            return HttpResult(b"", if_none_match, not_modified=True)
        if status in (404, 410):
            raise ObjectNotFound(f"HTTP {status} from {where}")
        if status in (401, 403):
            raise AccessDenied(f"HTTP {status} from {where}")
        if status == 429 or status >= 500:
            raise HttpTransient(f"HTTP {status} from {where}")
        if status != 200:
            raise FetchFailed(f"HTTP {status} from {where}")
        limit = self._config.max_object_bytes
        length = response.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise ObjectTooLarge(f"object is {int(length)} bytes, limit {limit}")
        data = self._read(response, limit, deadline)
        etag = response.headers.get("ETag")
        if etag and not etag.startswith("W/"):
            etag = etag.strip('"')
        return HttpResult(data, etag or None)

    def _read(self, response: Any, limit: int, deadline: float) -> bytes:
        chunks, total = [], 0
        while True:
            chunk = response.read1(min(CHUNK_BYTES, limit - total + 1), decode_content=False)  # what has come
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                raise ObjectTooLarge(f"object is over the limit of {limit} bytes")
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise HttpTransient(f"transfer took longer than fetch_timeout_s={self._config.fetch_timeout_s}")

    def _pool(self, scheme: str, address: str, authority: netpolicy.Authority) -> Any:
        import urllib3

        with self._lock:
            if self._manager is None:
                self._manager = urllib3.PoolManager(num_pools=64, maxsize=self._config.fetch_concurrency,
                                                    block=False, retries=False)
            manager = self._manager
        kwargs = {}
        if scheme == "https":  # SNI and certificate check against the name, not the IP
            kwargs = {"server_hostname": authority.host, "assert_hostname": authority.host,
                      "cert_reqs": "CERT_REQUIRED"}
        return manager.connection_from_host(address, port=authority.port, scheme=scheme, pool_kwargs=kwargs)


@contextmanager
def _http_errors(where: str) -> Iterator[None]:
    """The one place urllib3 errors become the project's errors (without urllib3's text)."""
    import urllib3.exceptions as ue

    try:
        yield
    except PipelineError:
        raise
    except ue.SSLError:
        raise FetchFailed(f"TLS handshake with {where} failed (certificate not valid for the host?)") from None
    except ue.ConnectTimeoutError as exc:  # NewConnectionError is a kind of it
        kind = "failed" if isinstance(exc, ue.NewConnectionError) else "timed out"
        raise HttpTransient(f"connecting to {where} {kind}") from None
    except ue.ReadTimeoutError:
        raise HttpTransient(f"reading from {where} timed out") from None
    except (ue.HTTPError, OSError) as exc:  # protocol errors, resets, a body cut short
        raise HttpTransient(f"HTTP transfer from {where} failed ({type(exc).__name__})") from None
