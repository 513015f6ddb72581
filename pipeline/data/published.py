"""Reading a dataset's published tables: CSV as stripped strings, each row with its file and row.

Row numbers in error messages count the header as row 1, as a spreadsheet shows them. Used by the
dataset adapters (``pipeline.data.datasets``) and by the manifest reader (``pipeline.data.manifest``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.errors import PipelineError

SHOWN = 5  # how many offending rows an error message lists


def read_published_csv(path: Path, required: Sequence[str] = (), names: Sequence[str] | None = None
              ) -> pd.DataFrame:
    """Read a published CSV as strings (stripped), with ``_file`` and ``_row`` columns added.

    ``names`` reads a file without a header. Blank lines are skipped but still counted, so ``_row``
    is the row a spreadsheet shows.
    """
    if not path.is_file():
        raise PipelineError(f"{path} not found: is --root the dataset's folder as published?")
    _check_utf8(path)
    try:
        with warnings.catch_warnings():  # a row longer than the header would lose data: refuse
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False,
                                header=None if names else 0, names=names, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError,
            UnicodeDecodeError) as exc:
        expected = ", ".join(names) if names else "the header's columns"
        raise PipelineError(f"cannot read {path} as CSV: {exc}. Every row needs the fields "
                            f"{expected}, no more") from None
    table = table.fillna("")  # rows shorter than the header: the missing fields are empty
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise PipelineError(f"{path} has no column {missing[0]!r} (needed: {', '.join(required)}); "
                            f"columns found: {', '.join(table.columns)}")
    table = table.apply(lambda col: col.str.strip())
    table["_row"] = range(1 if names else 2, len(table) + (1 if names else 2))
    table["_file"] = str(path)
    return table[(table.drop(columns=["_row", "_file"]) != "").any(axis=1)].reset_index(drop=True)


def _check_utf8(path: Path) -> None:
    """Refuse a table that is not UTF-8, naming the row and the byte (pandas names neither)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start:exc.start + 1].hex()
        raise PipelineError(
            f"{path} is not UTF-8 text: row {row} has the byte 0x{bad} (at offset {exc.start}), "
            "which UTF-8 does not allow. Re-save the file as UTF-8, e.g. `iconv -f latin1 -t "
            f"utf-8 {path.name} > fixed.csv` when it is Latin-1 (Excel's \"CSV\" often is)") \
            from None


def where(row: dict) -> str:
    """Where a published row comes from, as errors cite it: ``<file>, row <n>``."""
    return f"{row['_file']}, row {row['_row']}"


def inside_root(root: Path, relative: str, row: dict, column: str) -> Path:
    """The file a table's ``column`` names, which must lie inside the dataset's ``root``.

    Raises:
        PipelineError: the path leaves ``root`` (``..``, or an absolute path elsewhere), naming
            the file, the row and the value.
    """
    path = (root / relative).resolve()
    top = root.resolve()
    if top != path and top not in path.parents:
        raise PipelineError(f"{where(row)}: {column} {relative!r} points outside the dataset's "
                            f"folder {top} (to {path}). Image paths must stay inside it: move the "
                            "images under that folder and give their paths relative to it")
    return path


def check_rows(frame: pd.DataFrame, check_images: bool) -> None:
    """Image ids present and unique; image files present (when ``check_images``)."""
    bad = frame[frame["image"] == ""]
    if len(bad):
        raise PipelineError(f"{where(bad.iloc[0])} has no image id ({len(bad)} such rows)")
    repeated = frame[frame["image"].duplicated(keep=False)]
    if len(repeated):
        lines = [f"{image!r} in " + "; ".join(f"{file}, rows {', '.join(map(str, g2['_row']))}"
                                              for file, g2 in g.groupby("_file", sort=False))
                 for image, g in list(repeated.groupby("image", sort=False))[:SHOWN]]
        raise PipelineError(f"image ids must be unique; {repeated['image'].nunique()} appear more "
                            "than once: " + " | ".join(lines))
    missing = frame[~frame["_found"].astype(bool)] if check_images else frame.iloc[:0]
    if len(missing):
        shown = "; ".join(f"{row['path']} ({where(row)})"
                          for row in missing.head(SHOWN).to_dict("records"))
        raise PipelineError(f"{len(missing)} of {len(frame)} image files are missing, e.g. "
                            f"{shown}. Check --root (the dataset's folder as published), or pass "
                            "--no-check-images to write the manifest anyway.")
