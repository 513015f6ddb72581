"""Dataset adapters: each published dataset, as downloaded, becomes one manifest table.

``build_manifest`` reads a dataset in its published layout (derm7pt, ISIC 2016, ISIC 2020, the
ISIC Archive, Kaggle Diabetic Retinopathy, or a generic CSV) into the manifest table that every
later stage reads; ``pipeline.data.manifest`` defines its columns and writes, reads and checks
``manifest.csv``.

Row numbers in error messages count the header as row 1, as a spreadsheet shows them.

The command (``pipeline.stages.data``): ``python -m pipeline data --dataset NAME --root DIR --out manifest.csv [--keep-acral]
[--no-check-images]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import pandas as pd

from pipeline.data.manifest import MANIFEST_COLUMNS
from pipeline.data.published import check_rows, inside_root, read_published_csv, where
from pipeline.data.vocabulary import (
    BENIGN,
    DIFFICULTY_LEVELS,
    GRADES,
    MANIFEST_CATEGORIES,
    MELANOMA,
    METADATA_KEYS,
    categorize,
    categorize_levels,
    normalize,
)
from pipeline.errors import PipelineError

_GENERIC_EXTENSIONS = ("", ".jpg", ".png", ".jpeg", ".tif")


class _Finder:
    """Finds image files among candidate folders, listing each folder once (fast on 30k files)."""

    def __init__(self) -> None:
        self._listings: dict[Path, set[str]] = {}

    def find(self, names: Sequence[str], folders: Sequence[Path]) -> tuple[str, bool]:
        """The first existing ``folder/name`` as (path, True), else (first candidate, False)."""
        for folder in folders:
            if folder not in self._listings:
                self._listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
            found = next((n for n in names if n in self._listings[folder]), None)
            if found is not None:
                return os.path.join(folder, found), True
        return os.path.join(folders[0], names[0]), False


def _age(value: str, row: dict) -> str:
    """Ages as whole numbers when they are (``45.0`` -> ``45``); empty when unknown."""
    try:
        number = float(value) if value not in ("", "unknown") else None
    except ValueError:
        raise PipelineError(f"age {value!r} in {where(row)} is not a number; allowed: a number "
                            "of years or empty") from None
    return "" if number is None else str(int(number)) if number.is_integer() else str(number)


def _difficulty(value: str, row: dict) -> str:
    if normalize(value) not in DIFFICULTY_LEVELS + ("",):
        raise PipelineError(f"difficulty {value!r} in {where(row)} is not one of "
                            f"{', '.join(DIFFICULTY_LEVELS)} (or empty)")
    return normalize(value)


def _rows(table: pd.DataFrame, make: Callable[[dict], dict]) -> pd.DataFrame:
    """Apply ``make`` to every row of ``table`` (keeping ``_file``/``_row``) into a new frame."""
    names = list(table.columns)  # zip over lists: DataFrame.to_dict is slow on 100k-row tables
    rows = (dict(zip(names, values)) for values in zip(*(table[c].tolist() for c in names)))
    records = [{**make(row), "_file": row["_file"], "_row": row["_row"]} for row in rows]
    columns = list(records[0]) if records else list(MANIFEST_COLUMNS) + ["_found", "_file", "_row"]
    return pd.DataFrame.from_records(records, columns=columns)


def _derm7pt(root: Path, *, keep_acral: bool = False) -> pd.DataFrame:
    """The derm7pt release: ``meta/meta.csv`` and ``images/``, dermoscopic images only.

    ``image`` is the ``derm`` path without its extension (``NEL/Nel026``); ``group`` is
    ``case_id`` when given (several images of one case); ``difficulty`` is
    ``level_of_diagnostic_difficulty``; ``site`` is ``location``. Acral lesions are excluded as in
    the paper unless ``keep_acral``; ``attrs["excluded"]["acral"]`` says how many.
    """
    meta = root / "meta" / "meta.csv"
    table = read_published_csv(meta, ("case_num", "diagnosis", "level_of_diagnostic_difficulty", "location",
                             "sex", "derm", "case_id"))
    acral = table["location"].map(normalize) == "acral"
    excluded = 0 if keep_acral else int(acral.sum())
    if not keep_acral:
        table = table[~acral]
    finder = _Finder()

    def make(row: dict) -> dict:
        if not row["derm"]:
            raise PipelineError(f"{where(row)} has no dermoscopic image (column 'derm' is empty)")
        derm = PurePosixPath(row["derm"].replace("\\", "/"))
        inside_root(root / "images", str(derm), row, "derm")
        image = str(derm.with_suffix(""))
        path, found = finder.find([derm.name], [root / "images" / derm.parent])
        return dict(image=image, path=path, diagnosis=row["diagnosis"],
                    category=categorize(row["diagnosis"], file=row["_file"], row=row["_row"]),
                    group=row["case_id"] or image,
                    difficulty=_difficulty(row["level_of_diagnostic_difficulty"], row),
                    age="", sex=row["sex"], site=row["location"], case_num=row["case_num"],
                    _found=found)

    frame = _rows(table, make)
    frame.attrs["excluded"] = {"acral": excluded}
    return frame


ISIC2016_FILES = {"train": ("ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
                            "ISBI2016_ISIC_Part3_Training_Data"),
                  "test": ("ISBI2016_ISIC_Part3_Test_GroundTruth.csv",
                           "ISBI2016_ISIC_Part3_Test_Data")}
_ISIC2016_LABELS = {"benign": "benign", "malignant": "malignant", "0": "benign", "0.0": "benign",
                    "1": "malignant", "1.0": "malignant"}


def _isic2016(root: Path) -> pd.DataFrame:
    """ISIC 2016 Part 3: the training and test ground truths, official split kept in ``split``.

    The test file's ``0.0``/``1.0`` are written as ``benign``/``malignant`` so both halves share
    one diagnosis vocabulary; ``malignant`` is melanoma (Part 3 is melanoma vs not).
    """
    frames = []
    finder = _Finder()
    for split, (truth, folder) in ISIC2016_FILES.items():
        table = read_published_csv(root / truth, names=["image_id", "label"])
        first = table.iloc[0] if len(table) else None
        # A header row added by hand (the published files have none): names, no digits. A first
        # row that holds an image id (digits) is a data row, checked like every other one.
        if first is not None and first["label"].lower() not in _ISIC2016_LABELS \
                and not re.search(r"\d", first["image_id"]):
            table = table.iloc[1:]

        def make(row: dict, split: str = split, folder: str = folder) -> dict:
            word = _ISIC2016_LABELS.get(row["label"].lower())
            if word is None or not row["image_id"]:
                raise PipelineError(f"{where(row)}: expected 'image_id,label' with label one of "
                                    f"{', '.join(_ISIC2016_LABELS)}; got {row['image_id']!r}, "
                                    f"{row['label']!r}")
            path, found = finder.find([row["image_id"] + ".jpg"], [root, root / folder])
            category = categorize(word, file=row["_file"], row=row["_row"], label=word,
                                  malignant_means=MELANOMA)
            return dict(image=row["image_id"], path=path, diagnosis=word, category=category,
                        group=row["image_id"], difficulty="", age="", sex="", site="",
                        split=split, _found=found)

        frames.append(_rows(table, make))
    return pd.concat(frames, ignore_index=True)


ISIC2020_TABLES = ("train.csv", "ISIC_2020_Training_GroundTruth_v2.csv",
                   "ISIC_2020_Training_GroundTruth.csv")


def _isic2020_table(root: Path) -> Path:
    return next((root / n for n in ISIC2020_TABLES if (root / n).is_file()), root / "train.csv")


def _isic2020(root: Path) -> pd.DataFrame:
    """ISIC 2020 ``train.csv``; images ``<image_name>.jpg`` in ``train/`` or ``jpeg/train/``.

    ``group`` is ``patient_id``. The category must agree with ``target`` and
    ``benign_malignant`` (in ISIC 2020, target 1 means melanoma).
    """
    csv = _isic2020_table(root)
    table = read_published_csv(csv, ("image_name", "patient_id", "sex", "age_approx",
                            "anatom_site_general_challenge", "diagnosis", "benign_malignant",
                            "target"))
    finder = _Finder()
    folders = [root / "train", root / "jpeg" / "train"]

    def make(row: dict) -> dict:
        target, label = row["target"], normalize(row["benign_malignant"])
        if (target, label) not in (("0", "benign"), ("1", "malignant")):
            raise PipelineError(f"{where(row)}: target {target!r} and benign_malignant "
                                f"{row['benign_malignant']!r} disagree; allowed: 0 with benign, "
                                "1 with malignant")
        category = categorize(row["diagnosis"], file=row["_file"], row=row["_row"], label=label)
        if (category == MELANOMA) != (target == "1"):
            raise PipelineError(
                f"{where(row)}: diagnosis {row['diagnosis']!r} is category {category!r} but "
                f"target is {target} (in ISIC 2020 target 1 means melanoma); fix the row or its "
                "entry in pipeline/data/vocabulary.py")
        path, found = finder.find([row["image_name"] + ".jpg"], folders)
        return dict(image=row["image_name"], path=path, diagnosis=row["diagnosis"],
                    category=category, group=row["patient_id"] or row["image_name"],
                    difficulty="", age=_age(row["age_approx"], row), sex=row["sex"],
                    site=row["anatom_site_general_challenge"], target=target, _found=found)

    return _rows(table, make)


_ARCHIVE_LEVELS = ("diagnosis_5", "diagnosis_4", "diagnosis_3", "diagnosis_2", "diagnosis_1",
                   "diagnosis")


def _isic_archive(root: Path) -> pd.DataFrame:
    """ISIC Archive images downloaded by ``isic image download``: ``metadata.csv`` beside them.

    The diagnosis is the flat ``diagnosis`` column (older exports) or ``diagnosis_1`` ..
    ``diagnosis_5`` (newer; the most specific non-empty level is kept as ``diagnosis`` and the
    category follows ``vocabulary.categorize_levels``). ``group`` is ``lesion_id``, else
    ``patient_id``, else the image.
    """
    table = read_published_csv(root / "metadata.csv", ("isic_id",))
    levels = [c for c in _ARCHIVE_LEVELS if c in table.columns]
    if not levels:
        raise PipelineError(f"{root / 'metadata.csv'} has no diagnosis column (needed: "
                            f"'diagnosis' or 'diagnosis_1' .. 'diagnosis_5'); columns found: "
                            f"{', '.join(c for c in table.columns if not c.startswith('_'))}")
    finder = _Finder()
    known: dict[tuple, str] = {}  # (levels, label) -> category: the archive repeats a few hundred

    def make(row: dict) -> dict:
        values = [row[c] for c in levels if row[c]]
        label = row.get("benign_malignant")  # None: this export publishes no label
        if (tuple(values), label) not in known:
            category = categorize_levels(values, file=row["_file"], row=row["_row"], label=label)
            if category != BENIGN and normalize(label or "") == "benign":  # a contradiction
                raise PipelineError(
                    f"{where(row)}: diagnosis {values[0]!r} is category {category!r} but the "
                    f"published label is {label!r}; fix the row or pipeline/data/vocabulary.py")
            known[tuple(values), label] = category
        category = known[tuple(values), label]
        path, found = finder.find([row["isic_id"] + ".jpg"], [root])
        group = row.get("lesion_id", "") or row.get("patient_id", "") or row["isic_id"]
        return dict(image=row["isic_id"], path=path, diagnosis=values[0], category=category,
                    group=group, difficulty="", age=_age(row.get("age_approx", ""), row),
                    sex=row.get("sex", ""), site=row.get("anatom_site_general", ""),
                    benign_malignant=label or "", _found=found)

    return _rows(table, make)


def _retinopathy(root: Path) -> pd.DataFrame:
    """Kaggle Diabetic Retinopathy ``trainLabels.csv``; images ``<image>.jpeg`` in train/ or root.

    ``category`` is the grade ``0``..``4``; ``group`` the patient (both eyes stay together);
    ``site`` the eye.
    """
    table = read_published_csv(root / "trainLabels.csv", ("image", "level"))
    finder = _Finder()

    def make(row: dict) -> dict:
        if row["level"] not in GRADES or not row["image"]:
            raise PipelineError(f"{where(row)}: level {row['level']!r} of image "
                                f"{row['image']!r} is not one of {', '.join(GRADES)}")
        eye = re.search(r"_(left|right)$", row["image"])
        path, found = finder.find([row["image"] + ".jpeg"], [root / "train", root])
        return dict(image=row["image"], path=path, diagnosis=f"grade {row['level']}",
                    category=row["level"],
                    group=row["image"][:eye.start()] if eye else row["image"], difficulty="",
                    age="", sex="", site=eye.group(1) if eye else "", _found=found)

    return _rows(table, make)


def _generic_table(root: Path) -> Path:
    if not root.is_dir():
        return root
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise PipelineError(f"--root {root} must be a CSV file or a folder holding exactly one "
                            f"*.csv; found {len(found)}: {', '.join(p.name for p in found)}. "
                            "Pass the CSV file itself.")
    return found[0]


def _generic_csv(root: Path) -> pd.DataFrame:
    """Any ``image,diagnosis[,group][,difficulty][,age][,sex][,site][,path]`` table.

    ``root`` is the CSV file, or a folder holding exactly one. Without a ``path`` column, images
    are ``<image>`` or ``<image>.jpg/.png/.jpeg/.tif`` in the CSV's folder; ``path`` values are
    relative to that folder and must stay inside it.
    """
    csv = _generic_table(root)
    table = read_published_csv(csv, ("image", "diagnosis"))
    finder = _Finder()

    def make(row: dict) -> dict:
        if row.get("path"):
            target = inside_root(csv.parent, row["path"], row, "path")
            path, found = str(target), target.is_file()
        else:
            path, found = finder.find([row["image"] + e for e in _GENERIC_EXTENSIONS], [csv.parent])
        return dict(image=row["image"], path=path, diagnosis=row["diagnosis"],
                    category=categorize(row["diagnosis"], file=row["_file"], row=row["_row"]),
                    group=row.get("group") or row["image"],
                    difficulty=_difficulty(row.get("difficulty", ""), row),
                    age=_age(row.get("age", ""), row), sex=row.get("sex", ""),
                    site=row.get("site", ""), _found=found)

    return _rows(table, make)


# name -> adapter. An adapter takes the dataset's root folder (derm7pt also ``keep_acral``) and
# returns the manifest columns with absolute paths, extra columns, and private columns ``_found``
# (image file present), ``_file`` and ``_row`` (the source row, for error messages);
# ``attrs["excluded"]`` counts rows left out on purpose. ``build_manifest`` checks and finishes it.
DATASETS: dict[str, Callable[..., pd.DataFrame]] = {
    "derm7pt": _derm7pt, "isic2016": _isic2016, "isic2020": _isic2020,
    "isic-archive": _isic_archive, "retinopathy": _retinopathy, "csv": _generic_csv,
}


SKIN_DATASETS = tuple(name for name in DATASETS if name != "retinopathy")
# The patient metadata (``METADATA_KEYS``) each skin dataset publishes: derm7pt has sex and
# location (the manifest's ``site``), ISIC 2016 none, ISIC 2020 and the Archive all three; a
# ``csv`` table may carry any of the optional ``age, sex, site`` columns (checked on its data).
DATASET_METADATA: dict[str, tuple[str, ...]] = {
    "derm7pt": ("sex", "site"), "isic2016": (), "isic2020": METADATA_KEYS,
    "isic-archive": METADATA_KEYS, "csv": METADATA_KEYS,
}
assert set(DATASET_METADATA) == set(SKIN_DATASETS), "a skin dataset lacks its metadata keys"


def label_files(dataset: str, root: str | os.PathLike) -> list[Path]:
    """The published tables an adapter reads (what ``make`` must watch for the ``data`` stage).

    Args:
        dataset: one of ``DATASETS``.
        root: the dataset's folder as published.

    Returns:
        The label files, absolute; those that do not exist are left out (the adapter then names
        them in its error).
    """
    root = Path(root).absolute()
    files = {"derm7pt": lambda: [root / "meta" / "meta.csv"],
             "isic2016": lambda: [root / truth for truth, _ in ISIC2016_FILES.values()],
             "isic2020": lambda: [_isic2020_table(root)],
             "isic-archive": lambda: [root / "metadata.csv"],
             "retinopathy": lambda: [root / "trainLabels.csv"],
             "csv": lambda: [_generic_table(root)] if root.exists() else []}
    if dataset not in files:
        raise PipelineError(f"unknown dataset {dataset!r}. Known datasets: {', '.join(DATASETS)}.")
    try:
        return [p for p in files[dataset]() if p.is_file()]
    except PipelineError:
        return []


def build_manifest(dataset: str, root: str | os.PathLike, *, keep_acral: bool = False,
                   check_images: bool = True) -> pd.DataFrame:
    """Turn a published dataset into the manifest table.

    Args:
        dataset: one of ``DATASETS``: derm7pt, isic2016, isic2020, isic-archive, retinopathy, csv.
        root: the dataset's folder as published (for ``csv``: the CSV file or its folder).
        keep_acral: derm7pt only: keep acral lesions, which the paper excludes.
        check_images: fail when an image file is missing.

    Returns:
        One row per image, columns ``MANIFEST_COLUMNS`` then extras, all strings; ``path`` is
        absolute. ``attrs`` holds ``dataset``, ``excluded`` (reason -> count) and
        ``images_checked``.
    """
    if dataset not in DATASETS:
        raise PipelineError(f"unknown dataset {dataset!r}. Known datasets: {', '.join(DATASETS)}.")
    if keep_acral and dataset != "derm7pt":
        raise PipelineError(f"--keep-acral applies to derm7pt only, not to {dataset!r}; drop it")
    root = Path(root).absolute()
    if not root.exists():
        raise PipelineError(f"--root {root} does not exist")
    options = {"keep_acral": keep_acral} if dataset == "derm7pt" else {}
    frame = DATASETS[dataset](root, **options)
    excluded = dict(frame.attrs.get("excluded", {}))
    if frame.empty:
        dropped = ", ".join(f"{n} {reason} lesions" for reason, n in excluded.items() if n)
        raise PipelineError(f"{dataset} at {root} lists no images"
                            + (f" once {dropped} are excluded" if dropped else ""))
    check_rows(frame, check_images)
    extras = [c for c in frame.columns if c not in MANIFEST_COLUMNS and not c.startswith("_")]
    rows = [f"{f}, row {r}" for f, r in zip(frame["_file"], frame["_row"])]
    frame = frame[list(MANIFEST_COLUMNS) + extras].astype(str).reset_index(drop=True)
    frame["_where"] = rows  # the label file's row, for errors about the row's image
    frame.attrs = {"dataset": dataset, "excluded": excluded, "images_checked": check_images}
    return frame


def retinopathy_subset(frame: pd.DataFrame, max_images: int, seed: int) -> pd.DataFrame:
    """A stratified (by grade), seeded subset of ``max_images`` rows; all rows when 0 or more."""
    from sklearn.model_selection import train_test_split

    if not max_images or max_images >= len(frame):
        return frame
    counts = frame["category"].value_counts()
    if (counts < 2).any() or max_images < len(counts):
        raise PipelineError(
            f"cannot take a stratified subset of {max_images} of the {len(frame)} Retinopathy "
            f"images (`pretrain.retinopathy_max_images`): the grades have "
            f"{counts.sort_index().to_dict()} images, and every grade needs 2 or more, and the "
            "subset one per grade. Use a larger subset, 0 (all images), or more images.")
    keep, _ = train_test_split(frame.index.to_numpy(), train_size=max_images,
                               stratify=frame["category"], random_state=seed)
    kept = frame.loc[sorted(keep)].reset_index(drop=True)
    short = {g: n for g, n in kept["category"].value_counts().sort_index().items() if n < 2}
    if short or kept["category"].nunique() < len(counts):
        raise PipelineError(
            f"a stratified subset of {max_images} Retinopathy images "
            f"(`pretrain.retinopathy_max_images`) keeps fewer than 2 images of grade(s) "
            f"{sorted(set(counts.index) - set(kept['category'])) + sorted(short)}, too few to "
            "train and validate on. Use a larger subset, or 0 (all images).")
    return kept


def summary(frame: pd.DataFrame, out: str | os.PathLike) -> str:
    """One paragraph: rows, per-category counts, groups, exclusions."""
    counts = frame["category"].value_counts()
    parts = ", ".join(f"{counts[c]} {c}" for c in MANIFEST_CATEGORIES if c in counts)
    text = (f"{frame.attrs.get('dataset', 'manifest')}: wrote {len(frame)} images to {out} "
            f"({parts}) in {frame['group'].nunique()} groups.")
    for reason, count in frame.attrs.get("excluded", {}).items():
        text += f" Excluded {count} {reason} lesions" + (f" (--keep-{reason} keeps them)."
                                                         if count else ".")
    if not frame.attrs.get("images_checked", True):
        text += " Image files were not checked (--no-check-images)."
    return text

