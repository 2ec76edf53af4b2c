"""A Triton client closed while an infer thread is in its call with a shared memory region (the job
stops with a batch in flight), against the real Triton: the call fails as a closed client's, and
its region is unregistered from Triton when the call lets it go (not left mapped there for good)."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from streaming import triton_shm
from streaming.contract import lite_contract
from streaming.errors import InferenceFailed
from streaming.infer import TritonClassifier
from streaming.stack.job_config import stack_config


@pytest.fixture
def admin(layout, prepared):
    client = grpcclient.InferenceServerClient(layout.triton_grpc)
    yield client
    client.close()


def ours(admin) -> set[str]:
    regions = admin.get_system_shared_memory_status(as_json=True).get("regions", {})
    return {name for name in regions if name.startswith(triton_shm.PREFIX)}


def test_close_during_a_call_unregisters_its_region_once_let_go(layout, admin):
    config = dataclasses.replace(stack_config(layout), triton_shared_memory=True, infer_retry_window_s=2.0)
    before = ours(admin)
    classifier = TritonClassifier(config)
    classifier.open()
    calling, release = threading.Event(), threading.Event()
    model_infer = classifier._model_infer

    def held(*args, **kwargs):  # the call, paused while close() runs
        calling.set()
        release.wait(10)
        return model_infer(*args, **kwargs)

    classifier._model_infer = held
    outcome = []

    def infer() -> None:
        try:
            outcome.append(classifier.infer(np.zeros((2, 224, 224, 3), np.uint8), lite_contract(224)))
        except Exception as exc:  # noqa: BLE001 - what the infer thread got
            outcome.append(exc)

    thread = threading.Thread(target=infer)
    thread.start()
    try:
        assert calling.wait(30)
        classifier.close()
        held = ours(admin) - before
        assert len(held) == 1  # still the call's
    finally:
        release.set()
        thread.join(30)
    assert not held & ours(admin)  # unregistered as the call let it go
    assert isinstance(outcome[0], InferenceFailed) and "closed" in outcome[0].message
