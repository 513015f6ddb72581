"""Hashes, canonical JSON cache keys and atomic writes.

A cache key hashes everything that determines an entry (weights bytes, network and layer,
preprocessing, image list and file contents) in a canonical JSON form, so the same inputs give the
same key on every machine; file dates are never trusted. All writes go to a temporary name in the
same folder and are renamed into place, so an interrupted stage never leaves a half-written file
that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.errors import PipelineError

_CHUNK = 1 << 20
_UMASK = os.umask(0)
os.umask(_UMASK)


def hash_bytes(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical(obj: Any) -> Any:
    """Turn ``obj`` into something ``json.dumps(sort_keys=True)`` writes the same way every time."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return {"ndarray": hash_bytes(np.ascontiguousarray(obj).tobytes()), "shape": list(obj.shape),
                "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj.is_integer():
        return obj  # keep 1.0 distinct from 1 only through type; json writes 1.0
    return obj


def hash_json(obj: Any) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (dict keys sorted, arrays hashed)."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"))
    return hash_bytes(text.encode("utf-8"))


def short_key(obj: Any, length: int = 16) -> str:
    """A cache key: the first ``length`` hex digits of ``hash_json(obj)``."""
    return hash_json(obj)[:length]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so libraries that look at the
    extension (``np.save``, ``keras.Model.save_weights``) write the right format.

    Example:
        >>> with atomic_path("out/features.npy") as tmp:
        ...     np.save(tmp, features)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes)
                                    or ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(_canonical(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def write_csv(path: str | os.PathLike, frame: "Any", **kwargs: Any) -> None:
    """``DataFrame.to_csv`` to ``path`` atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, **kwargs)



def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 28 else f"{n / 2 ** 20:.1f} MiB"


def free_bytes(path: str | os.PathLike) -> int:
    """Free space on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def io_error(exc: OSError, path: str | os.PathLike, needed: int | None = None) -> PipelineError:
    """A clear error for a failed write: full disk, read-only file system, no permission.

    Args:
        exc: the ``OSError`` raised.
        path: the file or folder being written.
        needed: the bytes the write needs, when known.
    """
    where = Path(exc.filename) if getattr(exc, "filename", None) else Path(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        need = f" It needs {_gib(needed)};" if needed else ""
        return PipelineError(f"no space left to write {where}.{need} {_gib(free_bytes(where))} "
                             f"are free there. Free some space, or point `experiment.cache_dir` "
                             "at a larger disk, and rerun: the stage resumes.")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = "a read-only file system" if exc.errno == errno.EROFS else "no permission"
        return PipelineError(f"cannot write {where}: {what} ({exc.strerror}). The stage needs to "
                             "write a new cache entry there; make the folder writable, or set "
                             "`experiment.cache_dir` to a writable folder.")
    return PipelineError(f"cannot write {where}: {exc.strerror or exc}.")


def allocate_npy(path: str | os.PathLike, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` file opened as a writable memmap, its disk space reserved first.

    Writing through a memmap onto a full disk kills the process with SIGBUS and no message;
    reserving the space with ``posix_fallocate`` turns that into a clear error before anything is
    written.

    Raises:
        PipelineError: there is not enough space, or the folder cannot be written.
    """
    path = Path(path)
    needed = int(np.prod(shape)) * np.dtype(dtype).itemsize + 4096
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
        with open(path, "r+b") as handle:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, path.stat().st_size)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise io_error(exc, path, needed) from None
    return out
