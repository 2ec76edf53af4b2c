"""A request's whole path, as plain code: event → URI policy → fetch → decode → infer → result.

There is one path, `AsyncImagePipeline.process`, what the Flink job runs: fetch+decode of many
requests overlap on `fetch_concurrency` threads (`streaming.prepare` on a `streaming.offload.Lane`,
decodes in the decoder pool),
tensors are grouped into micro-batches for one Triton call each (`streaming.batcher`), and a
request unfinished after `request_timeout_s` is answered with `request_timeout`. An event gets
exactly one result: a Prediction, or an ErrorResult naming the cause.

`ImagePipeline` is the blocking entry for tools and tests: the same path, run on a private
event loop, one request at a time. The fetcher, the classifier and the decoder are built in
`open()` unless passed in (a test's stand-ins); the cache is always the real one.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from streaming.batcher import MicroBatcher
from streaming.cache import DecodedImageCache
from streaming.config import PipelineConfig
from streaming.cores import available_cores
from streaming.decoder_pool import DecoderPool
from streaming.contract import ModelContract
from streaming.errors import ModelChanged, ModelNotAllowed, PipelineError, RequestTimeout
from streaming.events import (
    ErrorResult, ImageRequest, Prediction, Result, parse_request, result_key, result_to_json, salvage_id,
    written_result,
)
from streaming.fetch import Fetcher
from streaming.infer import Inferred, TritonClassifier
from streaming.malloc import keep_large_buffers
from streaming.offload import Lane
from streaming.prepare import Decoder, Fetch, PreparedImage, fetch_decode
from streaming.uris import ObjectRef, parse_uri

log = logging.getLogger(__name__)
TRITON_STARTUP_WAIT_S = 60.0


class Model(Protocol):
    """What the pipeline needs of the served model (`streaming.infer.TritonClassifier`, or a stand-in):
    its contract (what to prepare) and a batch call for a batch prepared for a given contract, which
    raises ModelChanged when the model no longer serves that contract."""

    @property
    def contract(self) -> ModelContract: ...

    def infer(self, batch: np.ndarray, contract: ModelContract) -> Inferred: ...


def error_result(raw: bytes | str, request: ImageRequest | None, exc: BaseException,
                 timings: dict[str, float], started: float) -> ErrorResult:
    """The one error result for a request, whatever went wrong."""
    request_id, uri = (request.id, request.uri) if request is not None else salvage_id(raw)
    timings["total"] = (perf_counter() - started) * 1000
    if isinstance(exc, PipelineError):
        return ErrorResult.from_error(request_id, uri, exc, timings)
    log.error("internal error on request %s", request_id, exc_info=exc)
    return ErrorResult(request_id, uri, "internal_error", "unknown", f"{type(exc).__name__}: {exc}",
                       False, timings)


class AsyncImagePipeline:
    """Many requests in flight on one asyncio loop; the Flink async operator drives it.

    An event may name its model (`"model"`) among `allowed_models`; each model has its own
    contract and its own micro-batches. `classifier` serves `model_name`, `models` the others.

    Clients are built in `open()` (in the Flink worker), so the object pickles cleanly. What is
    passed in (`fetcher`, `classifier`, `models`, `decoder`) is used as is and not closed here;
    what `open()` builds, `close()` closes."""

    def __init__(self, config: PipelineConfig, *, fetcher: Fetch | None = None,
                 classifier: Model | None = None, decoder: Decoder | None = None,
                 models: Mapping[str, Model] | None = None):
        self.config = config
        self.fetcher = fetcher
        self.classifier = classifier
        self.models: dict[str, Model] = dict(models or {})  # the allowed models other than model_name
        self.decoder = decoder  # the decode slots: a DecoderPool unless passed in
        self.cache: DecodedImageCache | None = None
        self._built: list[Any] = []  # built by open(), closed by close()
        self._prepare_lane: Lane | None = None
        # one per model, `infer_concurrency` threads each: a model whose calls hang (Triton retrying
        # one with no available version) takes only its own threads, never another model's
        self._infer_pools: dict[str, ThreadPoolExecutor] = {}
        self._batchers: dict[tuple[str, ModelContract], MicroBatcher] = {}  # one per model and contract
        self.in_flight = 0

    def open(self) -> None:
        try:
            self._open()
        except BaseException:  # nobody closes what failed to open (PyFlink never closes that operator)
            self.close()
            raise

    def _open(self) -> None:
        keep_large_buffers(self.config.malloc_keep_bytes)
        if self.decoder is None:
            # one decoder process per decode slot: a decode past max_decode_ms is killed, its slot freed
            pool = DecoderPool(self.config.decode_concurrency or available_cores(),
                               max_decode_ms=self.config.max_decode_ms,
                               max_decode_bytes=self.config.max_decode_bytes,
                               max_request_bytes=self.config.max_object_bytes)
            self._built.append(pool)
            pool.wait_ready()
            self.decoder = pool
        if self.fetcher is None:
            self.fetcher = Fetcher(self.config)
            self._built.append(self.fetcher)
        self.cache = DecodedImageCache(self.config.cache_bytes)
        if self.classifier is None:
            self.classifier = self._open_model(self.config)
        for name in self.config.allowed_models:
            if name != self.config.model_name and name not in self.models:
                self.models[name] = self._open_model(dataclasses.replace(self.config, model_name=name,
                                                                         model_version=""))
        self._prepare_lane = Lane(self.config.fetch_concurrency, "prepare")

    def _open_model(self, config: PipelineConfig) -> TritonClassifier:
        classifier = TritonClassifier(config)
        self._built.append(classifier)
        classifier.open()
        if not classifier.wait_ready(TRITON_STARTUP_WAIT_S):
            # Not fatal: each request then fails (after retries) with inference_unavailable.
            log.warning("model %s not ready on %s", config.model_name, config.triton_grpc)
        return classifier

    def model(self, request: ImageRequest) -> tuple[str, Model]:
        """The model a request names (or `model_name`), and its client. Raises ModelNotAllowed."""
        name = request.model or self.config.model_name
        if name == self.config.model_name:
            return name, self.classifier
        model = self.models.get(name)
        if model is None:
            allowed = ", ".join(sorted({self.config.model_name, *self.config.allowed_models}))
            raise ModelNotAllowed(f"model {name!r} is not allowed here (allowed_models: {allowed})")
        return name, model

    def close(self) -> None:
        if self._prepare_lane is not None:
            self._prepare_lane.close()
        pools, self._infer_pools = self._infer_pools, {}
        for pool in pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self._batchers = {}  # they call on the infer threads just shut down
        built, self._built = self._built, []
        for client in reversed(built):  # only what open() built: the caller closes its stand-ins
            client.close()
        # closed for good: a later open() builds them again
        closed = {id(client) for client in built}
        self.fetcher, self.classifier, self.decoder = (None if id(part) in closed else part
                                                       for part in (self.fetcher, self.classifier, self.decoder))
        self.models = {name: model for name, model in self.models.items() if id(model) not in closed}

    def prepare(self, ref: ObjectRef, model: Model) -> tuple[PreparedImage, ModelContract]:
        """Fetch, decode for the model's contract (cached; read from Triton only until it first
        answers): the CPU side of one request, and the contract it was made for.
        Raises PipelineError."""
        contract = model.contract
        return fetch_decode(self.fetcher, ref, resize=contract.resize, max_pixels=self.config.max_pixels,
                            cache=self.cache, decoder=self.decoder), contract

    def infer(self, model: Model, contract: ModelContract, tensors: Sequence[np.ndarray]) -> list[tuple[object, str]]:
        """One batch's (output, model version) per image, its tensors prepared for `contract`. A batch
        made for an older contract (the served model changed meanwhile: another size, resize or
        output) raises ModelChanged: its requests are prepared again."""
        if model.contract != contract:
            raise ModelChanged(f"the model's contract is now {model.contract.to_json()}")
        inferred = model.infer(np.stack(tensors), contract)
        return [(output, inferred.version) for output in inferred.outputs]

    async def process(self, raw: bytes | str) -> Result:
        started = perf_counter()
        timings: dict[str, float] = {}
        request = None
        self.in_flight += 1
        try:
            request = parse_request(raw, max_bytes=self.config.max_event_bytes)
            # a timer on this task, not wait_for's second task per request
            async with asyncio.timeout(self.config.request_timeout_s):
                return await self._run(request, timings, started)
        except TimeoutError:
            exc = RequestTimeout(f"no result within request_timeout_s={self.config.request_timeout_s}")
            return error_result(raw, request, exc, timings, started)
        except Exception as exc:  # every failure becomes this request's one result
            return error_result(raw, request, exc, timings, started)
        finally:
            self.in_flight -= 1

    async def answer(self, raw: bytes | str) -> tuple[Result, str | None, str]:
        """`process`, written down: the result, its Kafka key and its JSON. A result that cannot be
        written (a bug) is replaced by an internal_error result for the same request, so the
        operator never raises: an exception there would fail the Flink task, and the replayed
        event would fail it again."""
        started = perf_counter()
        result = await self.process(raw)
        try:
            key = result_key(result)
            result, text = written_result(result)  # what the operator counts is what was written
            return result, key, text
        except Exception as exc:  # noqa: BLE001 - one result per request, whatever went wrong
            # not a time JSON cannot hold (a decoder process sends any number): it may be what failed
            timings = {stage: ms for stage, ms in result.timings_ms.items()
                       if isinstance(ms, (int, float)) and math.isfinite(ms)}
            fallback = error_result(raw, None, exc, timings, started)
            return fallback, result_key(fallback), result_to_json(fallback)

    async def _run(self, request: ImageRequest, timings: dict[str, float], started: float) -> Prediction:
        name, model = self.model(request)
        ref = parse_uri(request.uri, self.config)  # the URI policy, before any thread or client
        for attempt in range(2):  # a second time only when the served model changed meanwhile
            submitted = perf_counter()
            prepared, contract, waited_ms = await self._prepare_lane.run(self._timed_prepare, ref, model, submitted)
            timings.update(prepared.timings_ms())
            timings["queue"] = timings.get("queue", 0.0) + waited_ms
            try:
                batched = await self._batcher_for(name, model, contract).submit(prepared.tensor)
            except ModelChanged:
                if attempt:
                    raise
                continue
            timings["queue"] += batched.wait_ms
            timings["infer"] = batched.call_ms
            timings["total"] = (perf_counter() - started) * 1000
            output, version = batched.value
            return Prediction.of(request.id, request.uri, name, version, contract.output, output,
                                 timings, batched.batch_size)
        raise AssertionError("unreachable")

    def _timed_prepare(self, ref: ObjectRef, model: Model,
                       submitted: float) -> tuple[PreparedImage, ModelContract, float]:
        """The prepared image, the contract it was made for, and what prepare spent outside its
        stages (ms): waiting for a thread, then for a decode slot."""
        started = perf_counter()
        prepared, contract = self.prepare(ref, model)
        outside = max(0.0, (perf_counter() - started) * 1000 - prepared.stages_ms)
        return prepared, contract, (started - submitted) * 1000 + outside

    def _batcher_for(self, name: str, model: Model, contract: ModelContract) -> MicroBatcher:
        # created lazily, on the loop that awaits it; one per model (a batch goes to one model) and
        # contract: while the served model changes, requests prepared for the old contract and those
        # prepared again for the new one never share a batch (the old ones would sink it), and a
        # batch's outputs are read as the contract its images were prepared for says
        key = (name, contract)
        if key not in self._batchers:
            if name not in self._infer_pools:
                self._infer_pools[name] = ThreadPoolExecutor(self.config.infer_concurrency,
                                                             thread_name_prefix=f"infer-{len(self._infer_pools)}")
            self._batchers[key] = MicroBatcher(functools.partial(self.infer, model, contract),
                                                max_size=self.config.max_batch_size,
                                                max_wait_ms=self.config.max_batch_wait_ms,
                                                executor=self._infer_pools[name],
                                                max_concurrent_batches=self.config.infer_concurrency)
        return self._batchers[key]


class ImagePipeline:
    """The blocking entry (tools, tests): `AsyncImagePipeline.process` on a private event loop,
    one request at a time. Takes the same stand-ins; use `open()`/`close()` or `with`."""

    def __init__(self, config: PipelineConfig, *, fetcher: Fetch | None = None,
                 classifier: Model | None = None, decoder: Decoder | None = None,
                 models: Mapping[str, Model] | None = None):
        self.pipeline = AsyncImagePipeline(config, fetcher=fetcher, classifier=classifier, decoder=decoder,
                                           models=models)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def config(self) -> PipelineConfig:
        return self.pipeline.config

    def open(self) -> "ImagePipeline":
        self.pipeline.open()
        self._loop = asyncio.new_event_loop()
        return self

    def close(self) -> None:
        self.pipeline.close()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __enter__(self) -> "ImagePipeline":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def process(self, raw: bytes | str) -> Result:
        if self._loop is None:  # not opened: only what needs no client can succeed (parse, URI policy)
            return asyncio.run(self.pipeline.process(raw))
        return self._loop.run_until_complete(self.pipeline.process(raw))
