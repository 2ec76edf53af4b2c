"""Triton gRPC client for the classifier: a uint8 batch in, top-k labels out.

Uses Triton's classification extension (a requested output with `class_count`), so the
server returns only k "score:index:label" strings per image instead of 1000 floats.
gRPC errors are translated here, at the one boundary: UNAVAILABLE, RESOURCE_EXHAUSTED and
DEADLINE_EXCEEDED are retried with jittered backoff for up to `infer_retry_window_s` (a Triton
restart should delay requests, not fail them; the waiting backpressures Kafka), then reported
as InferenceUnavailable; a model Triton does not know is ModelNotFound at once (NOT_FOUND "...
is not found"; NOT_FOUND "... has no available versions", seen while Triton stops, is retried);
anything else is InferenceFailed at once.
"""
from __future__ import annotations

import time

import numpy as np
import tritonclient.grpc as grpcclient
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random_exponential
from tritonclient.utils import InferenceServerException

from streaming.config import PipelineConfig
from streaming.contract import CHANNELS, INPUT_DTYPE, INPUT_NAME, INPUT_TRITON_DTYPE, OUTPUT_NAME, input_shape
from streaming.errors import InferenceFailed, InferenceUnavailable, ModelNotFound
from streaming.events import Label

# NOT_FOUND: while Triton starts or stops, the model "has no available versions" (retried);
# a model or version it does not know "is not found" (permanent: see `_is_unknown_model`).
RETRYABLE_STATUS = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED",
                    "StatusCode.DEADLINE_EXCEEDED", "StatusCode.NOT_FOUND")


def _is_unknown_model(exc: InferenceServerException) -> bool:
    """Triton's "Request for unknown model: 'x' is not found" / "... version 7 is not found"."""
    text = exc.message() or ""
    return str(exc.status()) == "StatusCode.NOT_FOUND" and text.rstrip().endswith("is not found")


def _translate(exc: InferenceServerException) -> Exception:
    status = str(exc.status() or "")
    message = f"triton: {status} {exc.message()}".strip()
    if _is_unknown_model(exc):
        return ModelNotFound(message)
    if status in RETRYABLE_STATUS or not status:
        return InferenceUnavailable(message)
    return InferenceFailed(message)


def _served(client: grpcclient.InferenceServerClient) -> str:
    try:
        index = client.get_model_repository_index(as_json=True).get("models", [])
    except InferenceServerException:
        return "its model list did not answer"
    names = sorted({m["name"] for m in index if m.get("state") == "READY"})
    return "it serves " + (", ".join(names) if names else "no model")


def parse_classification(raw: np.ndarray) -> tuple[Label, ...]:
    """Triton's "score:index:label" strings for one image, best first."""
    labels = []
    for item in raw:
        text = item.decode() if isinstance(item, bytes) else str(item)
        score, index, label = text.split(":", 2)
        labels.append(Label(label=label, index=int(index), score=float(score)))
    return tuple(labels)


class TritonClassifier:
    """One gRPC channel to Triton; build it in the worker (`open`), not at job build time."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._client: grpcclient.InferenceServerClient | None = None

    def open(self) -> None:
        self._client = grpcclient.InferenceServerClient(self.config.triton_grpc)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self.open()
        return self._client

    def wait_ready(self, timeout_s: float) -> bool:
        """Poll until the model is ready or the time is up; False at once for a model Triton does not know."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.client.is_model_ready(self.config.model_name, self.config.model_version):
                    return True
                self.client.get_model_metadata(self.config.model_name, self.config.model_version)
            except InferenceServerException as exc:
                if _is_unknown_model(exc):
                    return False
            time.sleep(0.5)
        return False

    def check_model(self, timeout_s: float = 10.0) -> None:
        """Before a job is submitted: Triton answers, serves `model_name` (and `model_version`), and the
        model takes `input_size` RGB uint8 images. Raises ConfigError naming the field at fault."""
        from streaming.config import ConfigError

        cfg = self.config
        try:
            live = self.client.is_server_live(client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise ConfigError("triton_grpc", f"Triton at {cfg.triton_grpc} did not answer: "
                                             f"{exc.status() or ''} {exc.message()}".strip()) from None
        if not live:
            raise ConfigError("triton_grpc", f"Triton at {cfg.triton_grpc} is not live")
        try:
            metadata = self.client.get_model_metadata(cfg.model_name, cfg.model_version, as_json=True,
                                                      client_timeout=timeout_s)
            ready = self.client.is_model_ready(cfg.model_name, cfg.model_version, client_timeout=timeout_s)
        except InferenceServerException as exc:
            if not _is_unknown_model(exc):
                raise ConfigError("model_name", f"Triton at {cfg.triton_grpc} failed on model {cfg.model_name!r}: "
                                                f"{exc.status() or ''} {exc.message()}".strip()) from None
            if cfg.model_version and f"version {cfg.model_version} is not found" in exc.message():
                raise ConfigError("model_version", f"Triton at {cfg.triton_grpc} has no version "
                                                   f"{cfg.model_version!r} of model {cfg.model_name!r}") from None
            raise ConfigError("model_name", f"Triton at {cfg.triton_grpc} does not serve model {cfg.model_name!r} "
                                            f"({_served(self.client)})") from None
        if not ready:
            raise ConfigError("model_name", f"model {cfg.model_name!r} is not ready on {cfg.triton_grpc}")
        shapes = {i["name"]: [int(d) for d in i["shape"]] for i in metadata.get("inputs", [])}
        shape = shapes.get(INPUT_NAME)
        if shape is None:
            raise ConfigError("model_name", f"model {cfg.model_name!r} has no input {INPUT_NAME!r}: {sorted(shapes)}")
        if shape[-3:] != list(input_shape(cfg.input_size)):
            raise ConfigError("input_size", f"model {cfg.model_name!r} takes {shape[-3:-1]} images, "
                                            f"input_size is {cfg.input_size}")

    def classify(self, batch: np.ndarray) -> list[tuple[Label, ...]]:
        """Top-k labels for each image of a (N, H, W, 3) uint8 batch."""
        if batch.dtype != INPUT_DTYPE or batch.ndim != 4 or batch.shape[-1] != CHANNELS:
            raise InferenceFailed(f"batch must be uint8 (N,H,W,3), got {batch.dtype} {batch.shape}")
        raw = self._infer(batch)
        return [parse_classification(row) for row in raw]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        @retry(retry=retry_if_exception_type(InferenceUnavailable),
               stop=stop_after_delay(self.config.infer_retry_window_s),
               wait=wait_random_exponential(multiplier=0.2, max=5), reraise=True)
        def call() -> np.ndarray:
            inp = grpcclient.InferInput(INPUT_NAME, list(batch.shape), INPUT_TRITON_DTYPE)
            inp.set_data_from_numpy(batch)
            out = grpcclient.InferRequestedOutput(OUTPUT_NAME, class_count=self.config.top_k)
            try:
                result = self.client.infer(self.config.model_name, [inp], outputs=[out],
                                           model_version=self.config.model_version,
                                           client_timeout=self.config.infer_timeout_s)
            except InferenceServerException as exc:
                raise _translate(exc) from None
            return result.as_numpy(OUTPUT_NAME).reshape(len(batch), -1)

        return call()
