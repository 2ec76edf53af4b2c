"""The one request path (`AsyncImagePipeline.process`) with stand-ins for the store, the decoder
and Triton: timings, micro-batches, the cache on the path, timeouts, internal errors, and the
blocking `ImagePipeline` as a wrapper over the same path. The corpus test runs it with real
decoding (test_security_corpus.py), the integration test with the real servers."""
from __future__ import annotations

import contextlib
import asyncio
import dataclasses
import json
import threading
import time

import numpy as np
import pytest

from streaming.contract import Output, lite_contract
from streaming.config import PipelineConfig
from streaming.decode import DecodedImage
from streaming.errors import ModelChanged
from streaming.events import ErrorResult, Label, Prediction
from streaming.fetch import FetchedObject
from streaming.infer import Inferred
from streaming import pipeline as pipeline_module
from streaming.pipeline import AsyncImagePipeline, ImagePipeline

LABELS = (Label("ladybug", 301, 0.9),)


class Store:
    def __init__(self, etag: str | None = None):
        self.etag, self.fetches, self.closed = etag, 0, False

    @contextlib.contextmanager
    def fetching(self, ref, *, if_none_match=None):  # the Fetch protocol: nothing to hold for a stand-in
        yield self.fetch(ref, if_none_match=if_none_match)

    def fetch(self, ref, *, if_none_match=None):
        self.fetches += 1
        if if_none_match is not None and if_none_match == self.etag:
            return FetchedObject(ref.uri, b"", self.etag, 0.5, not_modified=True)
        return FetchedObject(ref.uri, b"image", self.etag, 0.5)

    def close(self):
        self.closed = True


class Decoder:
    def __init__(self):
        self.decodes = 0

    def decode(self, data, resize, *, max_pixels):
        self.decodes += 1
        tensor = np.zeros((resize.size, resize.size, 3), np.uint8)
        tensor.setflags(write=False)
        return DecodedImage(tensor, 640, 480, 2.0, 1.0, "stand-in")


class Classifier:
    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None):
        self.delay_s, self.fail, self.batches = delay_s, fail, []

    contract = lite_contract()

    def infer(self, batch, contract):
        time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        self.batches.append(len(batch))
        return Inferred([LABELS] * len(batch), "1")


def config(**overrides) -> PipelineConfig:
    return PipelineConfig(**{"allowed_buckets": ("photos",), **overrides})


def event(rid: str = "r1", uri: str = "s3://photos/a.jpg") -> str:
    return json.dumps({"id": rid, "uri": uri})


def run(pipeline: AsyncImagePipeline, *raws: str) -> list:
    async def all_of():
        return await asyncio.gather(*(pipeline.process(raw) for raw in raws))
    return asyncio.run(all_of())


@pytest.fixture
def parts():
    return Store(), Decoder(), Classifier()


def test_a_prediction_with_every_stage_timed(parts):
    store, decoder, classifier = parts
    pipeline = AsyncImagePipeline(config(), fetcher=store, classifier=classifier, decoder=decoder)
    pipeline.open()
    try:
        (result,) = run(pipeline, event())
    finally:
        pipeline.close()
    assert isinstance(result, Prediction), result
    assert (result.id, result.uri, result.top_k, result.batch_size) == ("r1", "s3://photos/a.jpg", LABELS, 1)
    assert list(result.timings_ms) == ["fetch", "decode", "resize", "queue", "infer", "total"]
    assert (result.timings_ms["fetch"], result.timings_ms["decode"], result.timings_ms["resize"]) == (0.5, 2.0, 1.0)
    assert pipeline.in_flight == 0
    assert not store.closed  # what was passed in is the caller's to close


def test_requests_in_flight_share_micro_batches(parts):
    store, decoder, classifier = parts
    pipeline = AsyncImagePipeline(config(max_batch_size=8, max_batch_wait_ms=200, infer_concurrency=1),
                                  fetcher=store, classifier=classifier, decoder=decoder)
    pipeline.open()
    try:
        results = run(pipeline, *(event(f"r{i}") for i in range(8)))
    finally:
        pipeline.close()
    assert [r.id for r in results] == [f"r{i}" for i in range(8)]
    assert all(isinstance(r, Prediction) for r in results)
    assert sum(classifier.batches) == 8 and max(classifier.batches) > 1
    assert {r.batch_size for r in results} == set(classifier.batches)


