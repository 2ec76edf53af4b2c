"""Wrap a user's ONNX graph so that it speaks imgstream's wire format.

    IMAGE uint8 [N, S, S, 3] RGB
      -> Cast float32 -> (BGR: reverse the channels) -> x * scale + offset (per channel)
      -> (NCHW: Transpose) -> (float16 model: Cast float16)
      -> the user's graph (every name prefixed "model/")
      -> (float16 out: Cast float32) -> (softmax: Softmax) / (l2_normalize: x / max(||x||, 1e-12))
    PROBABILITIES or EMBEDDING float32 [N, C]

The front and the back are small models of their own, joined to the user's with
``onnx.compose.merge_models`` at the user's IR version and opset, so nothing of the user's graph is
rewritten but its names. The scale and offset are the contract's ``Normalize.affine()``.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from streaming.contract import CHANNELS, CONTRACT_PARAMETER, INPUT_NAME, ModelContract
from triton_models.onnx_validate import Validation

USER_PREFIX = "model/"
FRONT_OUT = "imgstream_model_input"
BACK_IN = "imgstream_model_output"
L2_EPSILON = 1e-12
ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
# The back's nodes: the INT8 recipe keeps them in float (probabilities, unit vectors stay exact).
BACK_NODES = ("imgstream_to_float32", "imgstream_softmax", "imgstream_norm", "imgstream_safe_norm",
              "imgstream_l2_normalize", "imgstream_output")


def _model(graph: onnx.GraphProto, like: onnx.ModelProto) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=list(like.opset_import), ir_version=like.ir_version)


def _front(contract: ModelContract, validation: Validation, like: onnx.ModelProto) -> onnx.ModelProto:
    size, norm = contract.resize.size, contract.normalize
    scale, offset = norm.affine()
    nodes, inits = [], [numpy_helper.from_array(scale, "imgstream_scale"),
                        numpy_helper.from_array(offset, "imgstream_offset")]
    x = "imgstream_pixels"
    nodes.append(helper.make_node("Cast", [INPUT_NAME], [x], name="imgstream_to_float", to=TensorProto.FLOAT))
    if norm.channel_order == "BGR":
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), "imgstream_bgr"))
        nodes.append(helper.make_node("Gather", [x, "imgstream_bgr"], ["imgstream_bgr_pixels"], name="imgstream_to_bgr",
                                      axis=3))
        x = "imgstream_bgr_pixels"
    nodes.append(helper.make_node("Mul", [x, "imgstream_scale"], ["imgstream_scaled"], name="imgstream_scale"))
    last = FRONT_OUT if norm.layout == "NHWC" and validation.input_dtype == "float32" else "imgstream_normalised"
    nodes.append(helper.make_node("Add", ["imgstream_scaled", "imgstream_offset"], [last], name="imgstream_offset"))
    if norm.layout == "NCHW":
        out = FRONT_OUT if validation.input_dtype == "float32" else "imgstream_nchw"
        nodes.append(helper.make_node("Transpose", [last], [out], name="imgstream_to_nchw", perm=[0, 3, 1, 2]))
        last = out
    if validation.input_dtype == "float16":
        nodes.append(helper.make_node("Cast", [last], [FRONT_OUT], name="imgstream_to_float16", to=TensorProto.FLOAT16))
    shape = ["batch", CHANNELS, size, size] if norm.layout == "NCHW" else ["batch", size, size, CHANNELS]
    graph = helper.make_graph(
        nodes, "imgstream_front",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", size, size, CHANNELS])],
        [helper.make_tensor_value_info(FRONT_OUT, ONNX_TYPES[validation.input_dtype], shape)], initializer=inits)
    return _model(graph, like)


def _back(contract: ModelContract, validation: Validation, like: onnx.ModelProto) -> onnx.ModelProto:
    out = contract.output
    width = out.num_classes if out.kind == "classes" else out.dim
    nodes, inits, x = [], [], BACK_IN
    if validation.output_dtype == "float16":
        nodes.append(helper.make_node("Cast", [x], ["imgstream_output_float"], name="imgstream_to_float32",
                                      to=TensorProto.FLOAT))
        x = "imgstream_output_float"
    if out.kind == "classes" and out.softmax:
        nodes.append(helper.make_node("Softmax", [x], [out.tensor_name], name="imgstream_softmax", axis=-1))
    elif out.kind == "embedding" and out.l2_normalize:
        opset = validation.opset
        inits.append(numpy_helper.from_array(np.array(L2_EPSILON, np.float32), "imgstream_epsilon"))
        if opset >= 18:  # ReduceL2 takes its axes as an input from opset 18 on
            inits.append(numpy_helper.from_array(np.array([-1], np.int64), "imgstream_last_axis"))
            reduce = helper.make_node("ReduceL2", [x, "imgstream_last_axis"], ["imgstream_norm"],
                                      name="imgstream_norm", keepdims=1)
        else:
            reduce = helper.make_node("ReduceL2", [x], ["imgstream_norm"], name="imgstream_norm", axes=[-1], keepdims=1)
        nodes += [reduce,
                  helper.make_node("Max", ["imgstream_norm", "imgstream_epsilon"], ["imgstream_safe_norm"],
                                   name="imgstream_safe_norm"),
                  helper.make_node("Div", [x, "imgstream_safe_norm"], [out.tensor_name], name="imgstream_l2_normalize")]
    else:
        nodes.append(helper.make_node("Identity", [x], [out.tensor_name], name="imgstream_output"))
    graph = helper.make_graph(
        nodes, "imgstream_back",
        [helper.make_tensor_value_info(BACK_IN, ONNX_TYPES[validation.output_dtype], ["batch", width])],
        [helper.make_tensor_value_info(out.tensor_name, TensorProto.FLOAT, ["batch", width])], initializer=inits)
    return _model(graph, like)


def wrap(model: onnx.ModelProto, contract: ModelContract, validation: Validation) -> onnx.ModelProto:
    """The user's model behind the wire format's uint8 input and float32 output (checked by onnx's checker)."""
    front = compose.merge_models(_front(contract, validation, model), model,
                                 io_map=[(FRONT_OUT, validation.input_name)], prefix2=USER_PREFIX)
    wrapped = compose.merge_models(front, _back(contract, validation, model),
                                   io_map=[(USER_PREFIX + validation.output_name, BACK_IN)])
    opsets = {o.domain: o.version for o in wrapped.opset_import}  # merge_models repeats each domain's entry
    del wrapped.opset_import[:]
    wrapped.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets.items())
    wrapped.graph.name = f"imgstream_{model.graph.name or 'model'}"
    wrapped.doc_string = (f"{model.doc_string}; wrapped by imgstream: uint8 NHWC in, "
                          f"{contract.output.tensor_name} float32 out")
    existing = {p.key: p.value for p in wrapped.metadata_props}
    helper.set_model_props(wrapped, {**existing, CONTRACT_PARAMETER: contract.to_json()})
    onnx.checker.check_model(wrapped, full_check=True)
    return wrapped
