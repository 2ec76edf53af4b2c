"""The Triton client against the real Triton: a model it does not serve fails at once, permanently
(not retried for infer_retry_window_s), and `check_model` refuses such a config before a job runs."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from streaming.stack.job_config import stack_config
from streaming.config import ConfigError
from streaming.contract import lite_contract
from streaming.errors import ModelNotFound
from streaming.infer import TritonClassifier
from tests.net_support import free_port

WINDOW_S = 60.0  # the retry window the unknown model must not wait out


@pytest.fixture
def config(layout, prepared):
    return dataclasses.replace(stack_config(layout), infer_retry_window_s=WINDOW_S)


@pytest.mark.parametrize("changes", [dict(model_name="nope"), dict(model_version="7")])
def test_unknown_model_fails_at_once_with_a_permanent_code(config, changes):
    classifier = TritonClassifier(dataclasses.replace(config, **changes))
    try:
        started = time.monotonic()
        with pytest.raises(ModelNotFound) as caught:
            classifier.infer(np.zeros((2, 224, 224, 3), np.uint8), lite_contract(224))
        assert time.monotonic() - started < WINDOW_S / 4  # a bound on the mechanism: not the retry window
        assert caught.value.code == "model_not_found" and "is not found" in caught.value.message
        started = time.monotonic()
        assert classifier.wait_ready(WINDOW_S) is False
        assert time.monotonic() - started < WINDOW_S / 4
    finally:
        classifier.close()


def test_the_served_model_classifies_and_passes_the_check(config):
    classifier = TritonClassifier(config)
    try:
        assert classifier.check_model() == lite_contract(224)  # read from the model's config
        assert classifier.wait_ready(30)
        inferred = classifier.infer(np.zeros((1, 224, 224, 3), np.uint8), lite_contract(224))
        assert len(inferred.outputs) == 1 and len(inferred.outputs[0]) == 5 and inferred.version == "1"
    finally:
        classifier.close()


@pytest.mark.parametrize("changes, field, words", [
    (dict(model_name="nope"), "model_name", "does not serve model 'nope'"),
    (dict(model_version="7"), "model_version", "no version '7' of model"),
    (dict(model_name="nope", model_version="7"), "model_name", "does not serve model 'nope'"),
    (dict(max_batch_size=64), "max_batch_size", "takes batches of at most 32 (its config.pbtxt)"),
    (dict(triton_grpc=f"127.0.0.1:{free_port()}"), "triton_grpc", "did not answer"),
])
def test_check_model_refuses_naming_the_field(config, changes, field, words):
    classifier = TritonClassifier(dataclasses.replace(config, **changes))
    try:
        with pytest.raises(ConfigError) as caught:
            classifier.check_model(timeout_s=5)
        assert caught.value.field == field and words in str(caught.value)
        if field == "model_name":
            assert config.model_name in str(caught.value)  # the models it does serve are listed
    finally:
        classifier.close()
