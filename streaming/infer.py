"""Triton gRPC client: a uint8 batch in, top-k labels (or embeddings) out, as the model's contract says.

The model's contract (`streaming.contract.ModelContract`) is read from Triton itself: the
`imgstream_contract` parameter of the model's config. It is read when the client opens, again
when a response names another model version than the last one, and when Triton rejects a batch
(at most once a second): a new version with another input size or output kind is then followed
without restarting the job (`ModelChanged` tells the pipeline to prepare the request again).

For `classes` models it uses Triton's classification extension (a requested output with `class_count`), so the
server returns only k "score:index:label" strings per image instead of 1000 floats.
gRPC errors are translated here, at the one boundary: UNAVAILABLE, RESOURCE_EXHAUSTED and
DEADLINE_EXCEEDED are retried with jittered backoff for up to `infer_retry_window_s` (a Triton
restart should delay requests, not fail them; the waiting backpressures Kafka), then reported
as InferenceUnavailable; a model Triton does not know is ModelNotFound at once (NOT_FOUND "...
is not found"; NOT_FOUND "... has no available versions", seen while Triton stops, is retried);
anything else is InferenceFailed at once.

A batch goes out through tritonclient's own channel settings and error type, but not through
its `infer`, which copies the batch three times on its way into the request (`tobytes`, the
protobuf field, the serialisation): `model_infer_request` serialises the request without it and
appends the batch's bytes as the message's `raw_input_contents` field, one copy.

With `triton_shared_memory` the batch reaches Triton through a region of /dev/shm instead of the
request (`streaming.triton_shm`); a region Triton no longer knows (it restarted) is registered
again and the batch retried like any other retryable failure.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random_exponential
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from streaming.config import PipelineConfig
from streaming.contract import (
    CHANNELS, CONTRACT_PARAMETER, INPUT_DTYPE, INPUT_NAME, INPUT_TRITON_DTYPE, OUTPUT_NAME, ContractError, ModelContract,
    input_shape,
)
from streaming.errors import InferenceFailed, InferenceUnavailable, ModelChanged, ModelContractInvalid, ModelNotFound
from streaming.events import Label
from streaming.triton_shm import SharedInputs, is_missing_region, shm

# NOT_FOUND: while Triton starts or stops, the model "has no available versions" (retried);
# a model or version it does not know "is not found" (permanent: see `_is_unknown_model`).
RETRYABLE_STATUS = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED",
                    "StatusCode.DEADLINE_EXCEEDED", "StatusCode.NOT_FOUND")


_KEEPALIVE = grpcclient.KeepAliveOptions()
# tritonclient's own channel options (InferenceServerClient's defaults), for both of our channels:
# with the same target and options, gRPC gives them one connection
CHANNEL_OPTIONS = (("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
                   ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
                   ("grpc.keepalive_time_ms", _KEEPALIVE.keepalive_time_ms),
                   ("grpc.keepalive_timeout_ms", _KEEPALIVE.keepalive_timeout_ms),
                   ("grpc.keepalive_permit_without_calls", _KEEPALIVE.keepalive_permit_without_calls),
                   ("grpc.http2.max_pings_without_data", _KEEPALIVE.http2_max_pings_without_data))
MODEL_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_RAW_INPUT_TAG = _varint(service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name["raw_input_contents"].number << 3 | 2)


def batch_request(model_name: str, model_version: str, shape: tuple[int, ...], output_name: str, class_count: int,
                  region: tuple[str, int] | None = None) -> service_pb2.ModelInferRequest:
    """Triton's request for a batch of `shape`, without its bytes: the one output, its top
    `class_count` as strings when not 0 (Triton's classification extension), and the shared memory
    region (name, bytes) that holds the batch when given (as tritonclient's `set_shared_memory`)."""
    request = service_pb2.ModelInferRequest(model_name=model_name, model_version=model_version)
    tensor = request.inputs.add(name=INPUT_NAME, datatype=INPUT_TRITON_DTYPE, shape=shape)
    wanted = request.outputs.add(name=output_name)
    if class_count:
        wanted.parameters["classification"].int64_param = class_count
    if region is not None:
        tensor.parameters["shared_memory_region"].string_param = region[0]
        tensor.parameters["shared_memory_byte_size"].int64_param = region[1]
    return request


def model_infer_request(request: service_pb2.ModelInferRequest, raw: np.ndarray | None) -> bytes:
    """`request` serialised, with `raw`'s bytes as its one raw input: the protobuf encoding of one
    more `raw_input_contents` entry (tag, length, bytes), which a parser reads as if it were set."""
    head = request.SerializeToString()
    if raw is None:
        return head
    raw = np.ascontiguousarray(raw)
    return b"".join((head, _RAW_INPUT_TAG, _varint(raw.nbytes), raw.data))


def _server_error(exc: grpc.RpcError) -> InferenceServerException:
    """tritonclient's exception for a failed call (`tritonclient.grpc._utils.get_error_grpc`)."""
    return InferenceServerException(msg=exc.details(), status=str(exc.code()), debug_details=exc.debug_error_string())


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
    """Triton's "score:index:label" strings for one image, best first: "score:index" (label "")
    for a class its labels file does not name, the label's bytes as the file has them (not UTF-8:
    replaced). Raises InferenceFailed for any other string."""
    labels = []
    for item in raw:
        text = item.decode(errors="replace") if isinstance(item, bytes) else str(item)
        score, _, rest = text.partition(":")
        index, _, label = rest.partition(":")
        try:
            labels.append(Label(label=label, index=int(index), score=float(score)))
        except ValueError:
            raise InferenceFailed(f"Triton's classification {text[:80]!r} is not score:index:label") from None
    return tuple(labels)


REFRESH_MIN_INTERVAL_S = 1.0  # after a rejected batch, the contract is read again at most this often


@dataclass(frozen=True)
class Inferred:
    """One batch's outputs, per image: top-k labels (classes) or a float32 vector (embedding),
    and the model version that served them."""

    outputs: list
    version: str


def contract_from_config(model_name: str, config: dict) -> ModelContract:
    """The contract in a model config (`get_model_config(..., as_json=True)["config"]`), checked
    against the config's own tensors. Raises ModelContractInvalid naming what is wrong."""
    raw = config.get("parameters", {}).get(CONTRACT_PARAMETER, {}).get("string_value")
    if not raw:
        raise ModelContractInvalid(f"model {model_name!r} has no {CONTRACT_PARAMETER!r} parameter in its "
                                   f"config.pbtxt: import it with `imgstream models import`")
    try:
        contract = ModelContract.from_json(raw)
    except ContractError as exc:
        raise ModelContractInvalid(f"model {model_name!r}: its contract's {exc}") from None
    inputs = {i["name"]: [int(d) for d in i.get("dims", [])] for i in config.get("input", [])}
    outputs = {o["name"] for o in config.get("output", [])}
    want = list(input_shape(contract.resize.size))
    if inputs.get(INPUT_NAME) != want:
        raise ModelContractInvalid(f"model {model_name!r} takes {INPUT_NAME} {inputs.get(INPUT_NAME)}, "
                                   f"its contract says {want}")
    if contract.output.tensor_name not in outputs:
        raise ModelContractInvalid(f"model {model_name!r} has no output {contract.output.tensor_name!r} "
                                   f"({contract.output.kind} model): {sorted(outputs)}")
    return contract


class TritonClassifier:
    """One gRPC channel to Triton and the served model's contract; build it in the worker (`open`),
    not at job build time. `infer` may run on several threads at once."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._client: grpcclient.InferenceServerClient | None = None
        self._channel: grpc.Channel | None = None  # the batches'
        self._model_infer: grpc.UnaryUnaryMultiCallable | None = None
        self._contract: ModelContract | None = None
        self._version = ""  # the version that served the last batch
        self._lock = threading.Lock()
        self._refreshed = 0.0  # monotonic time of the last contract read
        self._shared: SharedInputs | None = None  # triton_shared_memory: the regions, made at first use
        self._closed = False  # by close(): a call still retrying then must not open a new channel

    def open(self) -> None:
        self._closed = False
        self._client = grpcclient.InferenceServerClient(self.config.triton_grpc, channel_args=list(CHANNEL_OPTIONS))
        self._channel = grpc.insecure_channel(self.config.triton_grpc, options=CHANNEL_OPTIONS)
        self._model_infer = self._channel.unary_unary(
            MODEL_INFER_METHOD, response_deserializer=service_pb2.ModelInferResponse.FromString)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            shared, self._shared = self._shared, None
        client, channel = self._client, self._channel
        self._client = self._channel = self._model_infer = None
        if channel is not None:
            channel.close()
        if shared is not None:  # regions still in use are unregistered through `client` when let go
            shared.close(then=client.close if client is not None else None)
        elif client is not None:
            client.close()

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        self._ensure_open()
        return self._client

    def _ensure_open(self) -> None:
        """Open on first use; after close(), refuse (InferenceFailed: not retried)."""
        if self._client is None:
            if self._closed:
                raise InferenceFailed("the Triton client is closed")
            self.open()

    @property
    def contract(self) -> ModelContract:
        """The served model's contract (read from Triton on first use). Raises ModelContractInvalid,
        ModelNotFound or InferenceUnavailable."""
        if self._contract is None:
            self.read_contract()
        return self._contract

    def read_contract(self, timeout_s: float | None = None) -> ModelContract:
        """Read the contract from the model's config on Triton now (retried like a batch while Triton
        is unreachable)."""
        @retry(retry=retry_if_exception_type(InferenceUnavailable),
               stop=stop_after_delay(self.config.infer_retry_window_s),
               wait=wait_random_exponential(multiplier=0.2, max=5), reraise=True)
        def call() -> dict:
            try:
                return self.client.get_model_config(self.config.model_name, self.config.model_version, as_json=True,
                                                    client_timeout=timeout_s or self.config.infer_timeout_s)
            except InferenceServerException as exc:
                raise _translate(exc) from None

        config = call()
        contract = contract_from_config(self.config.model_name, config.get("config", {}))
        with self._lock:
            self._contract, self._refreshed = contract, time.monotonic()
        return contract

    def wait_ready(self, timeout_s: float) -> bool:
        """Poll until the model is ready and its contract read, or the time is up; False at once for
        a model Triton does not know or whose contract is invalid."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.client.is_model_ready(self.config.model_name, self.config.model_version):
                    self.read_contract()
                    return True
                self.client.get_model_metadata(self.config.model_name, self.config.model_version)
            except InferenceServerException as exc:
                if _is_unknown_model(exc):
                    return False
            except (ModelNotFound, ModelContractInvalid):
                return False
            except InferenceUnavailable:
                pass
            time.sleep(0.5)
        return False

    def check_model(self, timeout_s: float = 10.0) -> ModelContract:
        """Before a job is submitted: Triton answers, serves `model_name` (and `model_version`), and the
        model's config carries a valid contract. Raises ConfigError naming the field at fault."""
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
            self.client.get_model_metadata(cfg.model_name, cfg.model_version, as_json=True, client_timeout=timeout_s)
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
        try:
            contract = self.read_contract(timeout_s)
        except (ModelContractInvalid, InferenceFailed, InferenceUnavailable) as exc:
            raise ConfigError("model_name", exc.message) from None
        if cfg.top_k > contract.output.num_classes and contract.output.kind == "classes":
            raise ConfigError("top_k", f"model {cfg.model_name!r} has {contract.output.num_classes} classes, "
                                       f"top_k is {cfg.top_k}")
        try:
            model_max = int(self.client.get_model_config(cfg.model_name, cfg.model_version, as_json=True,
                                                         client_timeout=timeout_s)["config"].get("max_batch_size", 0))
        except (InferenceServerException, KeyError, ValueError, TypeError) as exc:
            raise ConfigError("model_name", f"model {cfg.model_name!r}: its config did not answer ({exc})") from None
        if model_max and cfg.max_batch_size > model_max:
            raise ConfigError("max_batch_size", f"model {cfg.model_name!r} takes batches of at most {model_max} (its "
                                                f"config.pbtxt), max_batch_size is {cfg.max_batch_size}")
        if cfg.triton_shared_memory:
            self._check_shared_memory()
        return contract

    def _check_shared_memory(self) -> None:
        """Triton maps a region of this host's /dev/shm; ConfigError naming triton_shared_memory if not."""
        from streaming.config import ConfigError

        probe = SharedInputs(self.client, 1)
        try:
            with probe.holding(np.zeros((1, 1, 1, CHANNELS), INPUT_DTYPE)):
                pass
        except (InferenceServerException, shm.SharedMemoryException) as exc:
            reason = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
            raise ConfigError("triton_shared_memory", f"Triton at {self.config.triton_grpc} cannot map this host's "
                                                      f"shared memory ({reason}): it must run on the same host, "
                                                      f"with the same /dev/shm") from None
        finally:
            probe.close()

    def infer(self, batch: np.ndarray, contract: ModelContract) -> Inferred:
        """The outputs for each image of a (N, S, S, 3) uint8 batch prepared for `contract`, read as
        `contract`'s output says.

        Raises ModelChanged when the served model's contract is no longer `contract`: it changed since
        the images were prepared, Triton rejects the batch because it changed, or a new version
        answered whose contract differs (its outputs are not what `contract` describes)."""
        size = contract.resize.size
        if batch.dtype != INPUT_DTYPE or batch.shape[1:] != (size, size, CHANNELS):
            raise InferenceFailed(f"batch must be uint8 (N,{size},{size},{CHANNELS}), got {batch.dtype} {batch.shape}")
        if self.contract != contract:
            raise ModelChanged(f"model {self.config.model_name!r} changed while the request was prepared: "
                               f"now {self.contract.to_json()}")
        try:
            raw, version = self._infer(batch, contract)
        except InferenceFailed:
            if self._changed_since(contract):
                raise ModelChanged(f"model {self.config.model_name!r} changed while the request was prepared: "
                                   f"now {self.contract.to_json()}") from None
            raise
        if version != self._version:
            # a new version (or the first answer: the version loaded since the contract was read may
            # be a new one): its contract may differ (read now; when that fails, the batch fails and
            # the next one reads it again)
            current = self.read_contract()
            self._version = version
            if current != contract:
                raise ModelChanged(f"model {self.config.model_name!r} version {version} answered with "
                                   f"another contract: {current.to_json()}")
        if contract.output.kind == "classes":
            return Inferred([parse_classification(row) for row in raw], version)
        return Inferred(list(raw), version)

    def _changed_since(self, contract: ModelContract) -> bool:
        """Read the contract again (at most once per REFRESH_MIN_INTERVAL_S): does it differ from `contract`?"""
        if time.monotonic() - self._refreshed >= REFRESH_MIN_INTERVAL_S:
            try:
                self.read_contract()
            except (InferenceFailed, InferenceUnavailable, ModelContractInvalid):
                return False
        return self._contract != contract

    def _top_k(self, contract: ModelContract) -> int:
        return min(self.config.top_k or contract.output.top_k, contract.output.num_classes)

    def _infer(self, batch: np.ndarray, contract: ModelContract) -> tuple[np.ndarray, str]:
        output = contract.output

        @retry(retry=retry_if_exception_type(InferenceUnavailable),
               stop=stop_after_delay(self.config.infer_retry_window_s),
               wait=wait_random_exponential(multiplier=0.2, max=5), reraise=True)
        def call() -> tuple[np.ndarray, str]:
            class_count = self._top_k(contract) if output.kind == "classes" else 0
            self._ensure_open()
            model_infer = self._model_infer
            if model_infer is None:  # closed meanwhile
                raise InferenceFailed("the Triton client is closed")
            try:
                with self._input(batch) as (raw, region):
                    request = batch_request(self.config.model_name, self.config.model_version, batch.shape,
                                            output.tensor_name, class_count, region)
                    try:
                        response = model_infer(model_infer_request(request, raw), timeout=self.config.infer_timeout_s)
                    except grpc.RpcError as rpc_error:
                        raise _server_error(rpc_error) from None
                    except ValueError:  # grpc's "Cannot invoke RPC on closed channel!": close() ran meanwhile
                        raise InferenceFailed("the Triton client is closed") from None
                result = grpcclient.InferResult(response)
            except InferenceServerException as exc:
                shared = self._shared  # None once closed
                if shared is not None and is_missing_region(exc.message() or ""):
                    shared.forget()  # Triton restarted: register again, then retry
                    raise InferenceUnavailable(f"triton: {exc.message()}") from None
                raise _translate(exc) from None
            values = result.as_numpy(output.tensor_name)
            if values is None or values.shape[0] != len(batch):
                raise InferenceFailed(f"model {self.config.model_name!r} returned no {output.tensor_name} "
                                      f"for {len(batch)} images")
            if output.kind == "embedding" and values.shape[1:] != (output.dim,):
                raise InferenceFailed(f"model {self.config.model_name!r} returned {output.tensor_name} "
                                      f"{list(values.shape)}, its contract says dim {output.dim}")
            return values.reshape(len(batch), -1), result.get_response().model_version

        return call()

    @contextmanager
    def _input(self, batch: np.ndarray) -> Iterator[tuple[np.ndarray | None, tuple[str, int] | None]]:
        """The batch as Triton's input: (the batch, None) to send it in the request, or (None, the
        shared memory region and its bytes) holding it meanwhile."""
        if not self.config.triton_shared_memory:
            yield batch, None
            return
        with self._lock:
            if self._shared is None:
                if self._closed:
                    raise InferenceFailed("the Triton client is closed")
                self._shared = SharedInputs(self.client, self.config.infer_concurrency)
            shared = self._shared
        try:
            with shared.holding(batch) as region:
                yield None, region
        except shm.SharedMemoryException as exc:  # /dev/shm full or not writable
            raise InferenceFailed(f"shared memory for the batch: {exc}") from None
