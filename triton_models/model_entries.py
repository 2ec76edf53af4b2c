"""Write one model's entry into a Triton repository so that a Triton loading it never sees half of it.

An entry is ``<repo>/<name>/{config.pbtxt, labels.txt, trtexec.args, <version>/{model.onnx, model.py}}``
(labels for classes, trtexec.args for TensorRT plans, model.py for the python backend). The
version folder is written beside the repository (``.<repo name>.staging-*``, same file system)
and renamed into place in one step; a new model's whole folder moves in at once. The files of
the model's folder are then replaced one by one (write a temporary file, rename), config.pbtxt
last, so a reload after the import sees the new version with its new config.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from triton_models import model_config
from triton_models.onnx_validate import ModelImportError

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class Entry:
    """One model folder to write: its config, the files beside it and the files of its version."""

    config: pb.ModelConfig
    model_files: dict[str, bytes] = field(default_factory=dict)  # labels.txt, trtexec.args
    version_files: dict[str, bytes | Path] = field(default_factory=dict)  # model.onnx, model.py: bytes or a file

    @property
    def name(self) -> str:
        return self.config.name


def versions(model_dir: Path) -> list[int]:
    """The version folders of a model folder, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def next_version(model_dirs: list[Path]) -> int:
    """One above the highest version of any of these model folders (1 when none has one)."""
    return max([v for d in model_dirs for v in versions(d)], default=0) + 1


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _fill(folder: Path, files: dict[str, bytes | Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, folder / name)
        else:
            (folder / name).write_bytes(content)


def write(repository: Path, entry: Entry, version: int) -> Path:
    """Write ``entry`` as ``version`` under ``repository``; returns the model's folder. Refuses a version
    folder that exists already."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    model_dir = repository / entry.name
    if (model_dir / str(version)).exists():
        raise ModelImportError("version", f"{model_dir / str(version)} exists already; import as another version "
                                          f"(the next free one is {next_version([model_dir])})")
    config = model_config.render(entry.config).encode()
    staging = Path(tempfile.mkdtemp(prefix=f".{repository.name}.staging-", dir=repository.parent))
    try:
        if not model_dir.exists():
            new = staging / entry.name
            _fill(new / str(version), entry.version_files)
            _fill(new, {**entry.model_files, CONFIG_FILE: config})
            try:
                new.rename(model_dir)
                return model_dir
            except OSError:  # another import made the folder meanwhile: add a version to it instead
                if not model_dir.is_dir():
                    raise
        _fill(staging / str(version), entry.version_files)
        (staging / str(version)).rename(model_dir / str(version))
        for name, data in entry.model_files.items():
            _replace(model_dir / name, data)
        _replace(model_dir / CONFIG_FILE, config)
        return model_dir
    finally:
        shutil.rmtree(staging, ignore_errors=True)
