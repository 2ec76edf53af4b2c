import json

import pytest

from streaming.errors import EventTooLarge, InvalidEvent, ObjectNotFound
from streaming.events import ErrorResult, Label, Prediction, parse_request, result_to_json, salvage_id


def test_parse_keeps_extra_fields_as_attributes():
    request = parse_request(b'{"id": "a1", "uri": "s3://b/k.jpg", "tenant": "t"}')
    assert (request.id, request.uri, dict(request.attributes)) == ("a1", "s3://b/k.jpg", {"tenant": "t"})


@pytest.mark.parametrize("raw, fragment", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"uri": "s3://b/k"}', "missing field(s): id"),
    (b'{"id": 5, "uri": "s3://b/k"}', "'id' must be a non-empty string"),
    (b'{"id": "x", "uri": ""}', "'uri' must be a non-empty string"),
    (b"\xff\xfe", "not JSON"),
])
def test_malformed_events_raise_invalid_event(raw, fragment):
    with pytest.raises(InvalidEvent, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_request(raw)


def test_oversized_event_is_refused_before_parsing():
    with pytest.raises(EventTooLarge):
        parse_request(b'{"id": "a", "uri": "' + b"x" * 2000 + b'"}', max_bytes=1000)


def test_salvage_id_recovers_what_it_can():
    assert salvage_id(b'{"id": "a", "uri": 3}') == ("a", None)
    assert salvage_id(b"garbage") == (None, None)


def test_result_json_shapes():
    ok = json.loads(result_to_json(Prediction("a", "s3://b/k", "m", (Label("ladybug", 301, 0.97),), {"total": 1.5})))
    assert ok == {"id": "a", "uri": "s3://b/k", "model": "m",
                  "top_k": [{"label": "ladybug", "index": 301, "score": 0.97}], "batch_size": 1,
                  "timings_ms": {"total": 1.5}}
    err = json.loads(result_to_json(ErrorResult.from_error("a", "s3://b/k", ObjectNotFound("no such key"))))
    assert err["error"] == {"code": "object_not_found", "stage": "fetch", "message": "no such key",
                            "retryable": False}
