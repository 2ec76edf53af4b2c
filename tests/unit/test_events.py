import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.contract import Output
from streaming.errors import EventTooLarge, InvalidEvent, ObjectNotFound
from streaming.events import (MAX_ID_CHARS, MAX_MESSAGE_CHARS, MAX_RESULT_BYTES, SALVAGE_MAX_BYTES, ErrorResult,
                              Label, Prediction, parse_request, redact_uri, result_key, result_to_json,
                              salvage_id, written_result)
from streaming.uris import MAX_URI_CHARS


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
    ok = json.loads(result_to_json(Prediction("a", "s3://b/k", "m", (Label("ladybug", 301, 0.97),), {"total": 1.5},
                                              model_version="2")))
    assert ok == {"id": "a", "uri": "s3://b/k", "model": "m", "model_version": "2",
                  "top_k": [{"label": "ladybug", "index": 301, "score": 0.97}], "batch_size": 1,
                  "timings_ms": {"total": 1.5}}
    err = json.loads(result_to_json(ErrorResult.from_error("a", "s3://b/k", ObjectNotFound("no such key"))))
    assert err["error"] == {"code": "object_not_found", "stage": "fetch", "message": "no such key",
                            "retryable": False}


def test_a_non_finite_score_is_null_and_the_result_is_strict_json():
    from streaming.infer import parse_classification

    labels = parse_classification(np.array([b"nan:3:cat", b"-nan:1:dog", b"inf:0:bird", b"0.25:2:fish"], dtype=object))
    text = result_to_json(Prediction("a", "s3://b/k", "m", labels))

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    body = json.loads(text, parse_constant=refuse)  # what a strict parser (Java, JavaScript) accepts
    assert [(l["label"], l["score"]) for l in body["top_k"]] == [("cat", None), ("dog", None), ("bird", None),
                                                                ("fish", 0.25)]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_an_embedding_result_carries_the_vector_as_base64_little_endian(dtype):
    vector = np.random.default_rng(1).standard_normal(1280).astype(np.float32)
    prediction = Prediction.of("a", "s3://b/k", "enc", "3", Output("embedding", dim=1280, dtype=dtype), vector,
                               {"total": 2.0}, 4)
    body = json.loads(result_to_json(prediction))
    assert (body["dim"], body["dtype"], body["model_version"]) == (1280, dtype, "3") and "top_k" not in body
    decoded = np.frombuffer(base64.b64decode(body["embedding"]), dtype="<f2" if dtype == "float16" else "<f4")
    assert decoded.shape == (1280,)
    np.testing.assert_allclose(decoded, vector, rtol=1e-3 if dtype == "float16" else 0, atol=1e-3 if dtype == "float16" else 0)


def test_the_largest_embedding_a_contract_allows_fits_a_result():
    from streaming.contract import MAX_EMBEDDING_DIM
    vector = np.ones(MAX_EMBEDDING_DIM, np.float32)
    prediction = Prediction.of("x" * 5000, "s3://b/" + "k" * 9000, "enc", "1",
                               Output("embedding", dim=MAX_EMBEDDING_DIM), vector, {}, 1)
    body = json.loads(result_to_json(prediction))
    assert body["dim"] == MAX_EMBEDDING_DIM and len(result_to_json(prediction).encode()) <= MAX_RESULT_BYTES


def test_the_result_key_is_the_id_the_result_shows():
    assert result_key(Prediction("a", "s3://b/k", "m")) == "a"
    long = ErrorResult("i" * (MAX_ID_CHARS + 50), None, "invalid_event", "parse", "bad")
    assert result_key(long) == json.loads(result_to_json(long))["id"] == "i" * MAX_ID_CHARS
    assert result_key(ErrorResult(None, None, "invalid_event", "parse", "bad")) is None


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
    # issue 12 item 8: what the old pattern let through
    ("https://svc:hunt/er2@host/a.jpg", "https://***@host/a.jpg"),
    ("s3://AKIAX:sec#ret@bucket/key.jpg", "s3://***@bucket/key.jpg"),
    (" https://u:pw@h/x", "https://***@h/x"), ("https://u:pw@@h/x", "https://***@h/x"),
    ("https://u:p@h/a@b.jpg", "https://***@b.jpg"), ("u:pw@h/x", "***@h/x"), ("pw:x://u:pw@h/", "***@h/"),
    # a token without a colon after extra slashes: urlsplit and WHATWG URL read it as the user
    ("//TOKEN@evil.example/x.jpg", "***@evil.example/x.jpg"), ("/\t/TOKEN@evil.example/x", "***@evil.example/x"),
    ("https:///TOKEN@host.example/a.jpg", "https://***@host.example/a.jpg"),
    ("https:////TOKEN@host.example/a.jpg", "https://***@host.example/a.jpg"),
    ("s3:///AKIAEXAMPLE@bucket/k.jpg", "s3://***@bucket/k.jpg"),
    ("https://images.example.com/a@b.jpg", "https://images.example.com/a@b.jpg"),
    ("file:///srv/img@2x.png", "file:///srv/img@2x.png"), ("file:///img@2x.png", "file:///img@2x.png"),
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


# -- results are small whatever the event was (issue 12 item 1) ----------------------------

def _oversized(head: bytes, size: int = 3_000_000) -> bytes:
    return head + b"p" * size + b'"}'