def test_the_cache_is_on_the_path():
    store, decoder = Store(etag="v1"), Decoder()
    with ImagePipeline(config(cache_bytes=10**6), fetcher=store, classifier=Classifier(), decoder=decoder) as pipe:
        first, second = pipe.process(event("r1")), pipe.process(event("r2"))
    assert isinstance(first, Prediction) and isinstance(second, Prediction)
    assert (store.fetches, decoder.decodes) == (2, 1)  # the second fetch was a 304: no decode
    assert second.timings_ms["decode"] == 0


def test_a_request_past_request_timeout_s_gets_request_timeout(parts):
    store, decoder, _ = parts
    with ImagePipeline(config(request_timeout_s=0.2), fetcher=store, classifier=Classifier(delay_s=1.0),
                       decoder=decoder) as pipe:
        result = pipe.process(event("slow"))
        assert pipe.pipeline.in_flight == 0
    assert isinstance(result, ErrorResult)
    assert (result.id, result.code, result.stage, result.retryable) == ("slow", "request_timeout", "pipeline", True)
    assert result.timings_ms["total"] >= 200


def test_a_bug_becomes_an_internal_error_result(parts):
    store, decoder, _ = parts
    with ImagePipeline(config(), fetcher=store, classifier=Classifier(fail=ZeroDivisionError("oops")),
                       decoder=decoder) as pipe:
        result = pipe.process(event("bug"))
    assert isinstance(result, ErrorResult)
    assert (result.id, result.code, result.stage) == ("bug", "internal_error", "unknown")
    assert "ZeroDivisionError: oops" in result.message


def test_a_result_that_cannot_be_written_becomes_an_internal_error_result(parts):
    # answer() is what the Flink operator emits: it must never raise (that fails the task, and the
    # replayed event fails it again), whatever a model or a bug puts into a result
    store, decoder, _ = parts

    class Garbled(Classifier):
        def infer(self, batch, contract):
            return Inferred([(np.float32(0.5),)] * len(batch), "1")  # not labels

    pipeline = AsyncImagePipeline(config(), fetcher=store, classifier=Garbled(), decoder=decoder)
    pipeline.open()
    try:
        result, key, text = asyncio.run(pipeline.answer(event("garbled")))
        good = asyncio.run(AsyncImagePipeline(config(), fetcher=store, classifier=Classifier(),
                                              decoder=decoder).answer(event("x", "s3://elsewhere/a")))
    finally:
        pipeline.close()
    body = json.loads(text)
    assert isinstance(result, ErrorResult) and key == "garbled" and body["id"] == "garbled"
    assert body["error"]["code"] == "internal_error" and "AttributeError" in body["error"]["message"]
    assert "fetch" in body["timings_ms"] and body["timings_ms"]["total"] >= result.timings_ms["fetch"] > 0
    assert good[1] == "x" and json.loads(good[2])["error"]["code"] == "uri_not_allowed"


@pytest.mark.parametrize("raw, code", [
    ('{"id": "only-id"}', "invalid_event"),
    (event("x", "s3://elsewhere/a.jpg"), "uri_not_allowed"),
])
def test_bad_events_are_answered_by_the_same_path_before_and_after_open(parts, raw, code):
    store, decoder, classifier = parts
    unopened = ImagePipeline(config(), fetcher=store, classifier=classifier, decoder=decoder)
    with ImagePipeline(config(), fetcher=store, classifier=classifier, decoder=decoder) as opened:
        results = [unopened.process(raw), opened.process(raw)]
    assert [(r.code, r.id) for r in results] == [(code, results[0].id)] * 2
    assert store.fetches == 0


