"""The manifest table: its columns, and writing, reading and checking ``manifest.csv``.

The manifest is what every stage after ``data`` reads (``pipeline.data.datasets`` builds it from a
published dataset). Columns, in order: ``image, path, diagnosis, category, group, difficulty, age,
sex, site`` (``MANIFEST_COLUMNS``), then extra columns (``split`` for ISIC 2016, ``case_num`` for
derm7pt...). ``image`` is a unique id, ``path`` the image file relative to the manifest's folder,
``diagnosis`` the published diagnosis, ``category`` its category from ``pipeline.data.vocabulary`` (the
grade ``0``..``4`` for retinopathy), ``group`` the lesion or patient whose images must stay in one
fold half (the image id when unknown). Unknown values are empty strings.

``write_manifest`` writes it atomically with image paths relative to the manifest's folder;
``read_manifest`` checks it and returns every column as str plus ``abspath``, the absolute path.

Row numbers in error messages count the header as row 1, as a spreadsheet shows them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pipeline.cache.files import write_csv
from pipeline.data.published import check_rows, read_published_csv, where
from pipeline.data.vocabulary import MANIFEST_CATEGORIES
from pipeline.errors import PipelineError

MANIFEST_COLUMNS = ("image", "path", "diagnosis", "category", "group", "difficulty", "age", "sex",
                    "site")


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
    table = read_published_csv(path, MANIFEST_COLUMNS)
    check_rows(table, check_images=False)
    for column, bad, allowed in (("path", table["path"] == "", "an image path"),
                                 ("category", ~table["category"].isin(MANIFEST_CATEGORIES),
                                  ", ".join(MANIFEST_CATEGORIES))):
        if bad.any():
            raise PipelineError(f"{where(table[bad].iloc[0])}: {column} "
                                f"{table.loc[bad, column].iloc[0]!r} is not allowed; expected "
                                f"{allowed} ({int(bad.sum())} such rows)")
    folder = path.parent.absolute()
    table["abspath"] = [os.path.normpath(os.path.join(folder, p)) for p in table["path"]]
    table["_where"] = [f"{path}, row {r}" for r in table["_row"]]  # for messages
    return table.drop(columns=["_row", "_file"])
