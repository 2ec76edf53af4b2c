"""Request and result records, and their JSON wire format.

A request is `{"id": str, "uri": str, ...}`; extra fields are kept in `attributes` and
echoed back. A result is either a prediction or an error, always with the request's id.
"""
from __future__ import annotations

import json
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


def parse_request(raw: bytes | str, *, max_bytes: int = 64 * 1024) -> ImageRequest:
    """Parse one event. Raises InvalidEvent / EventTooLarge naming what is wrong."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise EventTooLarge(f"event is {size} bytes, limit {max_bytes}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("id", "uri") if k not in data]
    if missing:
        raise InvalidEvent(f"missing field(s): {', '.join(missing)}")
    for key in ("id", "uri"):
        if not isinstance(data[key], str) or not data[key]:
            raise InvalidEvent(f"field {key!r} must be a non-empty string")
    attributes = {k: v for k, v in data.items() if k not in ("id", "uri")}
    return ImageRequest(data["id"], data["uri"], attributes)


def salvage_id(raw: bytes | str) -> tuple[str | None, str | None]:
    """Best effort (id, uri) of an event that failed to parse, so its error can be matched."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    rid, uri = data.get("id"), data.get("uri")
    return (rid if isinstance(rid, str) else None, uri if isinstance(uri, str) else None)


def result_to_json(result: Result) -> str:
    """One compact JSON object per result."""
    if isinstance(result, Prediction):
        body: dict[str, Any] = {
            "id": result.id, "uri": result.uri, "model": result.model,
            "top_k": [{"label": l.label, "index": l.index, "score": round(l.score, 6)} for l in result.top_k],
            "batch_size": result.batch_size,
        }
    else:
        body = {"id": result.id, "uri": result.uri,
                "error": {"code": result.code, "stage": result.stage, "message": result.message,
                          "retryable": result.retryable}}
    body["timings_ms"] = {k: round(v, 3) for k, v in result.timings_ms.items()}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
