"""Triton python-backend model: an ONNX model (EfficientNet-Lite variant or imported) on onnxruntime (CPU).

Template copied by ``triton_models/build.py`` and ``triton_models/import_model.py`` into
``<repo>/<model>/<version>/model.py`` for every locally served model.  Reads from ``config.pbtxt``:

* ``input[0].dims``               -- the image shape, e.g. [224, 224, 3] (Lite1: 240, Lite2: 260)
* ``input[0].data_type``          -- TYPE_UINT8 (float32 only for the naive benchmark baseline)
* ``output[0].name``              -- PROBABILITIES (classes) or EMBEDDING (embeddings), float32
* ``parameters.onnx_file``        -- ONNX file next to this model.py (default model.onnx)
* ``parameters.intra_op_threads`` -- onnxruntime intra-op threads (0 = onnxruntime default)
* ``parameters.allow_spinning``   -- "0": idle intra-op threads sleep instead of spinning

``execute`` validates every request on its own, runs all valid requests'
``IMAGE`` tensors as ONE onnxruntime batch, and splits the output back
per request.  A malformed request gets an error response of its own; the rest
of the batch is still served.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

INPUT_NAME = "IMAGE"
OUTPUT_NAMES = ("PROBABILITIES", "EMBEDDING")  # classes, embedding: the config's output[0].name is one


def _error(message, code_name="INVALID_ARG"):
    code = getattr(pb_utils.TritonError, code_name, None)
    err = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=err)


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        onnx_file = params.get("onnx_file") or "model.onnx"
        threads = int(params.get("intra_op_threads") or 0)
        spinning = params.get("allow_spinning", "1") or "1"
        path = os.path.join(args["model_repository"], args["model_version"], onnx_file)
        self.image_shape = tuple(int(d) for d in config["input"][0]["dims"])
        self.input_dtype = np.dtype(pb_utils.triton_string_to_numpy(config["input"][0]["data_type"]))
        self.name = config.get("name", "model")
        self.output_name = config["output"][0]["name"]
        if self.output_name not in OUTPUT_NAMES:
            raise ValueError(f"{self.name}: output {self.output_name!r} is not one of {OUTPUT_NAMES}")

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.logger = pb_utils.Logger
        self.logger.log_info(f"{self.name}: loaded {path} (intra_op_threads={threads}, allow_spinning={spinning})")

    def _validate(self, request):
        """The request's IMAGE as [n, *image_shape] of the configured type; raises ValueError otherwise."""
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
        if tensor is None:
            raise ValueError(f"missing input {INPUT_NAME}")
        arr = tensor.as_numpy()
        if arr.dtype != self.input_dtype:
            raise ValueError(f"{INPUT_NAME} must be {self.input_dtype.name.upper()}, got {arr.dtype}")
        if arr.ndim != 4 or tuple(arr.shape[1:]) != self.image_shape:
            raise ValueError(f"{INPUT_NAME} must have shape [n, {', '.join(map(str, self.image_shape))}], "
                             f"got {list(arr.shape)}")
        if arr.shape[0] < 1 or (self.max_batch_size and arr.shape[0] > self.max_batch_size):
            raise ValueError(f"{INPUT_NAME} batch size {arr.shape[0]} outside [1, {self.max_batch_size}]")
        return arr

    def execute(self, requests):
        responses = [None] * len(requests)
        owners, images = [], []
        for i, request in enumerate(requests):
            try:
                images.append(self._validate(request))
                owners.append(i)
            except Exception as exc:  # one bad request never sinks the batch
                responses[i] = _error(str(exc))
        if not owners:
            return responses

        batch = images[0] if len(images) == 1 else np.concatenate(images, axis=0)
        try:
            result = self.session.run([self.output_name], {INPUT_NAME: batch})[0]
        except Exception as exc:
            for i in owners:
                responses[i] = _error(f"onnxruntime failed: {exc}", "INTERNAL")
            return responses

        start = 0
        for i, arr in zip(owners, images):
            n = arr.shape[0]
            out = pb_utils.Tensor(self.output_name, np.ascontiguousarray(result[start:start + n], dtype=np.float32))
            responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
            start += n
        return responses

    def finalize(self):
        self.session = None
