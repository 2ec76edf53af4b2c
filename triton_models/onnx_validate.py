"""Is a user's ONNX file an image model imgstream can serve under its contract?

:func:`validate` checks one graph against a :class:`~streaming.contract.ModelContract` and
returns what it found (:class:`Validation`) or raises :class:`ModelImportError` naming the part
that is wrong: the ONNX checker (full check), exactly one real input (initialisers excluded),
float32/float16, rank 4 in the contract's layout with 3 channels, a dynamic batch axis, a
spatial size that is dynamic or equals ``input.size``, exactly one rank-2 output of
``num_classes`` (and as many labels) or ``dim`` values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from streaming.contract import CHANNELS, ModelContract

FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}
MIN_OPSET = 13  # Softmax over one axis, Cast/Transpose as the wrap emits them


class ModelImportError(ValueError):
    """A model that cannot be imported; ``what`` is the part that is wrong ("input", "labels", ...)."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


@dataclass(frozen=True)
class Validation:
    """What the checks found in the user's graph."""

    input_name: str
    input_dtype: str  # "float32" or "float16"
    input_shape: tuple[str | int, ...]  # as declared: ints, or the names of dynamic axes
    output_name: str
    output_dtype: str
    output_shape: tuple[str | int, ...]
    opset: int
    ir_version: int
    notes: tuple[str, ...]  # what the user should know (a dynamic size fixed by the contract, ...)

    def lines(self) -> list[str]:
        shape = lambda dims: "[" + ", ".join(map(str, dims)) + "]"  # noqa: E731
        return [f"input  {self.input_name}: {self.input_dtype} {shape(self.input_shape)}",
                f"output {self.output_name}: {self.output_dtype} {shape(self.output_shape)}",
                f"opset {self.opset}, IR {self.ir_version}", *self.notes]


def load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError, OSError, missing external data: all say "unreadable"
        raise ModelImportError("model", f"cannot read {path} as ONNX: {exc}") from None


def _dims(value: onnx.ValueInfoProto) -> tuple[str | int, ...] | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)


def _fixed(dim: str | int) -> bool:
    return isinstance(dim, int) and dim > 0


def validate(model: onnx.ModelProto, contract: ModelContract, labels: list[str] | None = None) -> Validation:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelImportError("model", f"the ONNX checker refuses it: {str(exc).strip().splitlines()[0]}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ModelImportError("model", f"opset {opset} is older than {MIN_OPSET}; export again with "
                                        f"opset_version >= {MIN_OPSET}")
    graph, notes = model.graph, []
    initialisers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise ModelImportError("input", f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                                        "imgstream feeds exactly one image tensor")
    (inp,) = inputs
    elem = inp.type.tensor_type.elem_type
    if elem not in FLOAT_TYPES:
        raise ModelImportError("input", f"{inp.name} is {TensorProto.DataType.Name(elem).lower()}; "
                                        "imgstream feeds float32 or float16")
    shape = _dims(inp)
    layout = contract.normalize.layout
    if shape is None or len(shape) != 4:
        raise ModelImportError("input", f"{inp.name} has shape {list(shape) if shape else 'unknown'}; "
                                        f"an image batch is rank 4 ({layout})")
    batch, (h, w), channels = shape[0], (shape[2:4] if layout == "NCHW" else shape[1:3]), \
        (shape[1] if layout == "NCHW" else shape[3])
    if _fixed(channels) and channels != CHANNELS:
        where = "N, 3, H, W" if layout == "NCHW" else "N, H, W, 3"
        raise ModelImportError("input", f"{inp.name} has shape {list(shape)}: {channels} channels where the "
                                        f"contract's layout {layout} puts them ([{where}])")
    if _fixed(batch):
        raise ModelImportError("input", f"{inp.name} has a fixed batch size {batch}; export with a dynamic batch "
                                        f"axis (torch.onnx.export(..., dynamic_axes={{{inp.name!r}: {{0: 'batch'}}}}))")
    size = contract.resize.size
    for axis, dim in (("height", h), ("width", w)):
        if _fixed(dim) and dim != size:
            raise ModelImportError("input", f"{inp.name} takes {h}x{w} images but the contract's input.size is "
                                            f"{size}; change one of them")
    if not (_fixed(h) and _fixed(w)):
        notes.append(f"the input's spatial size is dynamic ({h} x {w}): the contract fixes it at {size} x {size}")

    if len(graph.output) != 1:
        raise ModelImportError("output", f"the model has {len(graph.output)} outputs "
                                         f"({', '.join(o.name for o in graph.output)}); imgstream serves exactly one")
    (out,) = graph.output
    out_elem = out.type.tensor_type.elem_type
    if out_elem not in FLOAT_TYPES:
        raise ModelImportError("output", f"{out.name} is {TensorProto.DataType.Name(out_elem).lower()}; "
                                         "expected float32 or float16")
    out_shape = _dims(out)
    if out_shape is None or len(out_shape) != 2:
        raise ModelImportError("output", f"{out.name} has shape {list(out_shape) if out_shape else 'unknown'}; "
                                         "expected rank 2 [batch, classes] or [batch, dim]")
    width = out_shape[1]
    spec = contract.output
    if spec.kind == "classes":
        if _fixed(width) and width != spec.num_classes:
            raise ModelImportError("output", f"the model has {width} classes, the contract's output.num_classes "
                                             f"is {spec.num_classes}")
        if labels is not None and len(labels) != spec.num_classes:
            raise ModelImportError("labels", f"the labels file has {len(labels)} lines, the model has "
                                             f"{spec.num_classes} classes")
    elif _fixed(width) and width != spec.dim:
        raise ModelImportError("output", f"the model's embedding has {width} values, the contract's output.dim "
                                         f"is {spec.dim}")
    if not _fixed(width):
        notes.append(f"the output's width is dynamic ({width}): checked on real photos instead")
    return Validation(inp.name, FLOAT_TYPES[elem], shape, out.name, FLOAT_TYPES[out_elem], out_shape, opset,
                      model.ir_version, tuple(notes))
