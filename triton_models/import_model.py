"""Import a user's ONNX image classifier or embedding model into a Triton repository, under its contract.

    import_model(Path("model.onnx"), name="my_model", contract=ModelContract.from_toml(...),
                 repository=Path("triton_models/repository"), photos=[...], labels=Path("labels.txt"),
                 calibrate=[...], gpu_out=Path("gpu-repo"))

1. validate (:mod:`triton_models.onnx_validate`): one float input in the contract's layout, a
   dynamic batch, the contract's size, one rank-2 output of the contract's width, labels to match;
2. wrap (:mod:`triton_models.onnx_wrap`): uint8 NHWC ``IMAGE`` in, the normalisation, channel
   order and layout in the graph, ``PROBABILITIES`` / ``EMBEDDING`` float32 out;
3. check (:mod:`triton_models.contract_images`): the wrapped model on the uint8 photos against the
   original on the same photos normalised in float64; refused when they differ by more than the
   tolerance;
4. optionally calibrate (:mod:`triton_models.import_calibrate`): ``<name>_int8``, and its agreement
   with FP32 on the calibration photos;
5. write (:mod:`triton_models.model_entries`): ``<repository>/<name>`` (python backend on CPU, like
   the built-in models) and with ``gpu_out`` ``<gpu_out>/<name>`` (onnxruntime + TensorRT) and
   ``<gpu_out>/<name>_plan`` (TensorRT FP16 plan, built by ``build_trt_plan.sh``). Every config
   carries the contract. The first import is version 1; importing again under the same name adds
   the next version and rewrites the config with the new contract.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import onnx
from PIL import Image

from streaming.contract import ModelContract
from triton_models import contract_images, model_config, model_entries
from triton_models.build import MODEL_PREFIX, TEMPLATE, TRTEXEC_ARGS_FILE, default_threads
from triton_models.import_calibrate import Int8Report, calibrate as calibrate_int8
from triton_models.model_config import CpuTarget, GpuTarget, ModelSpec
from triton_models.model_entries import Entry
from triton_models.onnx_validate import ModelImportError, Validation, load, validate
from triton_models.onnx_wrap import wrap

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
VARIANT_SUFFIXES = ("_int8", "_plan")  # the names this module gives an import's variants
CHECK_PHOTOS = 16
MAX_VERSION = 2**63 - 1  # Triton parses version folders as int64
MAX_LABEL_CHARS = 512  # x MAX_TOP_K labels of 4-byte characters: well within a result's 256 KiB
_LINE_BREAKING = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")  # C0/C1 controls but tab; LS, PS


@dataclass(frozen=True)
class ImportResult:
    name: str
    version: int
    validation: Validation
    check: contract_images.WrapCheck
    written: tuple[Path, ...]  # model folders
    int8: Int8Report | None = None

    def lines(self) -> list[str]:
        out = [f"model {self.name}, version {self.version}", *(f"  {line}" for line in self.validation.lines()),
               f"  {self.check.line()}", "written:"]
        out += [f"  {path}/{{config.pbtxt, {self.version}/}}" for path in self.written]
        if self.int8:
            out.append(self.int8.table())
        return out


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise ModelImportError("name", f"{name!r} is not a model name: lower-case letters, digits, _ and -, "
                                       "at most 63, starting with a letter or digit")
    if name.startswith(MODEL_PREFIX):
        raise ModelImportError("name", f"{name!r}: names starting with {MODEL_PREFIX!r} belong to the built-in models "
                                       "(`imgstream models build` removes the ones it did not make)")
    if name.endswith(VARIANT_SUFFIXES):
        raise ModelImportError("name", f"{name!r} ends like a variant ({', '.join(VARIANT_SUFFIXES)}): "
                                       "those names are made from the model's")


def read_labels(path: Path) -> list[str]:
    """One label per line (LF or CRLF; a UTF-8 byte order mark is dropped): without ':', control
    characters (a tab aside) or line separators (which other readers split lines at: the labels
    after one would shift), at most MAX_LABEL_CHARS (the top MAX_TOP_K of them fit a result)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelImportError("labels", f"cannot read {path}: {exc}") from None
    labels = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
    for i, label in enumerate(labels, 1):
        if not label.strip() or ":" in label or _LINE_BREAKING.search(label) or len(label) > MAX_LABEL_CHARS:
            raise ModelImportError("labels", f"{path} line {i} is {label[:80]!r}: a label is a non-empty line of at "
                                             f"most {MAX_LABEL_CHARS} characters without ':' (Triton returns "
                                             "'score:index:label'), control characters or line separators")
    return labels


def _labels_file(contract: ModelContract, labels: list[str] | None) -> dict[str, bytes]:
    if contract.output.kind != "classes":
        return {}
    names = labels if labels is not None else [str(i) for i in range(contract.output.num_classes)]
    return {model_config.LABELS_FILE: ("\n".join(names) + "\n").encode()}