class ChangingModel(Classifier):
    """Serves 224 until the first batch, which Triton rejects because the model now takes 240 (a
    new version was loaded meanwhile); `changes` more times it changes again."""

    def __init__(self, changes: int = 0):
        super().__init__()
        self.contract, self.changes, self.sizes = lite_contract(224), changes, []

    def infer(self, batch, contract):
        self.sizes.append(batch.shape[1])
        if self.changes >= 0:
            self.changes -= 1
            self.contract = lite_contract(272 if self.contract.resize.size == 240 else 240)
            raise ModelChanged("the model changed")
        return Inferred([LABELS] * len(batch), "2")


def test_a_request_prepared_for_an_old_contract_is_prepared_again_for_the_new_one(parts):
    store, decoder, _ = parts
    model = ChangingModel()
    with ImagePipeline(config(), fetcher=store, classifier=model, decoder=decoder) as pipe:
        result = pipe.process(event("v2"))
    assert isinstance(result, Prediction), result
    assert model.sizes == [224, 240] and decoder.decodes == 2 and result.model_version == "2"


class SlowFor(Decoder):
    """Decodes the object of `uri` after `delay_s` (the stand-in store's bytes name their URI)."""

    def __init__(self, uri: str, delay_s: float):
        super().__init__()
        self.uri, self.delay_s = uri.encode(), delay_s

    def decode(self, data, resize, *, max_pixels):
        if data == self.uri:
            time.sleep(self.delay_s)
        return super().decode(data, resize, max_pixels=max_pixels)


class NamingStore(Store):
    def fetch(self, ref, *, if_none_match=None):
        self.fetches += 1
        return FetchedObject(ref.uri, ref.uri.encode(), None, 0.5)


def test_a_request_prepared_again_never_shares_a_batch_with_one_still_of_the_old_size():
    # a: prepared at 224, its batch rejected (the model now takes 240), prepared again at 240;
    # b: still being prepared at 224 meanwhile, it reaches the batcher while a's second try waits
    # there. Were they one batch, both would be refused, and a, on its last try, would fail.
    model = ChangingModel()
    decoder = SlowFor("s3://photos/b.jpg", 0.45)
    a, b = a_then_b(model, decoder, max_batch_size=2, max_batch_wait_ms=300, infer_concurrency=2)
    assert isinstance(a, Prediction) and isinstance(b, Prediction), (a, b)
    assert model.sizes == [224, 240, 240] and decoder.decodes == 4


def a_then_b(model, decoder, **settings) -> list:
    """The results of requests a and b (s3://photos/a.jpg, b.jpg) sent at once to a pipeline."""
    pipeline = AsyncImagePipeline(config(**settings), fetcher=NamingStore(), classifier=model, decoder=decoder)
    pipeline.open()
    try:
        return run(pipeline, event("a", "s3://photos/a.jpg"), event("b", "s3://photos/b.jpg"))
    finally:
        pipeline.close()


class SwitchingModel(Classifier):
    """Serves `old` until its first batch, then `new` (the same image size): a new version loaded
    while other requests were still being prepared for the old contract."""

    def __init__(self, old, new):
        super().__init__()
        self.contract, self.new, self.served = old, new, []

    def infer(self, batch, contract):
        self.served.append(contract)
        self.contract = self.new
        if self.new.output.kind == "embedding":
            return Inferred([np.arange(self.new.output.dim, dtype=np.float32)] * len(batch), "2")
        return Inferred([LABELS] * len(batch), "2")


class RecordingDecoder(SlowFor):
    def __init__(self, uri, delay_s):
        super().__init__(uri, delay_s)
        self.resizes = []

    def decode(self, data, resize, *, max_pixels):
        self.resizes.append((data.decode().rsplit("/", 1)[-1], resize))
        return super().decode(data, resize, max_pixels=max_pixels)


