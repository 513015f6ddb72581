"""Read a PyTorch state-dict file (``.pth``/``.pt``) into NumPy arrays without importing PyTorch.

A ``torch.save`` file is a pickle plus raw tensor storages, in one of two containers:

* **zip** (torch >= 1.6, the default): a zip archive ``<prefix>/data.pkl`` (the pickle),
  ``<prefix>/data/<key>`` (one raw storage per key, no header) and ``<prefix>/byteorder``
  (``little``/``big``; absent in files from before torch 1.10, which are little-endian).
* **legacy** (``_use_new_zipfile_serialization=False``, and every file older than torch 1.6):
  five pickles and the raw data back to back: the magic number ``0x1950a86a20f9469cfc6c``, the
  protocol version ``1001``, a ``sys_info`` dict, the main pickle, the list of storage keys in the
  order their data follows; then, per key, an int64 element count and the elements, little-endian.

In both, the main pickle names each tensor as ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)`` and each storage as a persistent id ``('storage', torch.FloatStorage, key,
location, numel[, view_metadata])``.

Unpickling runs whatever callables a pickle names, so this reader never uses the plain unpickler:
``_RestrictedUnpickler.find_class`` resolves only the globals that rebuilding tensors needs
(``ALLOWED_GLOBALS``) to harmless stand-ins defined here, and refuses every other global
(``os.system``, ``builtins.eval``, a pickled ``nn.Module`` class...) with a ``PipelineError`` before
anything is called. Tensors are rebuilt with NumPy after unpickling, honouring offset and strides
(views such as ``t()`` or ``x[1:3, ::2]`` come back as the values they show, as contiguous copies).

Nested checkpoints: when the top-level dict is not all tensors, the reader accepts the first of
``NESTED_KEYS`` (``state_dict``, ``model``, ``model_state_dict``, ``net``) whose value is a dict of
tensors only, and ignores the plain values beside it (epoch numbers...). Anything else that is not a
tensor is an error naming the key.

Nothing here imports PyTorch or TensorFlow.
"""

from __future__ import annotations

import collections
import functools
import io
import pickle
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from pipeline.errors import PipelineError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL = 1001  # torch/serialization.py PROTOCOL_VERSION
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net")

