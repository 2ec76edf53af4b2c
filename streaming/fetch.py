"""Fetch an object's bytes from S3 or from a file under `file_root`, within the config's limits.

botocore/OS errors are translated into the project's error tree in one place each
(`_s3_errors`, `_file_errors`): a missing object is `ObjectNotFound`, a refusal is
`AccessDenied`, a size over `max_object_bytes` is `ObjectTooLarge`, and timeouts, throttling,
5xx and connection failures are the retryable `FetchFailed`. Error messages never contain a
credential.

`Fetcher` builds its boto3 client and its thread pool lazily (or in `open()`), so a fresh one,
or one sent through pickle, holds only the config: Flink operators create it in `__init__` and
use it after `open()`.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from streaming.config import PipelineConfig
from streaming.errors import (AccessDenied, FetchFailed, ObjectNotFound, ObjectTooLarge,
                              PipelineError, UriNotAllowed)
from streaming.uris import ObjectRef, resolve_under

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId",
                           "SignatureDoesNotMatch", "AllAccessDisabled", "AccountProblem",
                           "InvalidObjectState"})


@dataclass(frozen=True)
class FetchedObject:
    uri: str
    data: bytes
    etag: str | None
    fetch_ms: float


class Fetcher:
    """Reads objects named by `ObjectRef`s; safe to share between threads once built."""

    def __init__(self, config: PipelineConfig):
        if (config.s3_access_key is None) != (config.s3_secret_key is None):
            raise ValueError("set both s3_access_key and s3_secret_key, or neither")
        self._config = config
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None

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

    def __enter__(self) -> "Fetcher":
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"_config": self._config}  # clients, pools and locks stay behind

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._config = state["_config"]
        self._init_runtime()

    def __repr__(self) -> str:
        return f"Fetcher(endpoint={self._config.s3_endpoint!r}, open={self._client is not None})"

    # -- fetching ----------------------------------------------------------------------
    def fetch(self, ref: ObjectRef) -> FetchedObject:
        """Fetch one object. Raises a `PipelineError` subclass; nothing else on purpose."""
        client = self._s3() if ref.scheme == "s3" else None  # built outside the timing
        start = time.perf_counter()
        if client is not None:
            data, etag = self._fetch_s3(client, ref)
        elif ref.scheme == "file":
            data, etag = self._fetch_file(ref), None
        else:
            raise UriNotAllowed(f"scheme {ref.scheme!r} cannot be fetched", stage="fetch")
        return FetchedObject(ref.uri, data, etag, (time.perf_counter() - start) * 1000.0)

    def fetch_many(self, refs: Iterable[ObjectRef]) -> list[FetchedObject | PipelineError]:
        """Fetch concurrently (at most `fetch_concurrency` at once); results keep the input order.

        A failure is returned in its slot, never raised, so one bad object never sinks the rest.
        """
        refs = list(refs)
        if not refs:
            return []
        if len(refs) == 1:
            return [self._fetch_or_error(refs[0])]
        return list(self._executor().map(self._fetch_or_error, refs))

    def _fetch_or_error(self, ref: ObjectRef) -> FetchedObject | PipelineError:
        try:
            return self.fetch(ref)
        except PipelineError as exc:
            return exc
        except Exception as exc:  # a bug, not a bad object: record it and keep the batch going
            log.exception("unexpected error fetching %s", ref.uri)
            return PipelineError(self._redact(f"unexpected {type(exc).__name__}: {exc}"), stage="fetch")

    # -- S3 ----------------------------------------------------------------------------
    def _fetch_s3(self, client: Any, ref: ObjectRef) -> tuple[bytes, str | None]:
        limit = self._config.max_object_bytes
        with self._s3_errors():
            response = client.get_object(Bucket=ref.bucket, Key=ref.key)
            body = response["Body"]
            try:
                length = response.get("ContentLength")
                if length is not None and length > limit:
                    raise ObjectTooLarge(f"object is {length} bytes, limit {limit}")
                data = _read_limited(body.read, limit)
            finally:
                body.close()
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
            retries={"mode": "standard", "max_attempts": cfg.fetch_retries},
            max_pool_connections=cfg.fetch_concurrency,
            s3={"addressing_style": "path"},
        )
        session = boto3.session.Session()  # one per Fetcher: the default session is not thread-safe
        return session.client("s3", endpoint_url=cfg.s3_endpoint, region_name=cfg.s3_region,
                              config=botocore_config, **creds)

    @contextmanager
    def _s3_errors(self) -> Iterator[None]:
        """The one place botocore errors become the project's errors."""
        from botocore import exceptions as bce

        try:
            yield
        except PipelineError:
            raise
        except bce.ClientError as exc:
            raise self._client_error(exc) from None
        except bce.NoCredentialsError:
            raise AccessDenied("no S3 credentials found (config or the standard AWS chain)") from None
        except bce.ParamValidationError as exc:
            raise UriNotAllowed(self._redact(f"S3 rejected the request: {exc}"), stage="fetch") from None
        except (bce.BotoCoreError, OSError) as exc:  # timeouts, connection and streaming failures
            raise FetchFailed(self._redact(f"S3 {type(exc).__name__}: {exc}")) from None

    def _client_error(self, exc: Any) -> PipelineError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = self._redact(f"S3 {code or 'error'} (HTTP {status}): {error.get('Message', '')}".rstrip(": "))
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFound(text)
        if code in _DENIED_CODES or status == 403:
            return AccessDenied(text)
        return FetchFailed(text)  # throttling, 5xx, timeouts; unknown codes too, to be safe

    def _redact(self, message: str) -> str:
        for secret in (self._config.s3_secret_key, self._config.s3_access_key):
            if secret is not None and secret.value:
                message = message.replace(secret.value, "***")
        return message

    # -- files -------------------------------------------------------------------------
    def _fetch_file(self, ref: ObjectRef) -> bytes:
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
                if info.st_size > limit:
                    raise ObjectTooLarge(f"file is {info.st_size} bytes, limit {limit}")
                return _read_limited(f.read, limit)


@contextmanager
def _file_errors() -> Iterator[None]:
    """The one place OS errors of file:// reads become the project's errors."""
    try:
        yield
    except PipelineError:
        raise
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ObjectNotFound("no such file") from None
    except PermissionError:
        raise AccessDenied("permission denied reading the file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UriNotAllowed("file path is a symlink", stage="fetch") from None
        raise FetchFailed(f"reading the file failed: {exc.strerror or exc}") from None


def _read_limited(read: Any, limit: int) -> bytes:
    """Read in chunks until EOF; `ObjectTooLarge` as soon as more than `limit` bytes arrived."""
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
    return b"".join(chunks)
