"""A request's whole path, as plain code: event → URI policy → fetch → decode → infer → result.

`ImagePipeline.process` does one request synchronously (tools, tests). `AsyncImagePipeline`
is what the Flink job runs: fetch+decode of many requests overlap on a bounded thread pool,
tensors are grouped into micro-batches for one Triton call each. Either way, an event gets
exactly one result: a Prediction, or an ErrorResult naming the cause.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import perf_counter
from typing import Mapping

import numpy as np

from streaming.batcher import MicroBatcher
from streaming.cache import DecodedImageCache
from streaming.config import PipelineConfig
from streaming.decoder_pool import DecoderPool
from streaming.cores import available_cores
from streaming.errors import PipelineError, RequestTimeout
from streaming.events import ErrorResult, ImageRequest, Label, Prediction, Result, parse_request, salvage_id
from streaming.fetch import Fetcher
from streaming.infer import TritonClassifier
from streaming.prepare import InProcessDecoder, fetch_decode
from streaming.uris import parse_uri

log = logging.getLogger(__name__)
TRITON_STARTUP_WAIT_S = 60.0


@dataclass(frozen=True)
class Prepared:
    """A request whose image is ready for the model."""

    request: ImageRequest
    tensor: np.ndarray
    timings_ms: Mapping[str, float] = field(default_factory=dict)


def error_result(raw: bytes | str, request_id: str | None, uri: str | None, exc: BaseException,
                 timings: dict[str, float], started: float) -> ErrorResult:
    """The one error result for a request, whatever went wrong."""
    if request_id is None:
        request_id, uri = salvage_id(raw)
    timings["total"] = (perf_counter() - started) * 1000
    if isinstance(exc, PipelineError):
        return ErrorResult.from_error(request_id, uri, exc, timings)
    log.error("internal error on request %s", request_id, exc_info=exc)
    return ErrorResult(request_id, uri, "internal_error", "unknown", f"{type(exc).__name__}: {exc}",
                       False, timings)


class ImagePipeline:
    """Clients are built in `open()` (in the Flink worker), so the object pickles cleanly."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._fetcher: Fetcher | None = None
        self.cache: DecodedImageCache | None = None
        self.classifier: TritonClassifier | None = None
        self.decoders: DecoderPool | None = None  # the decode slots; None (in-process) until open()

    def open(self) -> None:
        # one decoder process per decode slot: a decode past max_decode_ms is killed, its slot freed
        self.decoders = DecoderPool(self.config.decode_concurrency or available_cores(),
                                    max_decode_ms=self.config.max_decode_ms,
                                    max_decode_bytes=self.config.max_decode_bytes,
                                    max_request_bytes=self.config.max_object_bytes)
        self.decoders.wait_ready()
        self._fetcher = Fetcher(self.config)
        self.cache = DecodedImageCache(self.config.cache_bytes)
        self.classifier = TritonClassifier(self.config)
        self.classifier.open()
        if not self.classifier.wait_ready(TRITON_STARTUP_WAIT_S):
            # Not fatal: each request then fails (after retries) with inference_unavailable.
            log.warning("model %s not ready on %s", self.config.model_name, self.config.triton_grpc)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
        if self.classifier is not None:
            self.classifier.close()
        if self.decoders is not None:
            self.decoders.close()

    def prepare(self, request: ImageRequest) -> Prepared:
        """URI policy, fetch, decode: the CPU side of one request. Raises PipelineError."""
        ref = parse_uri(request.uri, self.config)
        decoder = self.decoders or InProcessDecoder(self.config.max_decode_ms, self.config.max_decode_bytes)
        pre = fetch_decode(self._fetcher, ref, size=self.config.input_size, max_pixels=self.config.max_pixels,
                           cache=self.cache, decoder=decoder)
        return Prepared(request, pre.tensor, pre.timings_ms())

    def classify(self, tensors: list[np.ndarray]) -> list[tuple[Label, ...]]:
        return self.classifier.classify(np.stack(tensors))

    def prediction(self, prepared: Prepared, labels: tuple[Label, ...], timings: dict[str, float],
                   started: float, batch_size: int = 1) -> Prediction:
        timings["total"] = (perf_counter() - started) * 1000
        return Prediction(prepared.request.id, prepared.request.uri, self.config.model_name, labels, timings,
                          batch_size)

    def parse(self, raw: bytes | str) -> ImageRequest:
        return parse_request(raw, max_bytes=self.config.max_event_bytes)

    def process(self, raw: bytes | str) -> Result:
        started = perf_counter()
        timings: dict[str, float] = {}
        request = None
        try:
            request = self.parse(raw)
            prepared = self.prepare(request)
            timings.update(prepared.timings_ms)
            t0 = perf_counter()
            (labels,) = self.classify([prepared.tensor])
            timings["infer"] = (perf_counter() - t0) * 1000
            return self.prediction(prepared, labels, timings, started)
        except Exception as exc:  # every failure becomes this request's one result
            return error_result(raw, request and request.id, request and request.uri, exc, timings, started)