@pytest.mark.parametrize("raw, expected", [
    (b'{"id": "a", "uri": "s3://b/k", "pad": "' + b"p" * 3_000_000 + b'"}', ("a", "s3://b/k")),
    (b'{"x": [1, {"y": "}]"}], "id": "a", "n": -1.5e3, "uri": "s3://b/k", "pad": "' + b"p" * 100_000 + b'"}',
     ("a", "s3://b/k")),
    (b'{"id": "a", "uri": "s3://b/k", "id": "b", "pad": "' + b"p" * 100_000 + b'"}', (None, "s3://b/k")),
    (b'{"pad": "' + b"p" * 100_000 + b'", "id": "a", "uri": "s3://b/k"}', (None, None)),  # past the limit
    (b'{"uri": "s3://b/' + b"k" * 100_000 + b'", "id": "a"}', (None, None)),  # a cut URI is never shown
    (b'{"id": "' + b"i" * 500 + b'"' + b" " * 100_000 + b', "uri": 1}', ("i" * 500, None)),
    (b"[" * 100_000, (None, None)),
    (b'{"id": "\\ud800", "uri": "s3://b/k", "pad": "' + b"p" * 100_000 + b'"}', (None, "s3://b/k")),
    (b"\xff" + b'{"id": "a"' + b" " * 100_000 + b"}", (None, None)),
])
def test_salvage_of_an_oversized_event_scans_only_its_beginning(raw, expected):
    assert len(raw) > SALVAGE_MAX_BYTES
    assert salvage_id(raw) == expected


def test_salvage_never_reads_past_its_limit():
    head = b'{"id": "a", "uri": "s3://b/k", "pad": "'
    raw = head + b"p" * (SALVAGE_MAX_BYTES - len(head)) + b"\xff\xfe not even UTF-8 after the limit"
    assert salvage_id(raw) == ("a", "s3://b/k")
    cut_char = b'{"id": "' + "é".encode() * SALVAGE_MAX_BYTES  # the limit falls inside a character
    assert salvage_id(cut_char)[0] == "é" * ((SALVAGE_MAX_BYTES - 8) // 2)


@pytest.mark.parametrize("escape", [b"x", b"\\u00e9", b"\\n", b"\\\\", "😀".encode()])
def test_a_huge_id_is_salvaged_cut_and_marked(escape):
    raw = b'{"id": "' + escape * 1_000_000 + b'", "uri": "s3://b/k"}'
    rid, uri = salvage_id(raw)
    assert uri is None and rid and len(rid) >= MAX_ID_CHARS and len(set(rid)) == 1
    body = json.loads(result_to_json(ErrorResult.from_error(rid, uri, EventTooLarge("too large"))))
    assert body["id_truncated"] is True and body["id"] == rid[:MAX_ID_CHARS]
    assert body["error"]["code"] == "event_too_large"


def test_a_short_cut_id_is_not_guessed():
    raw = b'{"uri": "s3://b/k", "pad": "' + b"p" * (SALVAGE_MAX_BYTES - 100) + b'", "id": "' + b"i" * 3_000_000 + b'"}'
    assert salvage_id(raw) == (None, "s3://b/k")


def test_capped_fields_are_marked_and_short_ones_are_not():
    err = ErrorResult.from_error("i" * (MAX_ID_CHARS + 1), "s3://b/" + "k" * MAX_URI_CHARS, InvalidEvent("m" * 10_000))
    body = json.loads(result_to_json(err))
    assert body["id"] == "i" * MAX_ID_CHARS and body["id_truncated"] is True
    assert len(body["uri"]) == MAX_URI_CHARS and body["uri_truncated"] is True
    assert body["error"]["message"] == "m" * MAX_MESSAGE_CHARS + " [truncated]"
    body = json.loads(result_to_json(ErrorResult.from_error("i" * MAX_ID_CHARS, "s3://b/k", InvalidEvent("m"))))
    assert "id_truncated" not in body and "uri_truncated" not in body and body["error"]["message"] == "m"


def test_a_result_that_cannot_fit_becomes_a_small_error():
    labels = tuple(Label("l" * 10_000, i, 0.5) for i in range(100))  # a model with absurd labels
    text = result_to_json(Prediction("a" * 5000, "s3://b/k", "m", labels))
    body = json.loads(text)
    assert len(text.encode()) < 2048 and body["error"]["code"] == "result_too_large"
    assert body["id"] == "a" * 256 and body["id_truncated"] is True and body["error"]["retryable"] is False
    written, same = written_result(Prediction("a" * 5000, "s3://b/k", "m", labels))  # what the operator counts
    assert same == text and isinstance(written, ErrorResult) and written.code == "result_too_large"
    prediction = Prediction("a", "s3://b/k", "m", labels[:1])
    assert written_result(prediction) == (prediction, result_to_json(prediction))


_any_text = st.text(st.one_of(st.characters(), st.sampled_from(["\ud800", "\x00", "\U0001F600", "\\", '"'])),
                    max_size=20)


@settings(max_examples=200, deadline=None)
@given(rid=st.builds(lambda t, n: t * n, _any_text, st.integers(0, 5000)),
       uri=st.builds(lambda t, n: t * n, _any_text, st.integers(0, 5000)),
       message=st.builds(lambda t, n: t * n, _any_text, st.integers(0, 5000)),
       prediction=st.booleans())
def test_every_result_is_bounded_and_encodes(rid, uri, message, prediction):
    """Worst cases included: ids, URIs and messages of control characters, lone surrogates and
    astral characters (which JSON escapes to 6 and 12 bytes each)."""
    result = (Prediction(rid, uri, "m", (Label(message[:100], 1, 0.5),)) if prediction
              else ErrorResult.from_error(rid, uri, InvalidEvent(message)))
    data = result_to_json(result).encode("utf-8")
    assert len(data) <= MAX_RESULT_BYTES
    body = json.loads(data)
    assert ("error" in body and body["error"]["code"] == "result_too_large") or (
        body["id"] == rid[:MAX_ID_CHARS] and body.get("id_truncated", False) == (len(rid) > MAX_ID_CHARS))
