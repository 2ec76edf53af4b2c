"""One request's whole path, as plain code: event → URI policy → fetch → decode → infer → result.

The Flink job wraps this; tests and tools call it directly. Whatever happens, `process`
returns exactly one result for the event: a Prediction or an ErrorResult naming the cause.
"""
from __future__ import annotations

import logging
from time import perf_counter

from streaming.config import PipelineConfig
from streaming.decode import decode_to_tensor
from streaming.errors import PipelineError
from streaming.events import ErrorResult, Prediction, Result, parse_request, salvage_id
from streaming.fetch import Fetcher
from streaming.infer import TritonClassifier
from streaming.uris import parse_uri

log = logging.getLogger(__name__)
TRITON_STARTUP_WAIT_S = 60.0


class ImagePipeline:
    """Clients are built in `open()` (in the Flink worker), so the object pickles cleanly."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._fetcher: Fetcher | None = None
        self._classifier: TritonClassifier | None = None

    def open(self) -> None:
        self._fetcher = Fetcher(self.config)
        self._classifier = TritonClassifier(self.config)
        self._classifier.open()
        if not self._classifier.wait_ready(TRITON_STARTUP_WAIT_S):
            # Not fatal: each request then fails (after retries) with inference_unavailable.
            log.warning("model %s not ready on %s", self.config.model_name, self.config.triton_grpc)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
        if self._classifier is not None:
            self._classifier.close()

    def process(self, raw: bytes | str) -> Result:
        start = perf_counter()
        timings: dict[str, float] = {}
        request_id = uri = None
        try:
            request = parse_request(raw, max_bytes=self.config.max_event_bytes)
            request_id, uri = request.id, request.uri
            ref = parse_uri(request.uri, self.config)
            fetched = self._fetcher.fetch(ref)
            timings["fetch"] = fetched.fetch_ms
            image = decode_to_tensor(fetched.data, size=self.config.input_size,
                                     max_pixels=self.config.max_pixels)
            timings["decode"], timings["resize"] = image.decode_ms, image.resize_ms
            t0 = perf_counter()
            (labels,) = self._classifier.classify(image.tensor[None])
            timings["infer"] = (perf_counter() - t0) * 1000
            timings["total"] = (perf_counter() - start) * 1000
            return Prediction(request.id, request.uri, self.config.model_name, labels, timings)
        except PipelineError as exc:
            if request_id is None:
                request_id, uri = salvage_id(raw)
            timings["total"] = (perf_counter() - start) * 1000
            return ErrorResult.from_error(request_id, uri, exc, timings)
        except Exception as exc:  # a bug must neither crash the job nor lose the request
            log.exception("internal error on request %s", request_id)
            if request_id is None:
                request_id, uri = salvage_id(raw)
            return ErrorResult(request_id, uri, "internal_error", "unknown",
                               f"{type(exc).__name__}: {exc}")