def import_model(onnx_path: Path, *, name: str, contract: ModelContract, repository: Path, photos: Sequence[Path],
                 labels: Path | None = None, version: int | None = None, calibrate: Sequence[Path] = (),
                 gpu_out: Path | None = None, gpus: int = 1, instances_per_gpu: int = 1, instances: int = 1,
                 max_batch_size: int = 32) -> ImportResult:
    """Validate, wrap, check and write ``onnx_path`` as model ``name`` (see the module's doc)."""
    check_name(name)
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise ModelImportError("version", f"must be in [1, {MAX_VERSION}] (Triton reads it as a 64-bit integer), "
                                          f"got {version}")
    for field, value in (("gpus", gpus), ("instances_per_gpu", instances_per_gpu), ("instances", instances),
                         ("max_batch_size", max_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ModelImportError(field, f"must be an integer >= 1, got {value!r}")
    if labels is not None and contract.output.kind != "classes":
        raise ModelImportError("labels", "an embedding model has no labels; drop --labels")
    if not photos:
        raise ModelImportError("photos", "no photos to check the wrapped model on")
    label_list = read_labels(labels) if labels is not None else None
    model = load(onnx_path)
    validation = validate(model, contract, label_list)
    wrapped = wrap(model, contract, validation)
    wrapped_bytes = wrapped.SerializeToString()
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        check, outputs = contract_images.compare(model.SerializeToString(), wrapped_bytes, contract,
                                                 list(photos)[:CHECK_PHOTOS], validation.input_name,
                                                 validation.input_dtype)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:  # Pillow on a photo
        raise ModelImportError("photos", f"a photo Pillow cannot read: {exc}") from None
    except ValueError as exc:
        raise ModelImportError("output", str(exc)) from None
    except (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidArgument, ort_errors.NotImplemented,
            ort_errors.RuntimeException, ort_errors.EPFail) as exc:
        raise ModelImportError("model", "onnxruntime's CPU provider, which checks and serves it, cannot run "
                                        f"it: {str(exc)[:500]}") from None
    width = contract.output.num_classes if contract.output.kind == "classes" else contract.output.dim
    if outputs.shape[1] != width:
        raise ModelImportError("output", f"the model returns {outputs.shape[1]} values per image, the contract "
                                         f"says {width}")
    if not check.passed:
        raise ModelImportError("wrap", check.line())
    if not check.batch_independent:
        raise ModelImportError("output", f"the model's output for a photo depends on the other photos of its batch "
                                         f"(alone against in a batch: max |diff| {check.batch_diff:.2e}); Triton "
                                         "batches different requests together, so each would see the others. "
                                         "A dynamically quantised model does this (its activation scales come "
                                         "from the batch): import the float model and --calibrate instead")

    model_files = _labels_file(contract, label_list)
    cpu = CpuTarget(instances=instances, intra_op_threads=default_threads(instances), max_batch_size=max_batch_size)
    with tempfile.TemporaryDirectory(prefix="imgstream-import-") as tmp:
        fp32_path = Path(tmp) / model_config.ONNX_FILE
        fp32_path.write_bytes(wrapped_bytes)
        python_files = {model_config.ONNX_FILE: fp32_path, "model.py": TEMPLATE}
        entries = [(Path(repository), Entry(model_config.model_config(ModelSpec(name, contract), cpu),
                                            model_files, python_files))]
        report = None
        if calibrate:
            int8, report = calibrate_int8(fp32_path, name, contract, calibrate)
            int8_path = Path(tmp) / "int8.onnx"
            onnx.save(int8, str(int8_path))
            entries.append((Path(repository), Entry(model_config.model_config(ModelSpec(f"{name}_int8", contract, "int8"),
                                                                              cpu),
                                                    model_files, {model_config.ONNX_FILE: int8_path,
                                                                  "model.py": TEMPLATE})))
        if gpu_out is not None:
            gpu = GpuTarget(gpus=gpus, instances_per_gpu=instances_per_gpu, max_batch_size=max_batch_size)
            onnx_files = {model_config.ONNX_FILE: fp32_path}
            plan = ModelSpec(name, contract, "fp16")  # TensorRT builds FP16 kernels from the FP32 graph
            entries.append((Path(gpu_out), Entry(model_config.model_config(ModelSpec(name, contract), gpu, "onnxruntime"),
                                                 model_files, onnx_files)))
            entries.append((Path(gpu_out), Entry(model_config.model_config(plan, gpu, "tensorrt_plan"),
                                                 model_files, onnx_files)))
        version = version or model_entries.next_version([root / e.name for root, e in entries])
        for root, entry in entries:
            if (root / entry.name / str(version)).exists():
                raise ModelImportError("version", f"{root / entry.name / str(version)} exists already")
        written = []
        for root, entry in entries:
            if entry.config.platform == "tensorrt_plan":
                args = "\n".join(model_config.trtexec_args(plan, gpu, version)) + "\n"
                entry = Entry(entry.config, {**entry.model_files, TRTEXEC_ARGS_FILE: args.encode()}, entry.version_files)
            written.append(model_entries.write(root, entry, version))
    return ImportResult(name, version, validation, check, tuple(written), report)
