"""Request and result records, and their JSON wire format.

A request is `{"id": str, "uri": str, ...}`; extra fields are kept in `attributes`. A result
is either a prediction or an error, always with the request's id.

Parsing is total: whatever a producer sends, `parse_request` returns a request or raises
`InvalidEvent`/`EventTooLarge`, and `salvage_id` returns (maybe None) ids; nothing else
escapes (deep nesting, huge numbers and bad UTF-8 included). Refused as ambiguous: duplicate
keys (parsers disagree on which one wins) and ids/URIs that are not valid Unicode (lone
surrogates from ``\ud800`` escapes).

Results are small and clean whatever the event was. `result_to_json` always returns text
that encodes as UTF-8, at most `MAX_RESULT_BYTES` of it (the Kafka sink's `max.request.size`
is set well above, in flink_jobs/classify.py, so no result can fail the writer): the id is cut
to `MAX_ID_CHARS` (then ``"id_truncated": true``), the URI to `uris.MAX_URI_CHARS` (then
``"uri_truncated": true``), the error message to `MAX_MESSAGE_CHARS`; anything still over the
bound becomes a small `result_too_large` error. The URI shown is `uris.public_uri`: never the
user info (``user:password@``) of a URI. `salvage_id` reads at most `SALVAGE_MAX_BYTES` of an
event: a bigger one is scanned, not parsed, for its leading ``id``/``uri``.
"""
from __future__ import annotations

import base64
import codecs
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from streaming.contract import Output
from streaming.errors import EventTooLarge, InvalidEvent, PipelineError, ResultTooLarge
from streaming.uris import MAX_URI_CHARS, public_uri

MAX_ID_CHARS = 1024  # of a result's id; a longer id is cut and marked "id_truncated"
MAX_MESSAGE_CHARS = 2048  # of an error message
# The most UTF-8 bytes of one result. Worst case of the capped fields: 11,264 characters, each at
# most 12 bytes as JSON (an escaped surrogate pair), 132 KiB; a quarter of the sink's 1 MiB.
MAX_RESULT_BYTES = 256 * 1024
SALVAGE_MAX_BYTES = 64 * 1024  # salvage_id reads no more of an event than this
RESULT_TOO_LARGE = ResultTooLarge.code  # a result that would exceed MAX_RESULT_BYTES


MAX_MODEL_CHARS = 256  # of an event's "model" (a Triton model name)


@dataclass(frozen=True)
class ImageRequest:
    id: str
    uri: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None  # the model the event names ("model"); None: the job's model_name


