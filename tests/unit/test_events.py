import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.errors import EventTooLarge, InvalidEvent, ObjectNotFound
from streaming.events import ErrorResult, Label, Prediction, parse_request, redact_uri, result_to_json, salvage_id


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


# -- hardening -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw, fragment", [
    (b'{"id": "a", "id": "b", "uri": "s3://b/k"}', "duplicate key 'id'"),
    (b'{"id": "a", "uri": "s3://b/k", "t": 1, "t": 2}', "duplicate key 't'"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b'{"id": "a", "uri": "s3://b/k", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
    (b'{"id": "\\ud800", "uri": "s3://b/k"}', "'id' is not valid Unicode"),
    (b'{"id": "a", "uri": "s3://b/\\udfff"}', "'uri' is not valid Unicode"),
    (b'{"id": 1' + b"0" * 5000 + b', "uri": "s3://b/k"}', "not JSON"),
    (b'{"id": "a", "uri": "s3://b/k"} trailing', "not JSON"),
    (b"", "not JSON"),
    (b"null", "got NoneType"),
    (b'"just a string"', "got str"),
    (b'{"id": null, "uri": "s3://b/k"}', "'id' must be a non-empty string"),
    (b'{"id": ["a"], "uri": "s3://b/k"}', "'id' must be a non-empty string"),
    (b'{"id": "a", "uri": {"s3": "b/k"}}', "'uri' must be a non-empty string"),
    (b'{"id": true, "uri": "s3://b/k"}', "'id' must be a non-empty string"),
])
def test_hostile_events_are_invalid_events(raw, fragment):
    with pytest.raises(InvalidEvent, match=fragment.replace("(", r"\(").replace("[", r"\[")) as caught:
        parse_request(raw)
    assert len(caught.value.message) < 300  # never the whole event back


def test_unicode_keys_and_values_are_fine():
    request = parse_request('{"id": "ид-😀", "uri": "s3://b/ключ.jpg", "ключ": "значение", "ｉｄ": 1}')
    assert request.id == "ид-😀" and request.attributes == {"ключ": "значение", "ｉｄ": 1}


def test_event_size_counts_bytes_even_for_unencodable_text():
    with pytest.raises(EventTooLarge):
        parse_request('{"id": "\ud800' + "x" * 100 + '"}', max_bytes=50)


def test_salvage_never_raises_and_never_guesses():
    assert salvage_id(b"[" * 100_000) == (None, None)
    assert salvage_id(b'{"id": "a", "id": "b", "uri": "s3://b/k"}') == (None, "s3://b/k")
    assert salvage_id(b'{"id": "a", "uri": "s3://b/k", "t": 1, "t": 2}') == ("a", "s3://b/k")
    assert salvage_id(b'{"id": "\\ud800", "uri": "s3://b/k"}') == (None, "s3://b/k")
    assert salvage_id(b"\xff\xfe\x00") == (None, None)


def test_results_always_encode_and_hide_user_info():
    err = ErrorResult.from_error("\ud800", "https://user:pa55word@host/\udfff", InvalidEvent("bad"))
    text = result_to_json(err)
    text.encode("utf-8")  # would raise with a lone surrogate in it
    body = json.loads(text)
    assert "pa55word" not in text and body["uri"].startswith("https://***@host/")
    assert result_to_json(ErrorResult.from_error("ид", "s3://b/ключ", InvalidEvent("x"))).count("ключ") == 1


@pytest.mark.parametrize("uri, shown", [
    ("https://u:p@h/x", "https://***@h/x"), ("http://@h/", "http://***@h/"), ("s3://b/a@b.jpg", "s3://b/a@b.jpg"),
    ("https://h/a?u=x@y", "https://h/a?u=x@y"), ("https://h#@x", "https://h#@x"), (None, None),
])
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                            max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.dictionaries(st.sampled_from(["id", "uri", "x", "ид", ""]), _json_values, max_size=5).map(json.dumps),
    st.builds(lambda i, u: json.dumps({"id": i, "uri": u}), _json_values, _json_values),
))
def test_parser_is_total(raw):
    """Any input: a request with non-empty, encodable id and uri, or InvalidEvent/EventTooLarge;
    salvage_id and result_to_json never raise either."""
    try:
        request = parse_request(raw, max_bytes=200)
    except (InvalidEvent, EventTooLarge) as exc:
        rid, uri = salvage_id(raw)
        result_to_json(ErrorResult.from_error(rid, uri, exc)).encode("utf-8")
        return
    assert isinstance(request.id, str) and request.id and isinstance(request.uri, str) and request.uri
    request.id.encode("utf-8")
    request.uri.encode("utf-8")
    assert salvage_id(raw) == (request.id, request.uri)


def test_bytes_must_be_strict_utf8_without_bom():
    with pytest.raises(InvalidEvent):
        parse_request(b"\xef\xbb\xbf" + b'{"id": "a", "uri": "s3://b/k"}')
    with pytest.raises(InvalidEvent):
        parse_request('{"id": "a", "uri": "s3://b/k"}'.encode("utf-16"))
    assert parse_request('{"id": "é", "uri": "s3://b/k"}'.encode("utf-8")).id == "é"