# torch.<Name>Storage -> NumPy dtype code (without byte order). BFloat16 has no NumPy dtype: it is
# read as uint16 and widened to float32 (its bits are the top half of a float32).
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1", "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
}
_CODES = frozenset(_STORAGE_DTYPES.values())
_RESAVE = ("re-save it from PyTorch as a plain state dict: torch.save(model.state_dict(), path)")


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: the pickle uses them only as dtype tokens."""

    name: str
    code: str  # NumPy dtype code, no byte order

    @property
    def itemsize(self) -> int:
        return np.dtype(self.code).itemsize


@dataclass
class _Storage:
    """One storage: its flat elements (filled in when the raw data is read) or a view of another."""

    key: str
    kind: _StorageType
    numel: int
    data: np.ndarray | None = None  # (numel,), file byte order
    base: "_Storage | None" = None  # legacy view: elements [offset, offset + numel) of base
    offset: int = 0

    def elements(self) -> np.ndarray:
        if self.base is not None:
            return self.base.elements()[self.offset:self.offset + self.numel]
        if self.data is None:
            raise KeyError(self.key)
        return self.data


@dataclass
class _LazyTensor:
    """What ``_rebuild_tensor_v2`` returns here: resolved to an array once all storages are read."""

    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any,
                    **__: Any) -> _LazyTensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor``: only records."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"a tensor's storage is a {type(storage).__name__}, not a "
                                     "storage record")
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) for v in ints):
        raise pickle.UnpicklingError("a tensor's offset, size or stride is not made of integers")
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_: Any, **__: Any) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter``: a Parameter is its data here."""
    return data


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, code) for name, code in _STORAGE_DTYPES.items()},
    # A storage saved on its own (not behind a tensor) is untyped: bytes.
    ("torch", "UntypedStorage"): _StorageType("UntypedStorage", "u1"),
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", "u1"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only ``ALLOWED_GLOBALS`` and turns persistent ids into ``_Storage``.

    Args:
        file: the pickle stream.
        source: the file's name, for error messages.
        storage: ``(key, kind, numel) -> _Storage`` for the container at hand.
    """

    def __init__(self, file: BinaryIO, source: str, storage: Callable[..., _Storage]):
        super().__init__(file)
        self._source = source
        self._storage = storage
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        value = ALLOWED_GLOBALS.get((module, name))
        # A fresh object per lookup, so that a pickle's BUILD opcode cannot alter what the next
        # lookup (or the next file) gets; the OrderedDict class cannot be altered.
        if isinstance(value, _StorageType):
            return _StorageType(value.name, value.code)
        if value is collections.OrderedDict:
            return value
        if value is not None:
            return functools.partial(value)
        hint = (" (a pickled module or object, not a state dict)"
                if module.startswith("torch") else "")
        raise PipelineError(
            f"{self._source}: refused to load global {module}.{name}{hint}. A .pth file is a "
            "pickle, and this reader calls nothing but what rebuilding tensors needs "
            f"(OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage). If the file is "
            f"trusted, {_RESAVE}; otherwise do not use it.")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            what = pid[0] if isinstance(pid, tuple) and pid else pid
            raise PipelineError(f"{self._source}: holds a persistent object {what!r}, not a tensor "
                                f"storage (a pickled nn.Module?); {_RESAVE}.")
        kind, key, numel = pid[1], str(pid[2]), pid[4]
        if not (isinstance(kind, _StorageType) and kind.code in _CODES and isinstance(numel, int)
                and numel >= 0):
            raise PipelineError(f"{self._source}: storage {key!r} has no storage type; "
                                f"{_RESAVE}.")
        if key not in self.storages:
            self.storages[key] = self._storage(key, kind, numel)
        root = self.storages[key]
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return root
        view_key, offset, view_size = view  # legacy storage view (torch < 1.0 files)
        if str(view_key) not in self.storages:
            self.storages[str(view_key)] = _Storage(str(view_key), kind, view_size, base=root,
                                                    offset=offset)
        return self.storages[str(view_key)]


def _read_zip(path: Path, archive: zipfile.ZipFile) -> tuple[Any, dict[str, _Storage]]:
    """Unpickle ``<prefix>/data.pkl`` and read every storage it names from ``<prefix>/data/``."""
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pkl:
        raise PipelineError(f"{path}: a zip file without <prefix>/data.pkl is not a torch.save "
                            "file; pass the .pth written by torch.save.")
    prefix = pkl[0][:-len("data.pkl")]
    order = "<"
    if f"{prefix}byteorder" in names:
        order = ">" if archive.read(f"{prefix}byteorder").strip() == b"big" else "<"

    def storage(key: str, kind: _StorageType, numel: int) -> _Storage:
        record = f"{prefix}data/{key}"
        try:
            raw = archive.read(record)
        except KeyError:
            raise PipelineError(f"{path}: storage {record} is missing from the archive (the file "
                                "is truncated or damaged); copy or save it again.") from None
        if len(raw) < numel * kind.itemsize:
            raise PipelineError(f"{path}: storage {record} holds {len(raw)} bytes, {numel} "
                                f"elements of {kind.name} need {numel * kind.itemsize}; the file "
                                "is damaged: copy or save it again.")
        data = np.frombuffer(raw, dtype=order + kind.code, count=numel)
        return _Storage(key, kind, numel, data=data)

    unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pkl[0])), str(path), storage)
    return unpickler.load(), unpickler.storages


def _read_legacy(path: Path, f: BinaryIO) -> tuple[Any, dict[str, _Storage]]:
    """Read the five legacy pickles and the raw storages that follow them."""
    def header() -> _RestrictedUnpickler:
        return _RestrictedUnpickler(f, str(path), lambda key, kind, n: _Storage(key, kind, n))

    magic = header().load()
    if magic != LEGACY_MAGIC:
        raise PipelineError(f"{path}: starts with a pickle but not with torch's magic number; it "
                            "is not a torch.save file. Pass the .pth written by torch.save.")
    protocol = header().load()
    if protocol != LEGACY_PROTOCOL:
        raise PipelineError(f"{path}: legacy torch file of protocol {protocol!r}; only "
                            f"{LEGACY_PROTOCOL} is known; load it in PyTorch and {_RESAVE}.")
    sys_info = header().load()
    if not isinstance(sys_info, dict):
        raise PipelineError(f"{path}: legacy torch file without its sys_info record; the file is "
                            "damaged: copy or save it again.")
    main = header()
    result = main.load()
    keys = header().load()
    if not isinstance(keys, list):
        raise PipelineError(f"{path}: legacy torch file without its storage key list; the file is "
                            "damaged: copy or save it again.")
    for key in keys:
        record = main.storages.get(str(key))
        if record is None:
            raise PipelineError(f"{path}: lists storage {key!r}, which no tensor uses; the file "
                                "is damaged: copy or save it again.")
        head = f.read(8)
        count = struct.unpack("<q", head)[0] if len(head) == 8 else -1
        raw = f.read(count * record.kind.itemsize) if count >= 0 else b""
        if count < 0 or len(raw) < count * record.kind.itemsize:
            raise PipelineError(f"{path}: the data of storage {key!r} is cut short (the file is "
                                "truncated); copy or download it again.")
        record.data = np.frombuffer(raw, dtype="<" + record.kind.code, count=count)
        record.numel = count
    return result, main.storages


def _to_array(path: Path, key: str, t: _LazyTensor) -> np.ndarray:
    """The values a tensor shows: ``as_strided`` over its storage, copied to a contiguous array.

    Returns:
        array of shape ``t.size``, native byte order (BFloat16 widened to float32).
    """
    kind = t.storage.kind
    try:
        flat = t.storage.elements()
    except KeyError:
        raise PipelineError(f"{path}: tensor {key!r} uses storage {t.storage.key!r}, whose data "
                            "is not in the file (truncated or damaged); copy or save it "
                            "again.") from None
    if any(n == 0 for n in t.size):
        out = np.zeros(t.size, dtype=flat.dtype)
    else:
        last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
        if t.offset < 0 or min(t.stride, default=0) < 0 or last >= flat.size:
            raise PipelineError(f"{path}: tensor {key!r} (size {t.size}, stride {t.stride}, "
                                f"offset {t.offset}) reaches past its storage of {flat.size} "
                                "elements; the file is damaged: copy or save it again.")
        view = np.lib.stride_tricks.as_strided(
            flat[t.offset:], shape=t.size, strides=[s * flat.itemsize for s in t.stride],
            writeable=False)
        out = np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")
    if kind.name == "BFloat16Storage":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _tensor_dict(path: Path, obj: Any) -> dict[str, _LazyTensor]:
    """The state dict inside the unpickled object (see the module docstring for nesting)."""
    if not isinstance(obj, dict):
        raise PipelineError(f"{path}: holds a {type(obj).__name__}, not a state dict; {_RESAVE}.")
    others = [k for k, v in obj.items() if not isinstance(v, _LazyTensor)]
    if not others:
        return obj
    for name in NESTED_KEYS:
        inner = obj.get(name)
        if isinstance(inner, dict) and inner and all(
                isinstance(v, _LazyTensor) for v in inner.values()):
            return inner
    shown = ", ".join(f"{k!r} ({type(obj[k]).__name__})" for k in others[:10])
    raise PipelineError(f"{path}: entries {shown} are not tensors, and no "
                        f"{'/'.join(NESTED_KEYS)} entry holds a dict of tensors only; {_RESAVE}.")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``torch.save``'d state dict without PyTorch and without running code from the file.

    Args:
        path: a ``.pth``/``.pt`` file, zip or legacy container (see the module docstring).

    Returns:
        parameter name -> array, in the file's order; each array has the tensor's shape and dtype
        (float32, float16, int64, ...; bfloat16 widened to float32), contiguous, native byte order.

    Raises:
        PipelineError: the file is missing, not a torch file, truncated or damaged; the pickle names
            a global outside ``ALLOWED_GLOBALS`` (nothing from it is called); or a value is not a
            tensor. The message names the file, the key or global at fault and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file; pass the path of a .pth state dict.")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                obj, _ = _read_zip(path, archive)
                tensors = _tensor_dict(path, obj)
                return {str(k): _to_array(path, str(k), v) for k, v in tensors.items()}
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0)
            if head == b"PK\x03\x04":
                raise PipelineError(f"{path}: is a zip archive that cannot be opened (truncated "
                                    "or damaged); copy or download it again.")
            if head[:1] != b"\x80":  # every torch pickle starts with the PROTO opcode
                old = " (a tar archive: torch < 0.4)" if tarfile.is_tarfile(path) else ""
                raise PipelineError(f"{path}: is not a torch.save file{old}; pass the .pth "
                                    f"written by torch.save, or {_RESAVE}.")
            obj, _ = _read_legacy(path, f)
            tensors = _tensor_dict(path, obj)
            return {str(k): _to_array(path, str(k), v) for k, v in tensors.items()}
    except PipelineError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, struct.error, zipfile.BadZipFile, OSError) as e:
        raise PipelineError(f"{path}: cannot be read as a torch.save file ({type(e).__name__}: "
                            f"{e}); it is truncated, damaged or not a state dict: copy or save it "
                            "again.") from None