@pytest.mark.parametrize("change", ["resize", "output"])
def test_a_request_prepared_for_an_old_contract_of_the_same_size_is_prepared_again(change):
    # b is still being prepared for the old contract when a's batch switches the model to a new
    # one that takes the same size but another resize (or gives another output): b must not be
    # answered by the new model from the old preparation, nor read as the old output kind
    old = lite_contract(224)
    new = (dataclasses.replace(old, resize=dataclasses.replace(old.resize, mode="squash")) if change == "resize"
           else dataclasses.replace(old, output=Output("embedding", dim=4)))
    model, decoder = SwitchingModel(old, new), RecordingDecoder("s3://photos/b.jpg", 0.3)
    a, b = a_then_b(model, decoder, max_batch_size=1, infer_concurrency=1)
    assert isinstance(a, Prediction) and isinstance(b, Prediction), (a, b)
    assert model.served == [old, new]  # b's batch went out once, prepared for the new contract
    assert decoder.resizes == [("a.jpg", old.resize), ("b.jpg", old.resize), ("b.jpg", new.resize)]
    assert (b.embedding is not None) == (change == "output") and b.model_version == "2"


def test_a_model_that_keeps_changing_gives_a_retryable_model_changed_error(parts):
    store, decoder, _ = parts
    with ImagePipeline(config(), fetcher=store, classifier=ChangingModel(changes=1), decoder=decoder) as pipe:
        result = pipe.process(event("churn"))
    assert isinstance(result, ErrorResult)
    assert (result.code, result.stage, result.retryable) == ("model_changed", "infer", True)


def test_a_batch_of_tensors_of_an_older_size_is_refused_before_triton(parts):
    store, decoder, classifier = parts
    pipeline = AsyncImagePipeline(config(), fetcher=store, classifier=classifier, decoder=decoder)
    classifier.contract = lite_contract(240)
    with pytest.raises(ModelChanged):
        pipeline.infer(classifier, lite_contract(224), [np.zeros((224, 224, 3), np.uint8)])
    assert classifier.batches == []


def test_an_event_may_name_an_allowed_model_and_batches_are_per_model(parts):
    store, decoder, default = parts
    other = Classifier()
    other.contract = lite_contract(240)
    with ImagePipeline(config(allowed_models=("other",)), fetcher=store, classifier=default, decoder=decoder,
                       models={"other": other}) as pipe:
        plain = pipe.process(event("a"))
        named = pipe.process(json.dumps({"id": "b", "uri": "s3://photos/a.jpg", "model": "other"}))
        refused = pipe.process(json.dumps({"id": "c", "uri": "s3://photos/a.jpg", "model": "secret_model"}))
    assert (plain.model, named.model) == ("efficientnet_lite0", "other")
    assert default.batches == [1] and other.batches == [1]  # each went to its own model
    assert isinstance(refused, ErrorResult)
    assert (refused.id, refused.code, refused.stage) == ("c", "model_not_allowed", "parse")
    assert "secret_model" in refused.message and "efficientnet_lite0, other" in refused.message


