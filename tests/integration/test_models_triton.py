"""Every model the local stack serves classifies real photos through Triton exactly as onnxruntime does
on the same ONNX file (the stack's repository, built by ``triton_models.build.build_repository``)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from streaming.contract import load_labels
from triton_models.preprocess import load_image
from triton_models.variants import LOCAL_VARIANTS

PHOTOS = ("LadyBird.jpg", "coffee.png", "chelsea.png")


@pytest.fixture(scope="module")
def client(layout, prepared):
    with grpcclient.InferenceServerClient(layout.triton_grpc) as c:
        yield c


@pytest.fixture(scope="module")
def samples(prepared) -> dict:
    return {p.name: p for p in prepared.samples}


def _infer(client, model: str, images: np.ndarray, class_count: int = 0):
    inp = grpcclient.InferInput("IMAGE", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    out = grpcclient.InferRequestedOutput("PROBABILITIES", class_count=class_count)
    return client.infer(model, [inp], outputs=[out], client_timeout=60).as_numpy("PROBABILITIES")


def test_triton_serves_every_local_variant(client):
    index = {m.name: m.state for m in client.get_model_repository_index().models}
    assert {v.name: index.get(v.name) for v in LOCAL_VARIANTS} == {v.name: "READY" for v in LOCAL_VARIANTS}
    assert "efficientnet_lite0" in index  # the job's default model


@pytest.mark.parametrize("variant", LOCAL_VARIANTS, ids=lambda v: v.name)
def test_photo_classifies_the_same_through_triton_and_onnxruntime(client, prepared, samples, variant):
    images = np.stack([load_image(samples[name], variant.image_size) for name in PHOTOS])
    onnx_path = prepared.model_repository / variant.name / "1" / "model.onnx"
    direct = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"IMAGE": images})[0]

    served = _infer(client, variant.name, images)
    assert served.shape == (len(PHOTOS), 1000) and served.dtype == np.float32
    assert list(served.argmax(axis=1)) == list(direct.argmax(axis=1))
    np.testing.assert_allclose(served, direct, atol=1e-4)

    labels = load_labels()
    top = _infer(client, variant.name, images[:1], class_count=3)[0]
    score, index, label = top[0].decode().split(":")
    assert int(index) == int(direct[0].argmax()) and label == labels[int(index)] == "ladybug"
    assert abs(float(score) - float(direct[0].max())) < 1e-4


def test_wrong_image_size_is_refused_per_request(client, samples):
    lite1 = next(v for v in LOCAL_VARIANTS if v.arch == "lite1")
    with pytest.raises(InferenceServerException, match="240"):
        _infer(client, lite1.name, load_image(samples["LadyBird.jpg"], 224)[None])
