"""Fetch an object's bytes from S3, from a file under `file_root`, or over http(s), within the
config's limits.

* Connection reuse: one boto3 client per `Fetcher` (its urllib3 pool holds up to
  `fetch_concurrency` keep-alive connections), one bounded thread pool for `fetch_many`.
* Per-request timeout: `fetch_timeout_s` bounds connecting, each socket read, and the whole
  body transfer of one attempt (checked between chunks).
* Retries: our own loop (botocore's is switched off, since it never retries a failure while
  the body streams), at most `fetch_retries` after the first attempt, with "full jitter"
  exponential backoff. Retried: throttling (SlowDown, 429, ...), 5xx, and network failures
  (connection refused/reset, timeouts, a body cut short). Never retried: 4xx such as a missing
  object, refused credentials or a bad request.
* Size: `max_object_bytes` is checked against Content-Length / the file size before reading,
  and again while streaming, so a lying or missing length never lets more through.
* ETag kept (quotes stripped). For file:// the ETag is the one web servers give static files,
  "<size hex>-<mtime ns hex>". `if_none_match=` makes a conditional fetch: when the object
  still has that ETag nothing is transferred and `FetchedObject.not_modified` is True (the
  decoded-image cache uses this to skip both the transfer and the decode).

* http(s): `streaming.http_fetch` does one attempt (the SSRF guard on every hop, redirects,
  the same size and time limits); this module retries its transient failures like S3's.

botocore/OS errors are translated into the project's error tree in one place each
(`_s3_errors`, `_file_errors`; urllib3's in `http_fetch`). Error messages never contain a
credential.

`Fetcher` builds its boto3 client and its thread pool lazily (or in `open()`), so a fresh one,
or one sent through pickle, holds only its settings: Flink operators create it in `__init__`
and use it after `open()`.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from streaming.config import PipelineConfig
from streaming.errors import (AccessDenied, FetchFailed, ObjectNotFound, ObjectTooLarge,
                              PipelineError, UriNotAllowed)
from streaming.http_fetch import HttpGetter, HttpTransient
from streaming.uris import ObjectRef, resolve_under

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024  # the body is read in chunks this big; the deadline is checked between them
RETRY_BASE_S = 0.1  # backoff before retry n is uniform in [0, min(RETRY_CAP_S, RETRY_BASE_S * 2**(n-1))]
RETRY_CAP_S = 5.0
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId",
                           "SignatureDoesNotMatch", "AllAccessDisabled", "AccountProblem",
                           "InvalidObjectState"})
_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
                             "RequestThrottled", "RequestThrottledException", "TooManyRequests",
                             "TooManyRequestsException", "RequestLimitExceeded",
                             "BandwidthLimitExceeded", "ProvisionedThroughputExceededException",
                             "RequestTimeout", "RequestTimeoutException",
                             "PriorRequestNotComplete", "InternalError", "ServiceUnavailable"})


@dataclass(frozen=True)
class FetchedObject:
    uri: str
    data: bytes  # empty when not_modified
    etag: str | None
    fetch_ms: float
    attempts: int = 1  # 1 + the retries it took
    not_modified: bool = False  # a conditional fetch found the same ETag: nothing transferred


class _TransientFetchFailed(FetchFailed):
    """A failure worth another attempt (throttling, 5xx, network); the retry loop's signal."""


class _NotModified(Exception):
    """The object still has the ETag of a conditional fetch."""


