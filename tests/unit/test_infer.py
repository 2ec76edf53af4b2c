"""How Triton's gRPC errors become the project's errors (the one boundary in streaming/infer.py)."""
import pytest
from tritonclient.utils import InferenceServerException

from streaming.errors import InferenceFailed, InferenceUnavailable, ModelNotFound, Permanent, Retryable
from streaming.infer import _translate


def triton_error(status: str | None, message: str) -> InferenceServerException:
    return InferenceServerException(message, status=status)


@pytest.mark.parametrize("message", [
    "Request for unknown model: 'nope' is not found",
    "Request for unknown model: 'efficientnet_lite0' version 7 is not found",
])
def test_a_model_triton_does_not_know_is_permanent_model_not_found(message):
    error = _translate(triton_error("StatusCode.NOT_FOUND", message))
    assert type(error) is ModelNotFound and isinstance(error, Permanent)
    assert error.code == "model_not_found" and error.stage == "infer" and message in error.message


@pytest.mark.parametrize("status, message", [
    ("StatusCode.NOT_FOUND", "Request for unknown model: 'efficientnet_lite0' has no available versions"),
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses"),
    ("StatusCode.RESOURCE_EXHAUSTED", "queue full"),
    ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded"),
    (None, "no status"),
])
def test_a_server_that_is_down_starting_or_stopping_is_retried(status, message):
    error = _translate(triton_error(status, message))
    assert type(error) is InferenceUnavailable and isinstance(error, Retryable)
    assert error.code == "inference_unavailable"


def test_anything_else_is_inference_failed():
    error = _translate(triton_error("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'IMAGE'"))
    assert type(error) is InferenceFailed and error.code == "inference_failed"
