"""Request and result records, and their JSON wire format.

A request is `{"id": str, "uri": str, ...}`; extra fields are kept in `attributes`. A result
is either a prediction or an error, always with the request's id.

Parsing is total: whatever a producer sends, `parse_request` returns a request or raises
`InvalidEvent`/`EventTooLarge`, and `salvage_id` returns (maybe None) ids; nothing else
escapes (deep nesting, huge numbers and bad UTF-8 included). Refused as ambiguous: duplicate
keys (parsers disagree on which one wins) and ids/URIs that are not valid Unicode (lone
surrogates from ``\ud800`` escapes). `result_to_json` always returns text that encodes as
UTF-8, and never echoes the user info (``user:password@``) of a URI.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from streaming.errors import EventTooLarge, InvalidEvent, PipelineError


@dataclass(frozen=True)
class ImageRequest:
    id: str
    uri: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Label:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Prediction:
    id: str
    uri: str
    model: str
    top_k: tuple[Label, ...]
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    batch_size: int = 1  # how many images shared its Triton call


@dataclass(frozen=True)
class ErrorResult:
    id: str | None
    uri: str | None
    code: str
    stage: str
    message: str
    retryable: bool = False
    timings_ms: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_error(cls, request_id: str | None, uri: str | None, error: PipelineError,
                   timings_ms: Mapping[str, float] | None = None) -> "ErrorResult":
        from streaming.errors import Retryable
        return cls(request_id, uri, error.code, error.stage, error.message,
                   isinstance(error, Retryable), dict(timings_ms or {}))


Result = Prediction | ErrorResult
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return data


def _loads(raw: bytes | str) -> object:
    """json.loads that refuses duplicate keys; RecursionError (deep nesting) becomes ValueError.

    Bytes must be strict UTF-8 without a BOM (json.loads alone would also take UTF-16/32 and a
    BOM): invalid bytes raise UnicodeDecodeError, a BOM is refused by json.loads.
    """
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8")
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _size(raw: bytes | str) -> int:
    return len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_request(raw: bytes | str, *, max_bytes: int = 64 * 1024) -> ImageRequest:
    """Parse one event. Raises InvalidEvent / EventTooLarge naming what is wrong."""
    if not isinstance(raw, (bytes, bytearray, str)):
        raise InvalidEvent(f"event must be bytes or text, got {type(raw).__name__}")
    size = _size(raw)
    if size > max_bytes:
        raise EventTooLarge(f"event is {size} bytes, limit {max_bytes}")
    try:
        data = _loads(raw)
    except _DuplicateKey as exc:
        raise InvalidEvent(f"duplicate key {_short(exc.key)} in the event") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {_short(str(exc), 120)}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("id", "uri") if k not in data]
    if missing:
        raise InvalidEvent(f"missing field(s): {', '.join(missing)}")
    for key in ("id", "uri"):
        if not isinstance(data[key], str) or not data[key]:
            raise InvalidEvent(f"field {key!r} must be a non-empty string")
        if not _valid_unicode(data[key]):
            raise InvalidEvent(f"field {key!r} is not valid Unicode (a lone surrogate escape)")
    attributes = {k: v for k, v in data.items() if k not in ("id", "uri")}
    return ImageRequest(data["id"], data["uri"], attributes)


def salvage_id(raw: bytes | str) -> tuple[str | None, str | None]:
    """Best effort (id, uri) of an event that failed to parse, so its error can be matched.

    Never raises. An id or URI given twice, or not valid Unicode, is not salvaged.
    """
    ambiguous = None
    try:
        try:
            data = _loads(raw)
        except _DuplicateKey as exc:
            ambiguous, data = exc.key, json.loads(raw)  # the other fields are still clear
    except Exception:  # noqa: BLE001 - whatever the bytes are, there is nothing to salvage
        return None, None
    if not isinstance(data, dict):
        return None, None
    rid, uri = (None if ambiguous == "id" else data.get("id")), (None if ambiguous == "uri" else data.get("uri"))
    return (rid if isinstance(rid, str) and _valid_unicode(rid) else None,
            uri if isinstance(uri, str) and _valid_unicode(uri) else None)


def redact_uri(uri: str | None) -> str | None:
    """The URI without its user info: ``scheme://user:pw@host/...`` -> ``scheme://***@host/...``."""
    return _USERINFO.sub(r"\1***@", uri) if uri else uri


def _short(text: str, limit: int = 40) -> str:
    """repr() of text, cut to `limit` characters (keys and parser messages may be huge)."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def result_to_json(result: Result) -> str:
    """One compact JSON object per result."""
    if isinstance(result, Prediction):
        body: dict[str, Any] = {
            "id": result.id, "uri": redact_uri(result.uri), "model": result.model,
            "top_k": [{"label": l.label, "index": l.index, "score": round(l.score, 6)} for l in result.top_k],
            "batch_size": result.batch_size,
        }
    else:
        body = {"id": result.id, "uri": redact_uri(result.uri),
                "error": {"code": result.code, "stage": result.stage, "message": result.message,
                          "retryable": result.retryable}}
    body["timings_ms"] = {k: round(v, 3) for k, v in result.timings_ms.items()}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if not _valid_unicode(text):  # a lone surrogate somewhere: escape it, or UTF-8 encoding fails later
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
    return text