class Fetcher:
    """Reads objects named by `ObjectRef`s; safe to share between threads once built."""

    def __init__(self, config: PipelineConfig, *, retry_base_s: float = RETRY_BASE_S,
                 retry_cap_s: float = RETRY_CAP_S, sleep: Callable[[float], None] = time.sleep,
                 resolver: Callable[..., list] | None = None):
        if (config.s3_access_key is None) != (config.s3_secret_key is None):
            raise ValueError("set both s3_access_key and s3_secret_key, or neither")
        if retry_base_s < 0 or retry_cap_s < 0:
            raise ValueError("retry backoff must be >= 0")
        self._config = config
        self._retry_base_s, self._retry_cap_s, self._sleep = retry_base_s, retry_cap_s, sleep
        self._resolver = resolver  # socket.getaddrinfo when None; tests pass their own
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._http = HttpGetter(self._config, self._resolver)

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> "Fetcher":
        """Build the S3 client and the thread pool now rather than on first use."""
        self._s3()
        self._executor()
        return self

    def close(self) -> None:
        """Stop the thread pool and drop the client; a later fetch builds them again."""
        with self._lock:
            pool, self._pool, self._client = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> "Fetcher":
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # clients, pools and locks stay behind; a custom sleep (tests) too
        return {"_config": self._config, "_retry": (self._retry_base_s, self._retry_cap_s)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._config = state["_config"]
        self._retry_base_s, self._retry_cap_s = state.get("_retry", (RETRY_BASE_S, RETRY_CAP_S))
        self._sleep = time.sleep
        self._resolver = None
        self._init_runtime()

    def __repr__(self) -> str:
        return f"Fetcher(endpoint={self._config.s3_endpoint!r}, open={self._client is not None})"

    # -- fetching ----------------------------------------------------------------------
    def fetch(self, ref: ObjectRef, *, if_none_match: str | None = None) -> FetchedObject:
        """Fetch one object. Raises a `PipelineError` subclass; nothing else on purpose.

        With `if_none_match` (an ETag from an earlier fetch), an object that still has that
        ETag is not transferred: the result has `not_modified=True` and empty `data`.
        """
        client = self._s3() if ref.scheme == "s3" else None  # built outside the timing
        start = time.perf_counter()
        attempts = 1
        try:
            if client is not None:
                data, etag, attempts = self._fetch_s3(client, ref, if_none_match)
            elif ref.scheme == "file":
                data, etag = self._fetch_file(ref, if_none_match)
            elif ref.scheme in ("http", "https") and ref.scheme in self._config.allowed_schemes:
                data, etag, attempts = self._fetch_http(ref, if_none_match)
            else:
                raise UriNotAllowed(f"scheme {ref.scheme!r} cannot be fetched", stage="fetch")
        except _NotModified as exc:
            return FetchedObject(ref.uri, b"", if_none_match, _ms_since(start), int(exc.args[0]), True)
        return FetchedObject(ref.uri, data, etag, _ms_since(start), attempts)

    def fetch_many(self, refs: Iterable[ObjectRef], *,
                   if_none_match: Sequence[str | None] | None = None) -> list[FetchedObject | PipelineError]:
        """Fetch concurrently (at most `fetch_concurrency` at once); results keep the input order.

        A failure is returned in its slot, never raised, so one bad object never sinks the rest.
        `if_none_match`, when given, holds one ETag (or None) per ref.
        """
        refs = list(refs)
        etags = list(if_none_match) if if_none_match is not None else [None] * len(refs)
        if len(etags) != len(refs):
            raise ValueError("if_none_match needs one entry per ref")
        if not refs:
            return []
        if len(refs) == 1:
            return [self._fetch_or_error(refs[0], etags[0])]
        return list(self._executor().map(self._fetch_or_error, refs, etags))

    def _fetch_or_error(self, ref: ObjectRef, etag: str | None = None) -> FetchedObject | PipelineError:
        try:
            return self.fetch(ref, if_none_match=etag)
        except PipelineError as exc:
            return exc
        except Exception as exc:  # a bug, not a bad object: record it and keep the batch going
            log.exception("unexpected error fetching %s", ref.uri)
            return PipelineError(self._redact(f"unexpected {type(exc).__name__}: {exc}"), stage="fetch")

    # -- S3 ----------------------------------------------------------------------------
    def _fetch_s3(self, client: Any, ref: ObjectRef,
                  if_none_match: str | None) -> tuple[bytes, str | None, int]:
        """GET with retries for transient failures only; returns (data, etag, attempts)."""
        attempts = self._config.fetch_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return (*self._get_s3(client, ref, if_none_match, attempt), attempt)
            except _TransientFetchFailed as exc:
                if attempt == attempts:
                    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                    raise FetchFailed(exc.message + suffix) from None
                log.debug("retrying %s after attempt %d: %s", ref.uri, attempt, exc.message)
                self._sleep(self.backoff_s(attempt))
        raise AssertionError("unreachable")

    def _fetch_http(self, ref: ObjectRef, if_none_match: str | None) -> tuple[bytes, str | None, int]:
        """GET (following checked redirects) with retries for transient failures only."""
        attempts = self._config.fetch_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                result = self._http.get(ref, if_none_match)
            except HttpTransient as exc:
                if attempt == attempts:
                    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                    raise FetchFailed(exc.message + suffix) from None
                log.debug("retrying %s://%s after attempt %d: %s", ref.scheme, ref.bucket, attempt, exc.message)
                self._sleep(self.backoff_s(attempt))
                continue
            if result.not_modified:
                raise _NotModified(attempt)
            return result.data, result.etag, attempt
        raise AssertionError("unreachable")

    def backoff_s(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number `attempt` (1-based)."""
        ceiling = min(self._retry_cap_s, self._retry_base_s * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    def _get_s3(self, client: Any, ref: ObjectRef, if_none_match: str | None,
                attempt: int) -> tuple[bytes, str | None]:
        limit = self._config.max_object_bytes
        deadline = time.monotonic() + self._config.fetch_timeout_s
        params = {"Bucket": ref.bucket, "Key": ref.key}
        if if_none_match:
            params["IfNoneMatch"] = f'"{if_none_match}"'
        with self._s3_errors(attempt):
            response = client.get_object(**params)
            body = response["Body"]
            try:
                length = response.get("ContentLength")
                if length is not None and length > limit:
                    raise ObjectTooLarge(f"object is {length} bytes, limit {limit}")
                data = _read_limited(body.read, limit, deadline, self._config.fetch_timeout_s)
            finally:
                body.close()
            if length is not None and len(data) != length:
                raise _TransientFetchFailed(f"S3 body cut short: {len(data)} of {length} bytes")
        etag = response.get("ETag")
        return data, etag.strip('"') if etag else None

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._config.fetch_concurrency,
                                                thread_name_prefix="imgstream-fetch")
            return self._pool

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _build_client(self) -> Any:
        import boto3
        from botocore.config import Config

        cfg = self._config
        creds = {}
        if cfg.s3_access_key is not None and cfg.s3_secret_key is not None:
            creds = {"aws_access_key_id": cfg.s3_access_key.value,
                     "aws_secret_access_key": cfg.s3_secret_key.value}
        botocore_config = Config(
            connect_timeout=cfg.fetch_timeout_s,
            read_timeout=cfg.fetch_timeout_s,
            retries={"total_max_attempts": 1},  # retried by `_fetch_s3`, body included
            max_pool_connections=cfg.fetch_concurrency,
            tcp_keepalive=True,
            s3={"addressing_style": "path"},
        )
        session = boto3.session.Session()  # one per Fetcher: the default session is not thread-safe
        return session.client("s3", endpoint_url=cfg.s3_endpoint, region_name=cfg.s3_region,
                              config=botocore_config, **creds)

    @contextmanager
    def _s3_errors(self, attempt: int = 1) -> Iterator[None]:
        """The one place botocore errors become the project's errors."""
        from botocore import exceptions as bce

        try:
            yield
        except PipelineError:
            raise
        except bce.ClientError as exc:
            raise self._client_error(exc, attempt) from None
        except bce.NoCredentialsError:
            raise AccessDenied("no S3 credentials found (config or the standard AWS chain)") from None
        except bce.ParamValidationError as exc:
            raise UriNotAllowed(self._redact(f"S3 rejected the request: {exc}"), stage="fetch") from None
        except (bce.BotoCoreError, OSError) as exc:  # timeouts, connection and streaming failures
            raise _TransientFetchFailed(self._redact(f"S3 {type(exc).__name__}: {exc}")) from None

    def _client_error(self, exc: Any, attempt: int = 1) -> PipelineError | _NotModified:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 304 or code in ("304", "NotModified"):
            return _NotModified(attempt)
        text = self._redact(f"S3 {code or 'error'} (HTTP {status}): {error.get('Message', '')}".rstrip(": "))
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFound(text)
        if code in _DENIED_CODES or status == 403:
            return AccessDenied(text)
        if code in _THROTTLE_CODES or status == 429 or (isinstance(status, int) and status >= 500):
            return _TransientFetchFailed(text)
        return FetchFailed(text)  # another 4xx: not retried here, still marked retryable, to be safe

    def _redact(self, message: str) -> str:
        for secret in (self._config.s3_secret_key, self._config.s3_access_key):
            if secret is not None and secret.value:
                message = message.replace(secret.value, "***")
        return message

    # -- files -------------------------------------------------------------------------
    def _fetch_file(self, ref: ObjectRef, if_none_match: str | None) -> tuple[bytes, str]:
        root = self._config.file_root
        if not root or resolve_under(ref.key, root) != ref.key:
            # the path changed (a symlink appeared?) since parse_uri checked it, or no root
            raise UriNotAllowed("file path is no longer inside file_root", stage="fetch")
        limit = self._config.max_object_bytes
        with _file_errors():
            fd = os.open(ref.key, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb", buffering=0) as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise ObjectNotFound("not a regular file")
                etag = file_etag(info)
                if if_none_match is not None and if_none_match == etag:
                    raise _NotModified(1)
                if info.st_size > limit:
                    raise ObjectTooLarge(f"file is {info.st_size} bytes, limit {limit}")
                return _read_limited(f.read, limit), etag


def file_etag(info: os.stat_result) -> str:
    """The validator web servers give a static file: size and modification time, in hex."""
    return f"{info.st_size:x}-{info.st_mtime_ns:x}"


@contextmanager
def _file_errors() -> Iterator[None]:
    """The one place OS errors of file:// reads become the project's errors."""
    try:
        yield
    except (PipelineError, _NotModified):
        raise
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ObjectNotFound("no such file") from None
    except PermissionError:
        raise AccessDenied("permission denied reading the file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UriNotAllowed("file path is a symlink", stage="fetch") from None
        raise FetchFailed(f"reading the file failed: {exc.strerror or exc}") from None


def _read_limited(read: Any, limit: int, deadline: float | None = None,
                  timeout_s: float | None = None) -> bytes:
    """Read in chunks until EOF; `ObjectTooLarge` as soon as more than `limit` bytes arrived,
    a transient `FetchFailed` when `deadline` (time.monotonic) passes between two chunks."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = read(min(CHUNK_BYTES, limit - total + 1))
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise ObjectTooLarge(f"object is over the limit of {limit} bytes")
        chunks.append(chunk)
        if deadline is not None and time.monotonic() > deadline:
            raise _TransientFetchFailed(f"transfer took longer than fetch_timeout_s={timeout_s}")
    return b"".join(chunks)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
