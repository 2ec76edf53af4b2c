"""Turn a request's URI into an `ObjectRef`, enforcing the allowlists in `PipelineConfig`.

Accepted forms:

* ``s3://bucket/key`` - the key is taken literally (no percent-decoding, ``?`` and ``#`` are
  part of the key), as the AWS CLI does. The bucket must be in `allowed_buckets` (when set);
  with `allowed_s3_prefixes` ("bucket/prefix" entries) the key must also start with the prefix
  given for its bucket. Always refused, allowlists or not: keys with empty, ``.`` or ``..``
  segments, backslashes, or percent-encoded ``.``, ``/``, ``\\`` or ``%`` (``%2e``, ``%2f``,
  ``%5c``, ``%25``): an S3-compatible gateway that decodes and normalises paths could otherwise
  be walked into another bucket or out of a prefix (``s3://samples/../private/x.jpg``).
* ``file:///abs/path`` (or ``file://localhost/abs/path``) - percent-decoded; allowed only when
  "file" is in `allowed_schemes` AND `file_root` is set, and the real path (symlinks and
  ``..`` resolved) must lie inside the real `file_root`.
* ``http(s)://host[:port]/path?query`` - deny by default: the host (and port) must match
  `allowed_hosts` (see `streaming.netpolicy`); user info, backslashes, zone ids and numeric
  hosts in non-canonical forms are refused; an IP-literal host is checked against the address
  guard here, a host name when it is resolved (`streaming.http_fetch`, every redirect hop
  again, via `redirect_target`). Path segments that are ``.`` or ``..`` (also percent-encoded)
  and backslashes in the path are refused. The fragment is dropped; the ref's bucket is
  ``host[:port]`` and its key the request target without its leading ``/``.

User info. Any URI that may carry credentials is refused, whatever its scheme: an ``@`` in the
authority, or an ``@`` after a ``:`` (``https://svc:hunt/er2@host/a.jpg`` is user ``svc``,
password ``hunt/er2`` to a reader, whatever RFC 3986 says). `public_uri` is the form results
show: the URI itself when it cannot hold user info (every URI `parse_uri` accepts), else
everything up to its last ``@`` replaced by ``***``.

Every refusal is a `UriNotAllowed` (`UriTooLong`, `AddressNotAllowed` are kinds of it) whose
message names the reason. Messages never repeat unvalidated parts of the URI (they might hold
user info such as ``user:password@``).
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urljoin, urlsplit

from streaming import netpolicy
from streaming.config import MAX_URI_CHARS, PipelineConfig  # noqa: F401 - MAX_URI_CHARS: results cap URIs there
from streaming.errors import UriNotAllowed, UriTooLong

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# Stricter than S3's legacy rules would need, as loose as botocore's client-side check allows:
# letters, digits, '.', '-', '_'; 3-255 characters; starts and ends with a letter or digit.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_AUTHORITY_END = re.compile(r"[/?#]")
_DROPPED = re.compile(r"[\t\n\r]")  # URL readers (urlsplit, WHATWG) remove these wherever they are
_LEADING = re.compile(r"[\s/\\]*")  # blanks and slashes before an authority: lenient readers skip them
_TARGET_SAFE = "/%:@!$&'()*+,;=-._~?"  # kept as they are in an http request target
MAX_KEY_BYTES = 1024  # S3's own limit on key length (UTF-8 bytes)
_ENCODED_ESCAPES = re.compile(r"%(2e|2f|5c|25)", re.IGNORECASE)  # '.', '/', '\\', '%' percent-encoded
_SCHEME_PREFIX = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class ObjectRef:
    """Where an image lives. `authority` is the bucket for ``s3``, ``host[:port]`` for ``http(s)``
    and empty for ``file``; `key` is the object key, the request target minus its ``/``, or the
    real path."""

    scheme: str
    authority: str
    key: str

    @property
    def bucket(self) -> str:
        """The S3 bucket (``s3`` refs only: other schemes have no bucket)."""
        if self.scheme != "s3":
            raise AttributeError(f"a {self.scheme} ref has no bucket (its authority is {self.authority!r})")
        return self.authority

    @property
    def uri(self) -> str:
        """The canonical URI of this object."""
        if self.scheme == "file":
            return "file://" + quote(self.key)
        return f"{self.scheme}://{self.authority}/{self.key}"


def parse_uri(uri: str, config: PipelineConfig) -> ObjectRef:
    """Parse and check one URI against the config's limits and allowlists.

    Raises `UriNotAllowed` naming the reason; never anything else.
    """
    if not isinstance(uri, str):
        raise UriNotAllowed(f"URI must be a string, got {type(uri).__name__}")
    if len(uri) > config.max_uri_chars:
        raise UriTooLong(f"URI is {len(uri)} characters, limit {config.max_uri_chars}")
    if _CONTROL.search(uri):
        raise UriNotAllowed("URI contains control characters")
    if may_hold_user_info(uri):
        raise UriNotAllowed("URI must not contain user info (user:password@)")
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
        return _parse_http(scheme, rest, config)
    raise UriNotAllowed(f"scheme {scheme!r} is not supported")


def may_hold_user_info(uri: str) -> bool:
    """Whether some reader could take part of `uri` for ``user[:password]@``.

    True when there is an ``@`` and, between ``scheme://`` (or the start) and the last ``@``,
    there is no ``/``, ``?`` or ``#`` (the ``@`` ends the authority), or there is a ``:`` or
    another ``@`` (a password holding reserved characters, a doubled ``@``). So
    ``s3://b/a@b.jpg`` and ``https://h/a?u=x@y`` are fine, ``https://svc:hunt/er2@h/a.jpg``,
    ``s3://AKIA:sec#ret@bucket/k`` and ``https://u:p@@h/`` are not. Slashes, blanks and
    backslashes right after ``scheme://`` (or at the start) are skipped first: urlsplit reads
    ``//TOKEN@h/x`` and WHATWG URL ``https:///TOKEN@h/x`` as user TOKEN at host h.
    """
    at = uri.rfind("@")
    if at < 0:
        return False
    head = _DROPPED.sub("", uri[:at])
    start = head.find("://")
    between = head[start + 3:] if start >= 0 else head
    if head[:start].strip().lower() != "file":  # file:///a@2x.png: an empty authority, then a path
        between = between[_LEADING.match(between).end():]
    return ":" in between or "@" in between or not _AUTHORITY_END.search(between)


def public_uri(uri: str | None) -> str | None:
    """`uri` as a result may show it: unchanged when it cannot hold user info, else
    ``scheme://***@`` and what follows its last ``@`` (the scheme only when it is one)."""
    if not uri or not may_hold_user_info(uri):
        return uri
    at = uri.rfind("@")
    scheme = _SCHEME_PREFIX.match(uri[:at])
    return (f"{scheme.group(1)}://" if scheme else "") + "***@" + uri[at + 1:]


