"""Fetch an object's bytes from S3, from a file under `file_root`, or over http(s), within the
config's limits: one retry loop and one deadline per attempt for every scheme.

* Transport: S3 and http(s) share one set of http.client pools (`streaming.transport`, up to
  `fetch_concurrency` keep-alive connections per host). S3 GETs are signed with SigV4
  (`streaming.s3_get`); http(s) hops go through the SSRF guard
  (`streaming.http_fetch`).
* Deadline: `fetch_timeout_s` is the wall-clock limit of one attempt, covering (http) DNS,
  connect, TLS, status line, headers, body and every redirect hop. A watchdog thread shuts the
  attempt's socket down when it passes (`streaming.deadline`), so a server trickling bytes
  cannot hold a fetch thread; the cut connection is discarded, never pooled. file:// reads
  check the same deadline between pieces.
* Retries: at most `fetch_retries` after the first attempt, with "full jitter" exponential
  backoff. Retried: only `Transient` failures: throttling (SlowDown, 429, ...), 5xx, network
  failures (refused, reset, a body cut short) and the deadline. Never retried: a missing
  object, refused credentials, a bad request, a malformed response, a size limit.
* Size: `max_object_bytes` is checked against Content-Length / the file size before reading,
  and again while reading, so a lying or missing length never lets more through.
* Memory: a body is paid for from the fetch budget (`streaming.budget`, `fetch_buffer_bytes`)
  before it is read, and held there until the `fetching` block that asked for it ends.
* ETag kept (quotes stripped). For file:// the ETag is the one web servers give static files,
  "<size hex>-<mtime ns hex>". `if_none_match=` makes a conditional fetch: when the object
  still has that ETag nothing is transferred and `FetchedObject.not_modified` is True (the
  decoded-image cache uses this to skip both the transfer and the decode).

Error messages never contain a credential. `Fetcher` builds its pools lazily, so a fresh one,
or one sent through pickle, holds only its settings: Flink operators create it in `__init__`
and use it after `open()`.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable, Iterator

from streaming import deadline
from streaming.budget import ByteBudget
from streaming.config import PipelineConfig
from streaming.deadline import Attempt, Transient
from streaming.errors import AccessDenied, FetchFailed, ObjectNotFound, ObjectTooLarge, PipelineError, UriNotAllowed
from streaming.http_fetch import HttpGetter
from streaming.s3_get import S3Getter, redact
from streaming.transport import Transport, read_limited
from streaming.uris import ObjectRef, resolve_under

log = logging.getLogger(__name__)

RETRY_BASE_S = 0.1  # backoff before retry n is uniform in [0, min(RETRY_CAP_S, RETRY_BASE_S * 2**(n-1))]
RETRY_CAP_S = 5.0

Outcome = tuple[bytes, "str | None", bool]  # data, etag, not_modified


@dataclass(frozen=True)
class FetchedObject:
    uri: str
    data: bytes  # empty when not_modified
    etag: str | None
    fetch_ms: float
    attempts: int = 1  # 1 + the retries it took
    not_modified: bool = False  # a conditional fetch found the same ETag: nothing transferred


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
        self._transport = Transport(self._config.fetch_concurrency, ByteBudget(self._config.fetch_buffer_bytes))
        self._s3 = S3Getter(self._config, self._transport)
        self._http = HttpGetter(self._config, self._transport, self._resolver)

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> "Fetcher":
        """Nothing to build ahead: pools and credentials come on first use."""
        return self

    def close(self) -> None:
        """Drop the pooled connections and resolver threads; a later fetch makes new ones."""
        self._transport.close()
        self._http.close()

    def __enter__(self) -> "Fetcher":
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # pools, credentials and locks stay behind; a custom sleep (tests) too
        return {"_config": self._config, "_retry": (self._retry_base_s, self._retry_cap_s)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._config = state["_config"]
        self._retry_base_s, self._retry_cap_s = state.get("_retry", (RETRY_BASE_S, RETRY_CAP_S))
        self._sleep = time.sleep
        self._resolver = None
        self._init_runtime()

    def __repr__(self) -> str:
        return f"Fetcher(endpoint={self._s3.endpoint!r})"

    # -- fetching ----------------------------------------------------------------------
    def fetch(self, ref: ObjectRef, *, if_none_match: str | None = None) -> FetchedObject:
        """Fetch one object (tools: its bytes leave the fetch budget on return). Raises a
        `PipelineError` subclass; nothing else on purpose.

        With `if_none_match` (an ETag from an earlier fetch), an object that still has that
        ETag is not transferred: the result has `not_modified=True` and empty `data`.
        """
        with self.fetching(ref, if_none_match=if_none_match) as fetched:
            return fetched

    @contextmanager
    def fetching(self, ref: ObjectRef, *, if_none_match: str | None = None) -> Iterator[FetchedObject]:
        """As `fetch`, the object's bytes counted in the fetch budget (`streaming.budget`,
        `fetch_buffer_bytes`) until the block ends: the job's requests hold them so until decoded."""
        fetched = self._fetch(ref, if_none_match)
        try:
            yield fetched
        finally:
            self._transport.budget.give(len(fetched.data))

    def _fetch(self, ref: ObjectRef, if_none_match: str | None) -> FetchedObject:
        once = self._one_attempt(ref)
        start = time.perf_counter()
        attempts = self._config.fetch_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with deadline.attempt(self._config.fetch_timeout_s) as current:
                    try:
                        data, etag, not_modified = once(ref, if_none_match, current)
                    except BaseException:
                        self._transport.budget.give(current.paid)  # read, then failed: none of it is kept
                        raise
                return FetchedObject(ref.uri, data, etag, _ms_since(start), attempt, not_modified)
            except Transient as exc:
                message = redact(exc.message, self._config)
                if attempt == attempts:
                    raise FetchFailed(message + (f" (after {attempts} attempts)" if attempts > 1 else "")) from None
                log.debug("retrying %s://%s after attempt %d: %s", ref.scheme, ref.authority, attempt, message)
                self._sleep(self.backoff_s(attempt))
        raise AssertionError("unreachable")

    def _one_attempt(self, ref: ObjectRef) -> Callable[[ObjectRef, str | None, Attempt], Outcome]:
        if ref.scheme == "s3":
            return lambda r, etag, current: self._s3.get(r.bucket, r.key, etag, current)
        if ref.scheme == "file":
            return self._fetch_file
        if ref.scheme in ("http", "https") and ref.scheme in self._config.allowed_schemes:
            return self._http.get
        raise UriNotAllowed(f"scheme {ref.scheme!r} cannot be fetched", stage="fetch")

    def backoff_s(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number `attempt` (1-based)."""
        ceiling = min(self._retry_cap_s, self._retry_base_s * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    # -- files -------------------------------------------------------------------------
    def _fetch_file(self, ref: ObjectRef, if_none_match: str | None, current: Attempt) -> Outcome:
        root = self._config.file_root
        if not root or resolve_under(ref.key, root) != ref.key:
            # the path changed (a symlink appeared?) since parse_uri checked it, or no root
            raise UriNotAllowed("file path is no longer inside file_root", stage="fetch")
        limit = self._config.max_object_bytes
        with _file_errors():
            fd = open_beneath(root, ref.key)
            with os.fdopen(fd, "rb", buffering=0) as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise ObjectNotFound("not a regular file")
                etag = file_etag(info)
                if if_none_match is not None and if_none_match == etag:
                    return b"", etag, True
                if info.st_size > limit:
                    raise ObjectTooLarge(f"file is {info.st_size} bytes, limit {limit}")
                try:  # paid for as twice its size: the pieces and their join
                    data = self._transport.budget.read(lambda: read_limited(f.read, info.st_size, current),
                                                       2 * info.st_size, current)
                except ObjectTooLarge:
                    raise Transient("the file grew while it was read") from None
                return data, etag, False


def open_beneath(root: str, path: str) -> int:
    """A read-only fd of `path` (a real path inside the real `root`), opened one folder at a time
    from `root` with no symlink followed: a folder of the path swapped for a symlink after the
    check cannot lead outside `root` (ELOOP or ENOTDIR instead). O_NONBLOCK: opening a FIFO must
    not wait for a writer (the caller refuses what is not a regular file)."""
    real_root = os.path.realpath(root)
    *folders, name = PurePosixPath(path).relative_to(real_root).parts
    fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder in folders:
            try:
                inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except NotADirectoryError:  # a file, or a symlink (which O_DIRECTORY reports so)
                if stat.S_ISLNK(os.stat(folder, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, "a folder of the path is a symlink") from None
                raise
            os.close(fd)
            fd = inner
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)


def file_etag(info: os.stat_result) -> str:
    """The validator web servers give a static file: size and modification time, in hex."""
    return f"{info.st_size:x}-{info.st_mtime_ns:x}"


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


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
