"""Turn a request's URI into an `ObjectRef`, enforcing the allowlists in `PipelineConfig`.

Accepted forms:

* ``s3://bucket/key`` - the key is taken literally (no percent-decoding, ``?`` and ``#`` are
  part of the key), as the AWS CLI does.
* ``file:///abs/path`` (or ``file://localhost/abs/path``) - percent-decoded; allowed only when
  "file" is in `allowed_schemes` AND `file_root` is set, and the real path (symlinks and
  ``..`` resolved) must lie inside the real `file_root`.
* ``http(s)://`` - not implemented yet: always refused.

Every refusal is a `UriNotAllowed` whose message names the reason. Messages never repeat
unvalidated parts of the URI (they might hold user info such as ``user:password@``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from streaming.config import PipelineConfig
from streaming.errors import UriNotAllowed

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# Stricter than S3's legacy rules would need, as loose as botocore's client-side check allows:
# letters, digits, '.', '-', '_'; 3-255 characters; starts and ends with a letter or digit.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_KEY_BYTES = 1024  # S3's own limit on key length (UTF-8 bytes)


@dataclass(frozen=True)
class ObjectRef:
    """Where an image lives. For ``file`` the bucket is empty and the key is the real path."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The canonical URI of this object."""
        if self.scheme == "file":
            return "file://" + quote(self.key)
        return f"{self.scheme}://{self.bucket}/{self.key}"


def parse_uri(uri: str, config: PipelineConfig) -> ObjectRef:
    """Parse and check one URI against the config's limits and allowlists.

    Raises `UriNotAllowed` naming the reason; never anything else.
    """
    if not isinstance(uri, str):
        raise UriNotAllowed(f"URI must be a string, got {type(uri).__name__}")
    if len(uri) > config.max_uri_chars:
        raise UriNotAllowed(f"URI is {len(uri)} characters, limit {config.max_uri_chars}")
    if _CONTROL.search(uri):
        raise UriNotAllowed("URI contains control characters")
    scheme, sep, rest = uri.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise UriNotAllowed("not an absolute URI (expected scheme://...)")
    scheme = scheme.lower()
    if scheme not in config.allowed_schemes:
        allowed = ", ".join(config.allowed_schemes) or "none"
        raise UriNotAllowed(f"scheme {scheme!r} is not allowed (allowed: {allowed})")
    if scheme == "s3":
        return _parse_s3(rest, config)
    if scheme == "file":
        return _parse_file(uri, config)
    if scheme in ("http", "https"):
        raise UriNotAllowed("http(s) fetching not implemented yet")
    raise UriNotAllowed(f"scheme {scheme!r} is not supported")


def _parse_s3(rest: str, config: PipelineConfig) -> ObjectRef:
    bucket, _, key = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UriNotAllowed("invalid S3 bucket name")
    if config.allowed_buckets and bucket not in config.allowed_buckets:
        raise UriNotAllowed(f"bucket {bucket!r} is not in allowed_buckets")
    if not key:
        raise UriNotAllowed("S3 URI has no object key")
    try:
        key_bytes = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise UriNotAllowed("S3 key is not valid Unicode") from None
    if key_bytes > MAX_KEY_BYTES:
        raise UriNotAllowed(f"S3 key is {key_bytes} bytes, limit {MAX_KEY_BYTES}")
    return ObjectRef("s3", bucket, key)


def _parse_file(uri: str, config: PipelineConfig) -> ObjectRef:
    if not config.file_root:
        raise UriNotAllowed("file:// URIs need file_root to be set")
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise UriNotAllowed("malformed file:// URI") from None
    if parts.netloc not in ("", "localhost"):
        raise UriNotAllowed("file:// URI must not name a host")
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise UriNotAllowed("file:// URI must not have a query or fragment (encode ? and # as %3F, %23)")
    try:
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        raise UriNotAllowed("file:// path is not valid UTF-8 once decoded") from None
    if not path.startswith("/") or _CONTROL.search(path):
        raise UriNotAllowed("file:// path must be absolute and free of control characters")
    real = resolve_under(path, config.file_root)
    if real is None:
        raise UriNotAllowed("file:// path resolves outside file_root")
    return ObjectRef("file", "", real)


def resolve_under(path: str, root: str) -> str | None:
    """The real path of `path` if it lies strictly inside the real `root`, else None.

    Symlinks and ``..`` are resolved first, so neither can escape `root`.
    """
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return None
    if real == real_root or not PurePosixPath(real).is_relative_to(real_root):
        return None
    return real