def redirect_target(location: str, current: ObjectRef, config: PipelineConfig) -> ObjectRef:
    """The ref a redirect's Location leads to, checked like a request's URI (stage fetch).

    Only http(s) targets are followed, and never from https down to http.
    """
    try:
        if _CONTROL.search(location):
            raise UriNotAllowed("Location contains control characters")
        try:
            target = urljoin(current.uri, location.strip())
        except ValueError:  # urlsplit's "Invalid IPv6 URL" and the like
            raise UriNotAllowed("Location is not a valid URI reference") from None
        if target.partition("://")[0].lower() not in ("http", "https"):
            raise UriNotAllowed("redirect to a scheme other than http(s)")
        ref = parse_uri(target, config)
        if current.scheme == "https" and ref.scheme == "http":
            raise UriNotAllowed("redirect from https to http")
        return ref
    except UriNotAllowed as exc:
        exc.stage = "fetch"
        exc.message = f"redirect refused: {exc.message}"
        exc.args = (exc.message,)
        raise


def _parse_http(scheme: str, rest: str, config: PipelineConfig) -> ObjectRef:
    if not config.allowed_hosts:
        raise UriNotAllowed("no http(s) host is allowed (allowed_hosts is empty)")
    match = _AUTHORITY_END.search(rest)
    netloc, tail = (rest[:match.start()], rest[match.start():]) if match else (rest, "")
    authority = netpolicy.parse_authority(netloc, scheme)
    if not netpolicy.host_allowed(authority, scheme, config.allowed_hosts):
        raise UriNotAllowed(f"host {authority.host!r} port {authority.port} is not in allowed_hosts")
    if authority.ip is not None:  # names are checked when resolved, just before connecting
        netpolicy.check_address(authority.ip, _networks(config.http_trusted_networks), stage="parse")
    path = tail.partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    steps = path.partition("?")[0]
    if "\\" in steps or any(unquote(part) in (".", "..") for part in steps.split("/")):
        raise UriNotAllowed("http(s) path has '.' or '..' segments or a backslash")
    try:
        target = quote(path, safe=_TARGET_SAFE)
    except UnicodeEncodeError:
        raise UriNotAllowed("http(s) path is not valid Unicode") from None
    return ObjectRef(scheme, authority.netloc(scheme), target[1:])


@functools.lru_cache(maxsize=16)
def _networks(texts: tuple[str, ...]) -> tuple:
    return netpolicy.parse_networks(texts)


def trusted_networks(config: PipelineConfig) -> tuple:
    """`http_trusted_networks` parsed (cached)."""
    return _networks(config.http_trusted_networks)


def _parse_s3(rest: str, config: PipelineConfig) -> ObjectRef:
    bucket, _, key = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UriNotAllowed("invalid S3 bucket name")
    if config.allowed_buckets and bucket not in config.allowed_buckets:
        raise UriNotAllowed(f"bucket {bucket!r} is not in allowed_buckets")
    if not key:
        raise UriNotAllowed("S3 URI has no object key")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise UriNotAllowed("S3 key has an empty, '.' or '..' segment")
    if "\\" in key or _ENCODED_ESCAPES.search(key):
        raise UriNotAllowed("S3 key has a backslash or a percent-encoded '.', '/', '\\' or '%'")
    if config.allowed_s3_prefixes:
        prefixes = [p.partition("/")[2] for p in config.allowed_s3_prefixes if p.partition("/")[0] == bucket]
        if not any(key.startswith(prefix) for prefix in prefixes):
            raise UriNotAllowed(f"key is outside the allowed_s3_prefixes of bucket {bucket!r}")
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
