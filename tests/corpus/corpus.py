"""The bad-input corpus as data: image files and raw events, each with its expected outcome.

`cases(bucket, prefix, nonce)` materialises manifest.json for one run: a list of `Case`s, one
Kafka record each, whose images are expected under ``s3://bucket/prefix<file>``. Unit tests
run the same cases without servers (`tests/unit/test_security_corpus.py`); the integration
test publishes them to a real job (`tests/integration/test_hostile_input.py`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from streaming.events import MAX_ID_CHARS

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
MANIFEST = HERE / "manifest.json"
GOOD_IMAGE = "baseline.jpg"
# The limits the corpus assumes (PipelineConfig defaults; the generators below are sized by them).
JOB_SETTINGS = {"max_event_bytes": 64 * 1024, "max_uri_chars": 2048, "max_pixels": 64_000_000}


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes  # the Kafka record value
    expect: str  # "prediction" or an error code
    id: str | None  # the id its result must carry (None: no id can be read from it)
    image: str | None = None  # the corpus file it points at, for image cases


def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def image_files() -> dict[str, bytes]:
    return {entry["file"]: (IMAGES / entry["file"]).read_bytes() for entry in manifest()["images"]}


def _generated(name: str, event_id: str, good: str, bucket: str) -> str:
    if name == "deep_nesting":
        return '{"id": "%s", "uri": "%s", "x": %s%s}' % (event_id, good, "[" * 20_000, "]" * 20_000)
    if name == "very_long_uri":
        return json.dumps({"id": event_id, "uri": f"s3://{bucket}/" + "k" * (JOB_SETTINGS["max_uri_chars"] + 10)})
    if name == "very_long_id":
        return json.dumps({"id": event_id + "-" + "i" * 30_000, "uri": good})
    if name == "event_too_large":
        return json.dumps({"id": event_id, "uri": good, "padding": "p" * (JOB_SETTINGS["max_event_bytes"] + 100)})
    raise KeyError(name)


def cases(bucket: str, prefix: str, nonce: str) -> list[Case]:
    """Every image and event case of the manifest, with ids unique to `nonce`."""
    data = manifest()
    good, missing = f"s3://{bucket}/{prefix}{GOOD_IMAGE}", f"s3://{bucket}/{prefix}does-not-exist.jpg"
    out = []
    for entry in data["images"]:
        event_id = f"{nonce}-img-{entry['file']}"
        raw = json.dumps({"id": event_id, "uri": f"s3://{bucket}/{prefix}{entry['file']}"}).encode()
        out.append(Case(f"image {entry['file']}", raw, entry["expect"], event_id, entry["file"]))
    for index, entry in enumerate(data["events"]):
        event_id = f"{nonce}-ev{index}"
        if "gen" in entry:
            text = _generated(entry["gen"], event_id, good, bucket)
        else:
            text = (entry["raw"].replace("{id}", event_id).replace("{good}", good).replace("{missing}", missing)
                    .replace("{bucket}", bucket).replace("{nonce}", nonce).replace("{zeros5000}", "0" * 5000))
        expected_id = entry["id"]
        if expected_id == "own":  # as results carry it: cut to MAX_ID_CHARS (and marked id_truncated)
            expected_id = json.loads(text)["id"][:MAX_ID_CHARS]
        out.append(Case(f"event {entry['name']}", text.encode("utf-8"), entry["expect"], expected_id))
    return out
