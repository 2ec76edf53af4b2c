"""One http(s) GET attempt for `Fetcher`, with the SSRF guard applied to every hop.

For each hop: the host is resolved once (`netpolicy.resolve_checked`: refused if any address
is loopback/private/link-local/... and not trusted), then the connection goes to one of
those checked addresses (the pool is keyed by IP; the Host header, TLS SNI and certificate
check use the name), so a second DNS answer can never be what we connect to. Redirects
(301/302/303/307/308) are followed here, each Location checked by the URI
policy again (`uris.redirect_target`), at most `max_redirects` of them. No proxy from the
environment is used, no cookies are kept, no credentials are sent.

The attempt (all hops, DNS lookups included: see `_resolve`) runs under one deadline
(`streaming.deadline`), over the shared
transport (`streaming.transport`: bounded head, strict Content-Length, size-limited body).
The body is taken as sent (``Accept-Encoding: identity``, nothing decompressed, so no gzip
bomb). 429 and 5xx are `Transient` (retried by `Fetcher`); other statuses are not retried.
"""
from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from streaming import netpolicy
from streaming.config import PipelineConfig
from streaming.deadline import Attempt, Transient
from streaming.errors import AccessDenied, FetchFailed, ObjectNotFound, TooManyRedirects
from streaming.transport import USER_AGENT, ConnectFailed, Pool, Tls, Transport, read_body, transport_errors
from streaming.uris import ObjectRef, redirect_target, trusted_networks

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class HttpGetter:
    """Follows checked redirects over the shared transport; safe to share between threads."""

    def __init__(self, config: PipelineConfig, transport: Transport, resolver: netpolicy.Resolver | None = None):
        self._config, self._transport, self._resolver = config, transport, resolver
        self._lock = threading.Lock()
        self._dns_pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the resolver threads (a lookup still running finishes on its own)."""
        with self._lock:
            pool, self._dns_pool = self._dns_pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def get(self, ref: ObjectRef, if_none_match: str | None, attempt: Attempt) -> tuple[bytes, str | None, bool]:
        """(data, etag, not_modified) after up to `max_redirects` checked redirects."""
        current = ref
        for _hop in range(self._config.max_redirects + 1):
            outcome = self._get_once(current, if_none_match, attempt)
            if isinstance(outcome, tuple):
                return outcome
            current = redirect_target(outcome, current, self._config)
        raise TooManyRedirects(f"more than max_redirects={self._config.max_redirects} redirects")

    def _get_once(self, ref: ObjectRef, if_none_match: str | None,
                  attempt: Attempt) -> tuple[bytes, str | None, bool] | str:
        """The result, or the Location of a redirect."""
        authority = netpolicy.parse_authority(ref.authority, ref.scheme)
        addresses = netpolicy.resolve_checked(authority, trusted_networks(self._config),
                                              lambda *args, **kwargs: self._resolve(attempt, *args, **kwargs))
        headers = {"Host": ref.authority, "User-Agent": USER_AGENT, "Accept": "image/*",
                   "Accept-Encoding": "identity"}
        if if_none_match:
            headers["If-None-Match"] = if_none_match if if_none_match.startswith("W/") else f'"{if_none_match}"'
        where = f"{ref.scheme}://{ref.authority}"
        with transport_errors(where):
            for index, address in enumerate(addresses):
                pool = self._pool(ref.scheme, address, authority)
                try:
                    response = self._transport.get(pool, "/" + ref.key, headers, attempt)
                    break
                except ConnectFailed:
                    if index == len(addresses) - 1:
                        raise  # the host's last address refused too
            try:
                return self._handle(response, where, if_none_match, attempt)
            finally:
                response.close()

    def _handle(self, response: Any, where: str, if_none_match: str | None,
                attempt: Attempt) -> tuple[bytes, str | None, bool] | str:
        status = response.status
        if status in REDIRECT_CODES:
            location = response.headers.get("Location")
            if not location:
                raise FetchFailed(f"HTTP {status} from {where} without a Location")
            return location
        if status == 304 and if_none_match:
            return b"", if_none_match, True
        if status in (404, 410):
            raise ObjectNotFound(f"HTTP {status} from {where}")
        if status in (401, 403):
            raise AccessDenied(f"HTTP {status} from {where}")
        if status == 429 or status >= 500:
            raise Transient(f"HTTP {status} from {where}")
        if status != 200:
            raise FetchFailed(f"HTTP {status} from {where}")
        data = read_body(response, self._config.max_object_bytes, attempt, self._transport.budget)
        etag = response.headers.get("ETag")
        if etag and not etag.startswith("W/"):
            etag = etag.strip('"')
        return data, etag or None, False

    def _resolve(self, attempt: Attempt, *args: Any, **kwargs: Any) -> list:
        """getaddrinfo within the attempt's deadline. A lookup cannot be interrupted, so it runs
        on one of at most `fetch_concurrency` resolver threads, and the fetch stops waiting for
        it when the deadline passes (the thread is free again when the lookup gives up)."""
        resolve = self._resolver or socket.getaddrinfo
        with self._lock:
            if self._dns_pool is None:
                self._dns_pool = ThreadPoolExecutor(self._config.fetch_concurrency, thread_name_prefix="imgstream-dns")
            pool = self._dns_pool
        future = pool.submit(resolve, *args, **kwargs)
        try:
            return future.result(timeout=attempt.remaining_s())
        except FutureTimeout:
            future.cancel()
            raise attempt.exceeded() from None

    def _pool(self, scheme: str, address: str, authority: netpolicy.Authority) -> Pool:
        # https: SNI and the certificate check use the name, not the address
        tls = Tls(authority.host) if scheme == "https" else None
        return self._transport.pool(scheme, address, authority.port, tls)
