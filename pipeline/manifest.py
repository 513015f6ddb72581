"""The manifest table: its columns, and writing, reading and checking ``manifest.csv``.

The manifest is what every stage after ``data`` reads (``pipeline.datasets`` builds it from a
published dataset). Columns, in order: ``image, path, diagnosis, category, group, difficulty, age,
sex, site`` (``MANIFEST_COLUMNS``), then extra columns (``split`` for ISIC 2016, ``case_num`` for
derm7pt...). ``image`` is a unique id, ``path`` the image file relative to the manifest's folder,
``diagnosis`` the published diagnosis, ``category`` its category from ``pipeline.vocabulary`` (the
grade ``0``..``4`` for retinopathy), ``group`` the lesion or patient whose images must stay in one
fold half (the image id when unknown). Unknown values are empty strings.

``write_manifest`` writes it atomically with image paths relative to the manifest's folder;
``read_manifest`` checks it and returns every column as str plus ``abspath``, the absolute path.

Also here, because the dataset adapters share them: ``_read_csv`` (any CSV as stripped strings,
with each row's file and row number) and ``_validate`` (image ids present and unique, image files
present). Row numbers in error messages count the header as row 1, as a spreadsheet shows them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.cache import write_csv
from pipeline.errors import PipelineError

MANIFEST_COLUMNS = ("image", "path", "diagnosis", "category", "group", "difficulty", "age", "sex",
                    "site")
GRADES = ("0", "1", "2", "3", "4")
_CATEGORIES = ("melanoma", "bcc", "benign") + GRADES
_SHOWN = 5  # how many offending rows an error message lists


def _read_csv(path: Path, required: Sequence[str] = (), names: Sequence[str] | None = None
              ) -> pd.DataFrame:
    """Read a published CSV as strings (stripped), with ``_file`` and ``_row`` columns added.

    ``names`` reads a file without a header. Blank lines are skipped but still counted, so ``_row``
    is the row a spreadsheet shows.
    """
    if not path.is_file():
        raise PipelineError(f"{path} not found: is --root the dataset's folder as published?")
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


def _where(row: dict) -> str:
    return f"{row['_file']}, row {row['_row']}"


def _validate(frame: pd.DataFrame, check_images: bool) -> None:
    """Image ids present and unique; image files present (when ``check_images``)."""
    bad = frame[frame["image"] == ""]
    if len(bad):
        raise PipelineError(f"{_where(bad.iloc[0])} has no image id ({len(bad)} such rows)")
    repeated = frame[frame["image"].duplicated(keep=False)]
    if len(repeated):
        lines = [f"{image!r} in " + "; ".join(f"{file}, rows {', '.join(map(str, g2['_row']))}"
                                              for file, g2 in g.groupby("_file", sort=False))
                 for image, g in list(repeated.groupby("image", sort=False))[:_SHOWN]]
        raise PipelineError(f"image ids must be unique; {repeated['image'].nunique()} appear more "
                            "than once: " + " | ".join(lines))
    missing = frame[~frame["_found"].astype(bool)] if check_images else frame.iloc[:0]
    if len(missing):
        shown = "; ".join(f"{row['path']} ({_where(row)})"
                          for row in missing.head(_SHOWN).to_dict("records"))
        raise PipelineError(f"{len(missing)} of {len(frame)} image files are missing, e.g. "
                            f"{shown}. Check --root (the dataset's folder as published), or pass "
                            "--no-check-images to write the manifest anyway.")


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a manifest atomically, image paths relative to the manifest's folder.

    Args:
        frame: manifest table (from ``build_manifest`` or ``read_manifest``); its ``abspath``
            column, when present, is where the images are.
        path: the CSV file to write.
    """
    path = Path(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise PipelineError(f"cannot write {path}: the table has no column {missing[0]!r}; "
                            f"columns: {', '.join(frame.columns)}")
    folder = path.parent.absolute()
    out = frame.drop(columns=["abspath"], errors="ignore").copy()
    source = frame["abspath"] if "abspath" in frame.columns else frame["path"]

    def relative(value: str) -> str:
        try:
            return Path(os.path.relpath(os.path.abspath(value), folder)).as_posix()
        except ValueError:  # another drive on Windows: keep it absolute
            return Path(os.path.abspath(value)).as_posix()

    out["path"] = [relative(v) for v in source]
    extras = [c for c in out.columns if c not in MANIFEST_COLUMNS and not str(c).startswith("_")]
    write_csv(path, out[list(MANIFEST_COLUMNS) + extras])


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a manifest.

    Args:
        path: ``manifest.csv`` written by ``write_manifest``.

    Returns:
        Every column as str (empty string = unknown), plus ``abspath``: the absolute image path.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"manifest {path} not found; write it with `python -m pipeline data "
                            f"--dataset NAME --root DIR --out {path}`")
    table = _read_csv(path, MANIFEST_COLUMNS)
    _validate(table, check_images=False)
    for column, bad, allowed in (("path", table["path"] == "", "an image path"),
                                 ("category", ~table["category"].isin(_CATEGORIES),
                                  ", ".join(_CATEGORIES))):
        if bad.any():
            raise PipelineError(f"{_where(table[bad].iloc[0])}: {column} "
                                f"{table.loc[bad, column].iloc[0]!r} is not allowed; expected "
                                f"{allowed} ({int(bad.sum())} such rows)")
    folder = path.parent.absolute()
    table["abspath"] = [os.path.normpath(os.path.join(folder, p)) for p in table["path"]]
    return table.drop(columns=["_row", "_file"])