@dataclass(frozen=True)
class Label:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Prediction:
    """A model's answer: the top-k labels of a `classes` model, or the vector of an `embedding`
    model (already in the contract's wire dtype), with the version that served it."""

    id: str
    uri: str
    model: str
    top_k: tuple[Label, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    batch_size: int = 1  # how many images shared its Triton call
    model_version: str = ""
    embedding: np.ndarray | None = None

    @classmethod
    def of(cls, request_id: str, uri: str, model: str, version: str, output: Output, value: Any,
           timings_ms: Mapping[str, float], batch_size: int) -> "Prediction":
        """The prediction for one image's model output (`value`: labels, or a float vector)."""
        if output.kind == "embedding":
            return cls(request_id, uri, model, (), timings_ms, batch_size, version,
                       np.asarray(value, dtype=np.dtype(output.dtype).newbyteorder("<")))
        return cls(request_id, uri, model, tuple(value), timings_ms, batch_size, version)


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
_JSON_STRUCTURE = re.compile(r'["{}\[\],]')
_WHITESPACE = re.compile(r"[ \t\n\r]*")


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
    model = data.get("model")
    if "model" in data and not (isinstance(model, str) and 0 < len(model) <= MAX_MODEL_CHARS
                                  and _valid_unicode(model)):
        raise InvalidEvent(f"field 'model' must be a model name (a string of 1 to {MAX_MODEL_CHARS} characters)")
    attributes = {k: v for k, v in data.items() if k not in ("id", "uri", "model")}
    return ImageRequest(data["id"], data["uri"], attributes, model)


def salvage_id(raw: bytes | str, *, max_bytes: int = SALVAGE_MAX_BYTES) -> tuple[str | None, str | None]:
    """Best effort (id, uri) of an event that failed to parse, so its error can be matched.

    Never raises. An id or URI given twice, or not valid Unicode, is not salvaged. An event
    over `max_bytes` is not parsed: its first `max_bytes` are scanned for top-level ``id`` and
    ``uri`` strings (`_scan_prefix`); an id cut by that limit is salvaged only when it is at
    least `MAX_ID_CHARS` long (its result then shows it cut and marked), a cut URI never.
    """
    try:
        if _size(raw) > max_bytes:
            found = _scan_prefix(raw, max_bytes)
            rid, uri = found.get("id"), found.get("uri")
        else:
            rid, uri = _salvage_parsed(raw)
    except Exception:  # noqa: BLE001 - whatever the bytes are, there is nothing to salvage
        return None, None
    return (rid if isinstance(rid, str) and _valid_unicode(rid) else None,
            uri if isinstance(uri, str) and _valid_unicode(uri) else None)


def _salvage_parsed(raw: bytes | str) -> tuple[object, object]:
    ambiguous = None
    try:
        data = _loads(raw)
    except _DuplicateKey as exc:
        ambiguous, data = exc.key, json.loads(raw)  # the other fields are still clear
    if not isinstance(data, dict):
        return None, None
    return (None if ambiguous == "id" else data.get("id")), (None if ambiguous == "uri" else data.get("uri"))


def _scan_prefix(raw: bytes | str, max_bytes: int) -> dict[str, str]:
    """The top-level ``id``/``uri`` string values in the first `max_bytes` of a JSON object.

    Linear in `max_bytes`, never recursive; stops at the first thing it cannot read. A key
    seen twice is dropped (ambiguous). A string cut by the limit counts only for ``id`` and
    only when at least `MAX_ID_CHARS` of it were read.
    """
    if isinstance(raw, str):
        text = raw[:max_bytes]
    else:  # strict UTF-8; a character cut by the limit is left out, invalid bytes raise
        text = codecs.getincrementaldecoder("utf-8")().decode(bytes(raw[:max_bytes]), final=False)
    found: dict[str, object] = {}
    twice: set[str] = set()
    pos: int | None = _WHITESPACE.match(text).end()
    if not text.startswith("{", pos):
        return {}
    pos += 1
    while pos is not None:
        pos = _WHITESPACE.match(text, pos).end()
        if not text.startswith('"', pos):
            break
        try:
            key, pos = json.decoder.scanstring(text, pos + 1)
        except ValueError:
            break
        pos = _WHITESPACE.match(text, pos).end()
        if not text.startswith(":", pos):
            break
        pos = _WHITESPACE.match(text, pos + 1).end()
        if key in found:
            twice.add(key)
        found[key], pos = _scan_value(text, pos, cut_ok=key == "id")
        if pos is not None:
            pos = _WHITESPACE.match(text, pos).end()
            pos = pos + 1 if text.startswith(",", pos) else None
    return {k: v for k, v in found.items() if k in ("id", "uri") and k not in twice and isinstance(v, str)}


def _scan_value(text: str, pos: int, *, cut_ok: bool) -> tuple[object, int | None]:
    """(the string at `pos`, or None for any other value; where it ends, None if the text does)."""
    if text.startswith('"', pos):
        try:
            return json.decoder.scanstring(text, pos + 1)
        except ValueError:
            return (_cut_string(text[pos + 1:]) if cut_ok else None), None
    depth = 0
    while True:  # skip a number, literal, array or object
        match = _JSON_STRUCTURE.search(text, pos)
        if match is None:
            return None, None
        char, pos = match.group(), match.end()
        if char == '"':
            try:
                pos = json.decoder.scanstring(text, pos)[1]
            except ValueError:
                return None, None
        elif char in "[{":
            depth += 1
        elif depth == 0:  # the ',' or '}' after this value
            return None, pos - 1
        elif char in "]}":
            depth -= 1


def _cut_string(body: str) -> str | None:
    """The text of a JSON string whose closing quote lies past the limit, when that prefix is
    at least MAX_ID_CHARS long (an escape cut in half is dropped)."""
    for drop in range(7):  # the longest escape, \uXXXX, is 6 characters
        try:
            value, end = json.decoder.scanstring(body[:len(body) - drop] + '"', 0)
        except ValueError:
            continue
        if end == len(body) - drop + 1:
            return value if len(value) >= MAX_ID_CHARS else None
    return None


def redact_uri(uri: str | None) -> str | None:
    """The URI as results show it: without anything that could be user info (`uris.public_uri`)."""
    return public_uri(uri)


def _short(text: str, limit: int = 40) -> str:
    """repr() of text, cut to `limit` characters (keys and parser messages may be huge)."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _cap(text: str | None, limit: int) -> tuple[str | None, bool]:
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit], True


def _score(score: float) -> float | None:
    """A score as JSON has it: a model's NaN or infinity (Triton prints them as "nan", "inf") is
    null, since JSON has no such numbers and strict parsers refuse Python's `NaN`."""
    return round(score, 6) if math.isfinite(score) else None


def _dumps(body: dict) -> str:
    # allow_nan=False: a non-finite number left anywhere is a bug (ValueError), never invalid JSON
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not _valid_unicode(text):  # a lone surrogate somewhere: escape it, or UTF-8 encoding fails later
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text


def result_key(result: Result) -> str | None:
    """The result's Kafka key: its request id as the result shows it (cut like `result_to_json`'s)."""
    return _cap(result.id, MAX_ID_CHARS)[0]


def result_to_json(result: Result) -> str:
    """One compact JSON object per result, at most MAX_RESULT_BYTES of UTF-8."""
    return written_result(result)[1]


def written_result(result: Result) -> tuple[Result, str]:
    """The result as it is written, and its JSON (`result_to_json`): a result too large to write
    is written as a small result_too_large error, and that error is what this returns."""
    rid, id_cut = _cap(result.id, MAX_ID_CHARS)
    uri, uri_cut = _cap(redact_uri(result.uri), MAX_URI_CHARS)
    body: dict[str, Any] = {"id": rid, "uri": uri}
    if id_cut:
        body["id_truncated"] = True
    if uri_cut:
        body["uri_truncated"] = True
    if isinstance(result, Prediction):
        body.update(model=result.model, model_version=result.model_version, batch_size=result.batch_size)
        if result.embedding is not None:  # base64 of the little-endian vector (README: "Embeddings")
            vector = result.embedding
            body.update(embedding=base64.b64encode(vector.tobytes()).decode("ascii"), dim=int(vector.size),
                        dtype=vector.dtype.name)
        else:
            body["top_k"] = [{"label": l.label, "index": l.index, "score": _score(l.score)} for l in result.top_k]
    else:
        message, cut = _cap(result.message, MAX_MESSAGE_CHARS)
        body["error"] = {"code": result.code, "stage": result.stage, "retryable": result.retryable,
                         "message": message + " [truncated]" if cut else message}
    body["timings_ms"] = {k: round(v, 3) for k, v in result.timings_ms.items()}
    text = _dumps(body)
    size = len(text.encode("utf-8"))
    if size <= MAX_RESULT_BYTES:
        return result, text
    # Last resort (a model with very many or very long labels): a small error in its place.
    error = ErrorResult(rid[:256] if rid else rid, uri[:256] if uri else uri, RESULT_TOO_LARGE, "result",
                        f"the result would be {size} bytes, limit {MAX_RESULT_BYTES}", False, result.timings_ms)
    small = {"id": error.id, "uri": error.uri,
             "error": {"code": error.code, "stage": error.stage, "retryable": False, "message": error.message},
             "timings_ms": body["timings_ms"]}
    if rid and len(rid) > 256 or id_cut:
        small["id_truncated"] = True
    if uri and len(uri) > 256 or uri_cut:
        small["uri_truncated"] = True
    return error, _dumps(small)
