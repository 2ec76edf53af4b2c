"""How Triton's gRPC errors become the project's errors (the one boundary in streaming/infer.py)."""
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from streaming.contract import CONTRACT_PARAMETER, lite_contract
from streaming.errors import (InferenceFailed, InferenceUnavailable, ModelContractInvalid, ModelNotFound, Permanent,
                              Retryable)
from streaming.infer import _translate, contract_from_config, parse_classification


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


def lite_config(**changes) -> dict:
    """A model config as Triton's get_model_config(as_json=True)["config"] returns it."""
    config = {"name": "m", "input": [{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": ["240", "240", "3"]}],
              "output": [{"name": "PROBABILITIES", "data_type": "TYPE_FP32", "dims": ["1000"]}],
              "parameters": {CONTRACT_PARAMETER: {"string_value": lite_contract(240).to_json()}}}
    config.update(changes)
    return config


def test_the_contract_is_read_from_the_model_config():
    assert contract_from_config("m", lite_config()) == lite_contract(240)


@pytest.mark.parametrize("changes, fragment", [
    ({"parameters": {}}, "has no 'imgstream_contract' parameter"),
    ({"parameters": {CONTRACT_PARAMETER: {"string_value": "{"}}}, "contract's contract: not JSON"),
    ({"parameters": {CONTRACT_PARAMETER: {"string_value": '{"input": {"size": 0}, "output": {"kind": "classes"}}'}}},
     "input.size"),
    ({"input": [{"name": "IMAGE", "dims": ["224", "224", "3"]}]}, "takes IMAGE [224, 224, 3], its contract says [240, 240, 3]"),
    ({"output": [{"name": "EMBEDDING", "dims": ["1000"]}]}, "has no output 'PROBABILITIES' (classes model)"),
])
def test_a_missing_or_inconsistent_contract_is_model_contract_invalid(changes, fragment):
    with pytest.raises(ModelContractInvalid) as caught:
        contract_from_config("m", lite_config(**changes))
    assert fragment in caught.value.message and caught.value.code == "model_contract_invalid"


def test_a_batch_made_for_an_older_contract_is_model_changed_before_any_call():
    from streaming.config import PipelineConfig
    from streaming.errors import ModelChanged
    from streaming.infer import TritonClassifier

    classifier = TritonClassifier(PipelineConfig(triton_grpc="127.0.0.1:1"))
    classifier._contract = lite_contract(240)  # as read from Triton after a new version; no server is asked
    with pytest.raises(ModelChanged):
        classifier.infer(np.zeros((2, 224, 224, 3), np.uint8), lite_contract(224))
    with pytest.raises(InferenceFailed):
        classifier.infer(np.zeros((2, 240, 240, 3), np.float32), lite_contract(240))


@pytest.mark.parametrize("before", ["1", ""])  # version 1 served the last batch; no batch answered yet
@pytest.mark.parametrize("same", [True, False])
def test_a_new_version_that_answers_with_another_contract_is_model_changed(monkeypatch, same, before):
    import dataclasses

    from streaming.config import PipelineConfig
    from streaming.errors import ModelChanged
    from streaming.infer import TritonClassifier

    old = lite_contract(224)
    new = old if same else dataclasses.replace(old, resize=dataclasses.replace(old.resize, mode="squash"))
    classifier = TritonClassifier(PipelineConfig(triton_grpc="127.0.0.1:1"))
    classifier._contract, classifier._version = old, before  # the contract as read at open
    answers = np.array([[b"0.9:1:cat"]], dtype=object)
    monkeypatch.setattr(classifier, "_infer", lambda batch, contract: (answers, "2"))  # Triton's side

    def read_contract(timeout_s=None):
        classifier._contract = new
        return new

    monkeypatch.setattr(classifier, "read_contract", read_contract)
    batch = np.zeros((1, 224, 224, 3), np.uint8)
    if same:
        assert classifier.infer(batch, old).version == "2"
    else:  # its outputs may not be what the old contract says: the request is prepared again
        with pytest.raises(ModelChanged, match="version 2 answered with another contract"):
            classifier.infer(batch, old)
    assert classifier._version == "2"  # read once: the next batches, prepared for it, pass


def tritonclients_request(batch: np.ndarray | None, class_count: int, region: tuple[str, int] | None = None):
    """The ModelInferRequest tritonclient's own `infer` would send for this batch."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc._utils import _get_inference_request

    inp = grpcclient.InferInput("IMAGE", [2, 4, 4, 3], "UINT8")
    if region is None:
        inp.set_data_from_numpy(batch)
    else:
        inp.set_shared_memory(*region)
    out = grpcclient.InferRequestedOutput("PROBABILITIES", class_count=class_count)
    return _get_inference_request(model_name="m", inputs=[inp], model_version="2", request_id="", outputs=[out],
                                  sequence_id=0, sequence_start=False, sequence_end=False, priority=0,
                                  timeout=None, parameters=None)


def ours(class_count: int, region: tuple[str, int] | None = None):
    from streaming.infer import batch_request

    return batch_request("m", "2", (2, 4, 4, 3), "PROBABILITIES", class_count, region)


@pytest.mark.parametrize("class_count", [0, 5])
@pytest.mark.parametrize("rows", [1, 2])  # a contiguous batch, and a view that is not
def test_the_request_with_the_batch_appended_is_the_one_tritonclient_sends(class_count, rows):
    from tritonclient.grpc import service_pb2

    from streaming.infer import model_infer_request

    batch = np.random.default_rng(rows).integers(0, 256, (2, 4 * rows, 4, 3), dtype=np.uint8)[:, :4]
    sent = service_pb2.ModelInferRequest.FromString(model_infer_request(ours(class_count), batch))
    assert sent == tritonclients_request(np.ascontiguousarray(batch), class_count)
    assert sent.raw_input_contents[0] == batch.tobytes()  # a non-contiguous view is sent as its values


def test_a_large_batch_has_a_multi_byte_length():
    from tritonclient.grpc import service_pb2

    from streaming.infer import model_infer_request

    batch = np.arange(16 * 224 * 224 * 3, dtype=np.uint64).astype(np.uint8).reshape(16, 224, 224, 3)
    sent = service_pb2.ModelInferRequest.FromString(model_infer_request(ours(5), batch))
    assert len(sent.raw_input_contents) == 1 and sent.raw_input_contents[0] == batch.tobytes()


def test_a_batch_in_shared_memory_is_named_not_sent():
    from tritonclient.grpc import service_pb2

    from streaming.infer import model_infer_request

    sent = service_pb2.ModelInferRequest.FromString(model_infer_request(ours(5, ("region-1", 96)), None))
    assert sent == tritonclients_request(None, 5, ("region-1", 96))
    assert len(sent.raw_input_contents) == 0


@pytest.mark.parametrize("raw, labels", [
    ([b"0.9:1:a:b:c"], [("a:b:c", 1, 0.9)]),  # a label with colons
    ([b"0.4:3", b"0.3:2:two"], [("", 3, 0.4), ("two", 2, 0.3)]),  # a class the labels file does not name
    (["0.5:7:caf\u00e9", b"0.25:2:caf\xe9"], [("caf\u00e9", 7, 0.5), ("caf\ufffd", 2, 0.25)]),  # labels not UTF-8
])
def test_classification_strings_triton_sends_are_read(raw, labels):
    parsed = parse_classification(np.array(raw, dtype=object))
    assert [(l.label, l.index, l.score) for l in parsed] == labels


@pytest.mark.parametrize("text", [b"", b"0.5", b"high:1:cat", b"0.5:one:cat", b"0.5::cat"])
def test_a_classification_string_of_another_form_is_inference_failed(text):
    with pytest.raises(InferenceFailed, match="is not score:index:label"):
        parse_classification(np.array([b"0.9:0:ok", text], dtype=object))
