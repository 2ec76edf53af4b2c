"""Bring your own model, on the real stack: models imported with `imgstream models import` are
served by Triton, and the job follows each one's contract (read from Triton, not from flags).

- An EfficientNet-Lite1 exported as users export from PyTorch (float32 NCHW, torchvision
  mean/std, logits) agrees with the built-in efficientnet_lite1 through the job's request path.
- An embedding model's results carry unit vectors (base64 float16) instead of labels.
- A running Flink job follows a new version with another input size and output kind, without a
  restart; results are keyed by request id and name the version that served them.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections import Counter

import numpy as np
import pytest
from kafka import KafkaConsumer

from streaming.events import Prediction, result_to_json
from streaming.ops import kafka_io
from streaming.pipeline import ImagePipeline
from streaming.stack import s3
from tests.integration.job_support import num_restarts, results_when_complete, start_job, stop_job
from tests.integration.model_support import CLASSES_EXAMPLE, EMBEDDING_EXAMPLE, import_example, remove_model

PHOTOS = 8


@pytest.fixture(scope="module")
def photo_uris(layout, prepared, test_bucket) -> list[str]:
    client = s3.s3_client(layout)
    uris = []
    for path in [p for p in prepared.samples if p.suffix.lower() in (".jpg", ".png")][:PHOTOS]:
        client.put_object(Bucket=test_bucket, Key=f"own/{path.name}", Body=path.read_bytes())
        uris.append(f"s3://{test_bucket}/own/{path.name}")
    return uris


def predictions(config, model: str, uris: list[str]) -> list[Prediction]:
    with ImagePipeline(dataclasses.replace(config, model_name=model)) as pipe:
        results = [pipe.process(json.dumps({"id": f"p{i}", "uri": uri})) for i, uri in enumerate(uris)]
    assert all(isinstance(r, Prediction) for r in results), [r for r in results if not isinstance(r, Prediction)]
    return results


def test_an_imported_pytorch_style_lite1_agrees_with_the_built_in_one(pipeline_config, imported_models, photo_uris):
    ours = predictions(pipeline_config, imported_models[CLASSES_EXAMPLE], photo_uris)
    builtin = predictions(pipeline_config, "efficientnet_lite1", photo_uris)
    assert [p.top_k[0].index for p in ours] == [p.top_k[0].index for p in builtin]
    for mine, theirs in zip(ours, builtin):
        assert abs(mine.top_k[0].score - theirs.top_k[0].score) < 0.05, (mine.top_k[0], theirs.top_k[0])
        assert len(mine.top_k) == 5 and mine.model_version == "1"


def test_an_embedding_model_returns_unit_vectors(pipeline_config, imported_models, photo_uris):
    results = predictions(pipeline_config, imported_models[EMBEDDING_EXAMPLE], photo_uris + photo_uris[:1])
    vectors = []
    for result in results:
        body = json.loads(result_to_json(result))
        assert "top_k" not in body and (body["dim"], body["dtype"]) == (1280, "float16")
        vectors.append(np.frombuffer(base64.b64decode(body["embedding"]), "<f2").astype(np.float32))
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    np.testing.assert_array_equal(vectors[0], vectors[-1])  # the same photo, the same vector
    similarity = np.asarray(vectors[:PHOTOS]) @ np.asarray(vectors[:PHOTOS]).T
    assert similarity[~np.eye(len(similarity), dtype=bool)].max() < 0.99  # different photos differ


def test_events_choose_among_the_allowed_models(pipeline_config, imported_models, photo_uris):
    mine = imported_models[CLASSES_EXAMPLE]
    config = dataclasses.replace(pipeline_config, allowed_models=(mine, imported_models[EMBEDDING_EXAMPLE]))
    events = [{"id": "default", "uri": photo_uris[0]}, {"id": "mine", "uri": photo_uris[0], "model": mine},
              {"id": "vector", "uri": photo_uris[0], "model": imported_models[EMBEDDING_EXAMPLE]},
              {"id": "other", "uri": photo_uris[0], "model": "efficientnet_lite2"}]
    with ImagePipeline(config) as pipe:
        results = {e["id"]: json.loads(result_to_json(pipe.process(json.dumps(e)))) for e in events}
    assert results["default"]["model"] == "efficientnet_lite0" and len(results["default"]["top_k"]) == 5
    assert results["mine"]["model"] == mine and results["mine"]["top_k"][0]["index"] == \
        results["default"]["top_k"][0]["index"]  # both models agree on this photo's class
    assert results["vector"]["dim"] == 1280 and "top_k" not in results["vector"]
    assert results["other"]["error"]["code"] == "model_not_allowed"


def keyed_records(bootstrap: str, topic: str) -> list[tuple[dict, dict]]:
    consumer = kafka_io.kafka_client(KafkaConsumer, topic, bootstrap_servers=bootstrap, group_id=None,
                                     auto_offset_reset="earliest", isolation_level="read_committed",
                                     consumer_timeout_ms=3000)
    try:
        return [(json.loads(m.key), json.loads(m.value)) for m in consumer]
    finally:
        consumer.close()


def test_a_running_job_follows_a_new_version_and_keys_results_by_id(layout, prepared, pipeline_config,
                                                                    photo_uris, tmp_path):
    name = f"it_versions_{uuid.uuid4().hex[:8]}"
    import_example(EMBEDDING_EXAMPLE, name, tmp_path)  # version 1: 224 px in, 1280-d vectors out
    job = None
    try:
        job = start_job(layout, prepared, dataclasses.replace(pipeline_config, model_name=name), "own-versions")
        first = kafka_io.make_requests(photo_uris * 5)
        kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, first)
        got = results_when_complete(layout.kafka_bootstrap, job.results_topic, len(first), settle_s=3)
        assert {(r.get("model_version"), "embedding" in r) for r in got} == {("1", True)}, got[:2]

        # version 2: another architecture, size (240) and output kind (classes), same name
        import_example(CLASSES_EXAMPLE, name, tmp_path)
        second = kafka_io.make_requests(photo_uris * 5)
        kafka_io.publish(layout.kafka_bootstrap, job.requests_topic, second)
        ids = {e["id"] for e in second}
        got = results_when_complete(layout.kafka_bootstrap, job.results_topic, len(first) + len(second), settle_s=3)
        late = [r for r in got if r["id"] in ids]
        assert len(late) == len(second), len(late)
        assert [r for r in late if "error" in r] == []
        assert {(r["model_version"], "top_k" in r) for r in late} == {("2", True)}
        assert num_restarts(layout, job.id) == 0

        records = keyed_records(layout.kafka_bootstrap, job.results_topic)
        assert all(key == {"id": value["id"]} for key, value in records)
        assert Counter(value["id"] for _, value in records) == Counter(e["id"] for e in first + second)
    finally:
        if job is not None:
            stop_job(layout, job)
        remove_model(layout, name)
