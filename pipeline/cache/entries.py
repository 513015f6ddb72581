"""Cache entries: a folder ``<root>/<key>/`` whose ``manifest.json`` is written last.

An entry without its manifest is incomplete and is redone; see ``pipeline.cache.files`` for keys
and atomic writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.cache.files import write_json

MANIFEST = "manifest.json"


def entry_complete(entry: str | os.PathLike) -> bool:
    """Whether a cache entry folder holds its manifest, i.e. was finished."""
    return (Path(entry) / MANIFEST).is_file()


def finish_entry(entry: str | os.PathLike, inputs: dict) -> None:
    """Mark a cache entry complete by writing its manifest of inputs (always the last write)."""
    write_json(Path(entry) / MANIFEST, inputs)
