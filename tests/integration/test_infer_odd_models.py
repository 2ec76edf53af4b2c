"""The Triton client against user models that answer oddly, served by the real Triton: a tiny
python-backend model written into the stack's repository for each test (a name of its own), loaded,
then unloaded and removed. Its answer depends on the first pixel of the batch.

Never make such a model return a BYTES tensor for a numeric output: Triton 2.51 dies on it."""
from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from streaming.contract import CONTRACT_PARAMETER, ModelContract, Normalize, Output, Resize
from streaming.errors import InferenceFailed, ModelChanged
from streaming.infer import TritonClassifier
from streaming.stack.job_config import stack_config

SIZE = 8
NORMAL, FEWER_ROWS, MORE_ROWS = 0, 1, 2  # the first pixel of a batch says how the model answers

MODEL_PY = textwrap.dedent('''
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                out = np.tile(np.array([0.1, 0.2, 0.3, 0.4], np.float32), (image.shape[0], 1))
                mode = int(image[0, 0, 0, 0])
                if mode == 1:
                    out = out[:-1]
                elif mode == 2:
                    out = np.concatenate([out, out[:1]])
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("PROBABILITIES", out)]))
            return responses
''')


def contract(mode: str = "squash") -> ModelContract:
    return ModelContract(Resize(SIZE, mode, 1.0, "bilinear"),
                         Normalize((0.0, 255.0), (0.0,) * 3, (1.0,) * 3, "RGB", "NHWC"),
                         Output("classes", top_k=2, num_classes=4))


@pytest.fixture
def odd_model(layout, prepared):
    """`write(version, contract, labels)` adds a version of the model (its config says `contract`,
    its labels file holds `labels`) and loads it; the model's name."""
    name = f"zz_odd_{uuid.uuid4().hex[:8]}"
    folder = layout.model_repository / name
    admin = grpcclient.InferenceServerClient(layout.triton_grpc)

    def write(version: int, served: ModelContract, labels: bytes) -> str:
        (folder / str(version)).mkdir(parents=True)
        (folder / str(version) / "model.py").write_text(MODEL_PY)
        (folder / "labels.txt").write_bytes(labels)
        (folder / "config.pbtxt").write_text(textwrap.dedent(f'''
            name: "{name}"
            backend: "python"
            max_batch_size: 8
            input {{ name: "IMAGE" data_type: TYPE_UINT8 dims: [{SIZE}, {SIZE}, 3] }}
            output {{ name: "PROBABILITIES" data_type: TYPE_FP32 dims: [4] label_filename: "labels.txt" }}
            instance_group {{ count: 1 kind: KIND_CPU }}
            parameters {{ key: "{CONTRACT_PARAMETER}" value {{ string_value: {json.dumps(served.to_json())} }} }}
        '''))
        admin.load_model(name)
        return name

    yield write
    try:
        admin.unload_model(name)
    finally:
        admin.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def classifier_for(layout):
    made = []

    def make(name: str) -> TritonClassifier:
        config = dataclasses.replace(stack_config(layout), model_name=name, model_version="", top_k=0,
                                     infer_retry_window_s=5.0)
        classifier = TritonClassifier(config)
        made.append(classifier)
        classifier.open()
        assert classifier.wait_ready(30)
        return classifier

    yield make
    for classifier in made:
        classifier.close()


def batch(mode: int = NORMAL, n: int = 3) -> np.ndarray:
    images = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    images[0, 0, 0, 0] = mode
    return images


def test_classes_the_labels_file_does_not_name_or_labels_not_in_utf8_are_read(odd_model, classifier_for):
    """Triton answers "score:index" for a class past the labels file's end, and sends its lines' bytes as they are."""
    classifier = classifier_for(odd_model(1, contract(), "zero\none\ncaf\xe9\n".encode("latin-1")))
    inferred = classifier.infer(batch(), contract())
    assert [[(l.index, l.label) for l in row] for row in inferred.outputs] == [[(3, ""), (2, "caf\ufffd")]] * 3
    assert [l.score for l in inferred.outputs[0]] == pytest.approx([0.4, 0.3])


@pytest.mark.parametrize("mode", [FEWER_ROWS, MORE_ROWS])
def test_an_answer_for_fewer_or_more_images_fails_the_batch(odd_model, classifier_for, mode):
    classifier = classifier_for(odd_model(1, contract(), b"zero\none\ntwo\nthree\n"))
    with pytest.raises(InferenceFailed, match="returned no PROBABILITIES for 3 images"):
        classifier.infer(batch(mode), contract())


def test_a_new_version_loaded_before_the_first_answer_is_followed(odd_model, classifier_for):
    """Version 2 keeps the tensors but wants its images squashed, not cropped; it is loaded while
    the job is idle, after the client read version 1's contract: the first answer, from version 2,
    must not be taken for version 1's."""
    labels = b"zero\none\ntwo\nthree\n"
    name = odd_model(1, contract("center_crop"), labels)
    classifier = classifier_for(name)
    assert classifier.contract == contract("center_crop")
    odd_model(2, contract("squash"), labels)
    with pytest.raises(ModelChanged, match="version 2"):
        classifier.infer(batch(), contract("center_crop"))
    assert classifier.contract == contract("squash")
    assert classifier.infer(batch(), contract("squash")).version == "2"