class StuckClassifier(Classifier):
    """A model whose every call hangs until released (Triton retrying a model with no available version)."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def infer(self, batch, contract):
        self.release.wait(10)
        return super().infer(batch, contract)


def test_a_stuck_model_leaves_the_other_models_their_own_infer_threads(parts):
    store, decoder, default = parts
    stuck = StuckClassifier()
    cfg = config(allowed_models=("stuck",), infer_concurrency=2, max_batch_size=1, request_timeout_s=30)
    pipeline = AsyncImagePipeline(cfg, fetcher=store, classifier=default, decoder=decoder, models={"stuck": stuck})
    pipeline.open()

    async def scenario():
        stuck_ones = [asyncio.ensure_future(pipeline.process(json.dumps(
            {"id": f"s{i}", "uri": "s3://photos/a.jpg", "model": "stuck"}))) for i in range(4)]
        await asyncio.sleep(0.2)  # every call slot of the stuck model is taken
        plain = await asyncio.wait_for(pipeline.process(event("plain")), 5)  # not behind the stuck calls
        held = not stuck.release.is_set()
        stuck.release.set()
        return plain, held, await asyncio.gather(*stuck_ones)

    try:
        plain, held, stuck_results = asyncio.run(scenario())
    finally:
        stuck.release.set()
        pipeline.close()
    assert isinstance(plain, Prediction) and plain.model == "efficientnet_lite0", plain
    assert held  # answered while the stuck model still held every thread it may use
    assert all(isinstance(result, Prediction) for result in stuck_results), stuck_results


@pytest.mark.parametrize("model", [5, "", "m" * 257, None])
def test_a_model_field_that_is_not_a_name_is_an_invalid_event(parts, model):
    store, decoder, classifier = parts
    with ImagePipeline(config(), fetcher=store, classifier=classifier, decoder=decoder) as pipe:
        result = pipe.process(json.dumps({"id": "x", "uri": "s3://photos/a.jpg", "model": model}))
    assert isinstance(result, ErrorResult) and result.code == "invalid_event"


class BuiltPool(Decoder):
    """Stands in for the DecoderPool that open() builds; refuses to decode once closed, as it does."""

    def __init__(self, workers, **limits):
        super().__init__()
        self.closed = False

    def wait_ready(self):
        pass

    def close(self):
        self.closed = True

    def decode(self, data, resize, *, max_pixels):
        if self.closed:
            raise RuntimeError("the decoder pool is closed")
        return super().decode(data, resize, max_pixels=max_pixels)


def test_a_pipeline_opened_again_after_close_builds_afresh(parts, monkeypatch):
    # close() closes what open() built (the decoder pool, the infer threads their batchers call on):
    # a second open() must build them again, not reuse the closed ones; the caller's stand-ins stay
    monkeypatch.setattr(pipeline_module, "DecoderPool", BuiltPool)
    store, _, classifier = parts
    pipeline = AsyncImagePipeline(config(), fetcher=store, classifier=classifier)
    results, pools = [], []
    for _ in range(2):
        pipeline.open()
        pools.append(pipeline.decoder)
        try:
            results += run(pipeline, event())
        finally:
            pipeline.close()
    assert all(isinstance(result, Prediction) for result in results), results
    assert pools[0] is not pools[1] and all(pool.closed for pool in pools)
    assert (pipeline.fetcher, pipeline.classifier) == (store, classifier) and not store.closed


class MisreportingDecoder(Decoder):
    """A decoder that reports a time JSON cannot hold: a decoder process out of step, or taken over
    by the image it decodes, sends any number it likes."""

    def __init__(self, decode_ms: float):
        super().__init__()
        self.decode_ms = decode_ms

    def decode(self, data, resize, *, max_pixels):
        decoded = super().decode(data, resize, max_pixels=max_pixels)
        return dataclasses.replace(decoded, decode_ms=self.decode_ms)


@pytest.mark.parametrize("decode_ms", [float("nan"), float("inf")])
def test_a_non_finite_time_in_a_result_is_still_answered(parts, decode_ms):
    # the time is what makes the result unwritable: the internal_error that replaces it must not carry it too
    store, _, classifier = parts
    pipeline = AsyncImagePipeline(config(), fetcher=store, classifier=classifier,
                                  decoder=MisreportingDecoder(decode_ms))
    pipeline.open()
    try:
        result, key, text = asyncio.run(pipeline.answer(event("odd")))
    finally:
        pipeline.close()
    body = json.loads(text)
    assert isinstance(result, ErrorResult) and key == "odd" and body["error"]["code"] == "internal_error"
    assert "decode" not in body["timings_ms"] and body["timings_ms"]["fetch"] == 0.5


class UnreadyPool(BuiltPool):
    """A decoder pool whose processes did not all start."""

    def wait_ready(self):
        raise RuntimeError("decoder process 1 did not start")


def test_an_open_that_fails_closes_what_it_built(parts, monkeypatch):
    # PyFlink never calls close() on an operator whose open() raised: the decoder processes started
    # so far, the fetcher's pools and the Triton channels would stay until the worker process ends
    pools = []

    def unready_pool(workers, **limits):
        pools.append(UnreadyPool(workers))
        return pools[-1]
    monkeypatch.setattr(pipeline_module, "DecoderPool", unready_pool)
    store, _, classifier = parts
    pipeline = AsyncImagePipeline(config(), fetcher=store, classifier=classifier)
    with pytest.raises(RuntimeError, match="did not start"):
        pipeline.open()
    assert len(pools) == 1 and pools[0].closed and pipeline.decoder is None and not store.closed