class AsyncImagePipeline:
    """Many requests in flight on one asyncio loop; the Flink async operator drives it."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.pipeline = ImagePipeline(config)
        self._prepare_pool: ThreadPoolExecutor | None = None
        self._infer_pool: ThreadPoolExecutor | None = None
        self._batcher: MicroBatcher | None = None
        self.in_flight = 0

    def open(self) -> None:
        self.pipeline.open()
        self._prepare_pool = ThreadPoolExecutor(self.config.fetch_concurrency, thread_name_prefix="prepare")
        self._infer_pool = ThreadPoolExecutor(self.config.infer_concurrency, thread_name_prefix="infer")

    def close(self) -> None:
        for pool in (self._prepare_pool, self._infer_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self.pipeline.close()

    def _batcher_for_loop(self) -> MicroBatcher:
        # created lazily, on the loop that awaits it
        if self._batcher is None:
            self._batcher = MicroBatcher(self.pipeline.classify, max_size=self.config.max_batch_size,
                                         max_wait_ms=self.config.max_batch_wait_ms, executor=self._infer_pool,
                                         max_concurrent_batches=self.config.infer_concurrency)
        return self._batcher

    async def process(self, raw: bytes | str) -> Result:
        started = perf_counter()
        timings: dict[str, float] = {}
        request = None
        self.in_flight += 1
        try:
            request = self.pipeline.parse(raw)
            return await asyncio.wait_for(self._run(request, timings, started), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            exc = RequestTimeout(f"no result within request_timeout_s={self.config.request_timeout_s}")
            return error_result(raw, request and request.id, request and request.uri, exc, timings, started)
        except Exception as exc:  # every failure becomes this request's one result
            return error_result(raw, request and request.id, request and request.uri, exc, timings, started)
        finally:
            self.in_flight -= 1

    async def _run(self, request: ImageRequest, timings: dict[str, float], started: float) -> Prediction:
        loop = asyncio.get_running_loop()
        submitted = perf_counter()
        prepared = await loop.run_in_executor(self._prepare_pool, self._timed_prepare, request, submitted)
        timings.update(prepared.timings_ms)
        timings["queue"] = timings.pop("prepare_wait")
        batched = await self._batcher_for_loop().submit(prepared.tensor)
        timings["queue"] += batched.wait_ms
        timings["infer"] = batched.call_ms
        return self.pipeline.prediction(prepared, batched.value, timings, started, batched.batch_size)

    def _timed_prepare(self, request: ImageRequest, submitted: float) -> Prepared:
        """`prepare_wait`: waiting for a thread, then for a decode slot (what prepare spent
        outside its stages)."""
        started = perf_counter()
        prepared = self.pipeline.prepare(request)
        stages = sum(prepared.timings_ms.values())  # fetch, decode, resize
        waited = (started - submitted) * 1000 + max(0.0, (perf_counter() - started) * 1000 - stages)
        return Prepared(prepared.request, prepared.tensor, {**prepared.timings_ms, "prepare_wait": waited})
