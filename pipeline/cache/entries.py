"""Cache entries: a folder ``<root>/<key>/`` whose ``manifest.json`` is written last and records,
besides the inputs of the key, the size and SHA-256 of every file the entry holds.

- ``finish_entry(entry, inputs, files)`` marks an entry complete; an entry without its manifest
  (or with a manifest from before files were recorded) is incomplete and is redone.
- ``verify_entry(entry)`` checks every recorded file before the entry is used: a missing or
  truncated file, or one whose bytes changed, is an error naming the entry, the file, what
  differed and the fix (delete the entry, or ``make clean-cache``). Sizes are checked every time;
  the SHA-256 once per process per file state (path, size, modification time).
- ``entry_lock(entry)``: one writer per entry across processes (``fcntl.flock`` on
  ``<entry>.lock``; the lock dies with its process, so none is ever stale). Writers take it, look
  again whether the entry is complete, and only then compute it: two stages racing for one entry
  produce one valid entry, whichever comes first.
- ``claim(entry)``: the lock plus that second look, as one ``with`` block.
- ``remove_tree(path, inside)``: ``shutil.rmtree`` that refuses a path outside ``inside`` (or
  ``inside`` itself, the root, an empty path).

Keys and atomic writes are in ``pipeline.cache.files``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from pipeline.cache.files import hash_file, read_json, write_json
from pipeline.errors import PipelineError

MANIFEST = "manifest.json"
_FILES = "files"  # the manifest's record of the entry's files
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) hashed in this process


def entry_complete(entry: str | os.PathLike) -> bool:
    """Whether a cache entry folder holds its manifest with the record of its files."""
    path = Path(entry) / MANIFEST
    if not path.is_file():
        return False
    try:
        return _FILES in read_json(path)
    except (OSError, ValueError):  # a torn or damaged manifest: the entry is redone
        return False


def finish_entry(entry: str | os.PathLike, inputs: dict, files: Iterable[str]) -> None:
    """Mark a cache entry complete: write its manifest (always the last write).

    Args:
        entry: the entry folder.
        inputs: what its key hashes and anything else worth recording.
        files: names of the files in ``entry`` the entry consists of; each one's size and SHA-256
            are recorded for ``verify_entry``.
    """
    entry = Path(entry)
    record = {}
    for name in files:
        path = entry / name
        record[name] = {"bytes": path.stat().st_size, "sha256": hash_file(path)}
        _VERIFIED.add(_state(path))
    write_json(entry / MANIFEST, {**inputs, _FILES: record})


def _state(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _damaged(entry: Path, detail: str) -> PipelineError:
    return PipelineError(f"cache entry {entry} is damaged: {detail}. Delete the folder {entry} "
                         "(or the whole cache: `make clean-cache`) and rerun the stage that writes "
                         "it; it will be recomputed.")


def read_entry_manifest(entry: str | os.PathLike) -> dict:
    """The manifest of a complete entry, its files not checked (``verify_entry`` does that).

    For decisions made from the manifest alone (e.g. planning which runs read an entry), when
    the entry's files are verified later by whatever reads them.

    Raises:
        PipelineError: the entry is incomplete or its manifest damaged, naming the fix.
    """
    entry = Path(entry)
    if not (entry / MANIFEST).is_file():
        raise PipelineError(f"cache entry {entry} is missing or incomplete (no {MANIFEST}); rerun "
                            "the stage that writes it.")
    try:
        manifest = read_json(entry / MANIFEST)
    except (OSError, ValueError) as exc:
        raise _damaged(entry, f"its {MANIFEST} cannot be read ({exc})") from None
    if _FILES not in manifest:
        raise _damaged(entry, f"its {MANIFEST} records no file digests (an entry written by an "
                              "older version)")
    return manifest


def verify_entry(entry: str | os.PathLike) -> dict:
    """Check a complete entry's files against its manifest; returns the manifest.

    Raises:
        PipelineError: the entry is incomplete, or a file is missing, of another size or of other
            content than recorded, naming the file and the fix.
    """
    entry = Path(entry)
    manifest = read_entry_manifest(entry)
    for name, want in manifest[_FILES].items():
        path = entry / name
        if not path.is_file():
            raise _damaged(entry, f"{name} is missing")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise _damaged(entry, f"{name} has {size} bytes, its manifest records {want['bytes']}"
                                  + (" (truncated)" if size < want["bytes"] else ""))
        state = _state(path)
        if state in _VERIFIED:
            continue
        digest = hash_file(path)
        if digest != want["sha256"]:
            raise _damaged(entry, f"the SHA-256 of {name} is {digest[:16]}..., its manifest "
                                  f"records {want['sha256'][:16]}... (its contents changed)")
        _VERIFIED.add(state)
    return manifest


@contextlib.contextmanager
def entry_lock(entry: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of one cache entry (blocking until another writer releases it).

    The lock file sits beside the entry (``<entry>.lock``), so it exists before the entry does.
    """
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def claim(entry: str | os.PathLike) -> Iterator[bool]:
    """Hold the entry's lock; yields whether it still has to be computed.

    ``False`` means the entry is complete (perhaps finished by another process while this one
    waited for the lock) and is to be reused as it is.

    Example:
        >>> with claim(entry) as todo:
        ...     if todo:
        ...         compute_into(entry)
    """
    with entry_lock(entry):
        yield not entry_complete(entry)


def remove_tree(path: str | os.PathLike, inside: str | os.PathLike) -> None:
    """Delete the folder ``path``, which must lie strictly inside the folder ``inside``.

    Raises:
        PipelineError: ``path`` is empty, the file-system root, ``inside`` itself or outside it
            (after resolving links and ``..``); nothing is deleted then.
    """
    if not str(path).strip() or not str(inside).strip():
        raise PipelineError(f"refusing to delete {str(path)!r} inside {str(inside)!r}: an empty "
                            "path.")
    real, top = Path(path).resolve(), Path(inside).resolve()
    if real == Path(real.anchor) or real == top or top not in real.parents:
        raise PipelineError(f"refusing to delete {real}: only folders inside {top} may be "
                            "removed by the pipeline.")
    try:
        shutil.rmtree(real)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOENT,):
            raise
