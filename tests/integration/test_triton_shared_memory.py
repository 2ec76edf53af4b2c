"""Batches through Triton's system shared memory, against the real Triton: the same outputs as
over plain gRPC, regions registered again when Triton forgets them, removed at close, and the
regions of a process that died removed by the next one, and a client closed while an infer thread
is in its call (the job stops with a batch in flight): the call fails as a closed client's, and its
region is unregistered from Triton when the call lets it go (not left mapped there for good)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from streaming import triton_shm
from streaming.contract import lite_contract
from streaming.errors import InferenceFailed
from streaming.infer import TritonClassifier
from streaming.stack.job_config import stack_config


@pytest.fixture
def config(layout, prepared):
    return stack_config(layout)


@pytest.fixture
def admin(layout):
    client = grpcclient.InferenceServerClient(layout.triton_grpc)
    yield client
    client.close()


def ours(admin) -> set[str]:
    regions = admin.get_system_shared_memory_status(as_json=True).get("regions", {})
    return {name for name in regions if name.startswith(triton_shm.PREFIX)}


def shm_files() -> set[str]:
    return {name for name in os.listdir(triton_shm.SHM_DIR) if name.startswith(triton_shm.PREFIX)}


def forget(admin, region: str, timeout_s: float = 10.0) -> None:
    """Unregister `region`, waiting while Triton still holds it for a response it is releasing."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.unregister_system_shared_memory(region)
            return
        except Exception as exc:  # noqa: BLE001 - "currently in use": try again shortly
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def photos_batch(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def test_the_same_outputs_as_over_grpc_and_nothing_left_behind(config, admin):
    before_regions, before_files = ours(admin), shm_files()
    plain, shared = TritonClassifier(config), TritonClassifier(dataclasses.replace(config, triton_shared_memory=True))
    try:
        assert shared.check_model().resize.size == 224
        batch = photos_batch(8)
        contract = lite_contract(224)
        want = plain.infer(batch, contract)
        got = shared.infer(batch, contract)
        assert got.outputs == want.outputs and got.version == want.version
        assert len(ours(admin) - before_regions) == 1  # made at first use, one per call slot in use
        smaller = shared.infer(batch[:3], contract)  # a smaller batch reuses the region
        assert smaller.outputs == want.outputs[:3] and len(ours(admin) - before_regions) == 1
    finally:
        shared.close()
        plain.close()
    assert ours(admin) == before_regions and shm_files() == before_files


def test_close_while_a_batch_holds_its_region_removes_it_after_the_call_and_refuses_more(config, admin):
    # the job stops (close) while an infer thread still copies into, or calls with, a region:
    # unmapping it then crashed the worker (SIGSEGV in the copy), and a retry re-created one
    before_regions, before_files = ours(admin), shm_files()
    client = grpcclient.InferenceServerClient(config.triton_grpc)
    shared = triton_shm.SharedInputs(client, 2)
    try:
        with shared.holding(photos_batch(2)) as (name, nbytes):
            shared.close()
            assert name in ours(admin) and name in shm_files()  # still this holder's
        assert ours(admin) == before_regions and shm_files() == before_files  # removed as it was let go
        with pytest.raises(triton_shm.shm.SharedMemoryException, match="closed"):
            with shared.holding(photos_batch(1)):
                pass
    finally:
        client.close()


def test_a_closed_classifier_refuses_instead_of_opening_again(config, admin):
    from streaming.errors import InferenceFailed

    classifier = TritonClassifier(dataclasses.replace(config, triton_shared_memory=True))
    contract = lite_contract(224)
    assert len(classifier.infer(photos_batch(1), contract).outputs) == 1
    classifier.close()
    with pytest.raises(InferenceFailed, match="closed"):
        classifier.infer(photos_batch(1), contract)
    assert classifier._client is None and classifier._shared is None


def test_a_region_triton_forgot_is_registered_again(config, admin):
    shared = TritonClassifier(dataclasses.replace(config, triton_shared_memory=True, infer_concurrency=1))
    try:
        batch = photos_batch(4)
        before = ours(admin)
        contract = lite_contract(224)
        first = shared.infer(batch, contract)
        (region,) = ours(admin) - before
        forget(admin, region)  # what a Triton restart does to every region
        assert region not in ours(admin)
        again = shared.infer(batch, contract)
        assert again.outputs == first.outputs and region in ours(admin)
    finally:
        shared.close()


def test_the_regions_of_a_process_that_died_are_removed_by_the_next_one(config, admin):
    code = ("import os, numpy as np, tritonclient.grpc as g\n"
            "from streaming.triton_shm import SharedInputs\n"
            f"s = SharedInputs(g.InferenceServerClient({config.triton_grpc!r}), 2)\n"
            "with s.holding(np.zeros((1, 8, 8, 3), np.uint8)) as (name, size): print(name, flush=True)\n"
            "os._exit(0)  # dies without close()\n")
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert dead in ours(admin) and dead in shm_files()
    survivor = triton_shm.SharedInputs(grpcclient.InferenceServerClient(config.triton_grpc), 1)  # sweeps at start
    try:
        assert dead not in ours(admin) and dead not in shm_files()
    finally:
        survivor.close()


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
