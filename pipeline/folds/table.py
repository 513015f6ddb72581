"""The folds table: its columns and invariants, and writing, reading and checking ``folds.csv``.

``folds.csv`` has the columns ``image, repeat, half``: one row per (kept image, repeat), repeats
1..R, halves 1 and 2. Repeat 0 marks an official train/test split (ISIC 2016, see
``pipeline.folds.official``): half 1 is the training set, half 2 the test set, and callers train on
half 1 only. A hold-out (``pipeline.folds.holdout``) has a third value, ``half`` 3
(``VALIDATION_PART``), its validation part, and repeats 1..R that are all the same split: one per
independent training run (its seed differs), each training on half 1 and testing on half 2. ``fold_runs`` lists the (repeat, train half, test half) runs. Every write and every
read checks all invariants (``check_folds``): each kept image once per repeat, both halves
non-empty with every class, no group split, for 5×2 folds distinct, balanced repeats, and for a
hold-out three parts, each holding every class in about the share of the whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from pipeline.cache.files import hash_json, write_csv
from pipeline.data.designs import apply_design, get_design
from pipeline.errors import PipelineError

COLUMNS = ("image", "repeat", "half")
OFFICIAL_REPEAT = 0
TRAIN_HALF, TEST_HALF, VALIDATION_PART = 1, 2, 3
PART_NAMES = {TRAIN_HALF: "train", TEST_HALF: "test", VALIDATION_PART: "validation"}
DEFAULT_TOLERANCE = 0.05
_MANIFEST_COLUMNS = ("image", "category", "diagnosis", "group")
_FIX = "Fix: regenerate the folds for this manifest and design with `python -m pipeline folds`."


def examples_text(items, n: int = 5) -> str:
    """The first ``n`` of ``items`` for an error message, with how many there are in all."""
    items = [str(i) for i in items]
    more = f", ... ({len(items)} in all)" if len(items) > n else f" ({len(items)} in all)"
    return ", ".join(items[:n]) + more


def kept_images(manifest: pd.DataFrame, design: str) -> pd.DataFrame:
    """The design's kept images, with ``image``, ``diagnosis`` and ``group`` as str."""
    missing = [c for c in _MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise PipelineError(f"manifest lacks column(s) {missing}; folds need "
                            f"{list(_MANIFEST_COLUMNS)}. Rebuild it with "
                            "`python -m pipeline data`.")
    kept = apply_design(manifest, design)
    if kept.empty:
        raise PipelineError(f"design {design!r} keeps none of the manifest's {len(manifest)} "
                            "images; check the manifest's 'category' column.")
    for column in ("image", "diagnosis", "group"):
        kept[column] = kept[column].astype(str)
    duplicated = kept["image"][kept["image"].duplicated()].unique()
    if len(duplicated):
        raise PipelineError(f"manifest image ids must be unique; repeated: "
                            f"{examples_text(duplicated)}. Fix the manifest.")
    empty = kept["image"][kept["group"].str.strip() == ""]
    if len(empty):
        raise PipelineError(f"manifest column 'group' is empty for images {examples_text(empty)}; it "
                            "must hold the lesion or patient id (the image id when there is none).")
    return kept


@dataclass(frozen=True)
class Strata:
    """What the halves balance: each diagnosis and each class of the design, as matrices.

    Attributes:
        names: (``"diagnosis"`` or ``"class"``, value) of each stratum.
        onehot: array of shape (n_images, n_strata), 1 where an image is in a stratum.
        codes: array of shape (n_images,), each image's group index.
        counts: array of shape (n_groups, n_strata), each group's images per stratum.
        allowed: array of shape (n_strata,), the largest |n_half1 − n_half2| accepted.
    """

    names: list
    onehot: np.ndarray
    codes: np.ndarray
    counts: np.ndarray
    allowed: np.ndarray

    def problems(self, diff: np.ndarray) -> tuple[list[str], list[str]]:
        """(missing classes, imbalances) for ``diff`` = half-1 minus half-2 counts per stratum."""
        totals = self.onehot.sum(axis=0)
        n1 = (totals + diff) // 2
        n2 = totals - n1
        missing, imbalanced = [], []
        for k, (kind, value) in enumerate(self.names):
            if kind == "class":
                missing += [f"half {h} has no {value!r}"
                            for h, n in ((1, n1[k]), (2, n2[k])) if not n]
            if abs(diff[k]) > self.allowed[k]:
                imbalanced.append(f"{kind} {value!r}: {n1[k]} images in half 1, {n2[k]} in half 2 "
                                  f"(allowed |difference| {self.allowed[k]})")
        return missing, imbalanced


def strata_of(kept: pd.DataFrame, classes, tolerance: float | None) -> Strata:
    """The strata of ``kept``; ``allowed`` is max(2, ceil(tolerance × n), m) (see check_folds)."""
    diagnoses = sorted(str(d) for d in kept["diagnosis"].unique())
    onehot = np.stack([(kept["diagnosis"] == d).to_numpy() for d in diagnoses]
                      + [(kept["label"] == c).to_numpy() for c in classes], axis=1)
    onehot = onehot.astype(np.int64)
    codes, groups = pd.factorize(kept["group"])
    counts = np.zeros((len(groups), onehot.shape[1]), dtype=np.int64)
    np.add.at(counts, codes, onehot)
    fraction = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    largest = counts.max(axis=0, initial=0)
    allowed = np.maximum(np.maximum(2, np.ceil(fraction * onehot.sum(axis=0))), largest)
    return Strata([("diagnosis", d) for d in diagnoses] + [("class", c) for c in classes],
                   onehot, codes, counts, allowed.astype(np.int64))


def is_official(folds: pd.DataFrame) -> bool:
    """Whether ``folds`` is one train/test split (repeat 0: train on half 1 only), official or a
    hold-out."""
    return len(folds) > 0 and bool((pd.to_numeric(folds["repeat"]) == OFFICIAL_REPEAT).all())


def is_holdout(folds: pd.DataFrame) -> bool:
    """Whether ``folds`` is a hold-out split: repeats (runs) with a validation part (half 3)."""
    return len(folds) > 0 and bool((pd.to_numeric(folds["half"]) == VALIDATION_PART).any())


def fold_runs(folds: pd.DataFrame) -> list[tuple[int, int, int]]:
    """The (repeat, train half, test half) runs: 2 per repeat, 1 for an official split, 1 per
    repeat (run) of a hold-out."""
    if is_official(folds):
        return [(OFFICIAL_REPEAT, 1, 2)]
    if is_holdout(folds):
        return [(int(r), TRAIN_HALF, TEST_HALF) for r in sorted(pd.unique(folds["repeat"]))]
    return [(int(r), a, b) for r in sorted(pd.unique(folds["repeat"])) for a, b in ((1, 2), (2, 1))]


def invariant_failed(source: str, invariant: str, detail: str) -> PipelineError:
    """The error for a folds table (``source``) that breaks ``invariant``."""
    return PipelineError(f"{source}: invariant '{invariant}' failed: {detail}. {_FIX}")


def typed_folds(folds: pd.DataFrame, source: str) -> pd.DataFrame:
    """The folds table typed: Columns present and repeat/half values valid; returns a copy with int repeat/half."""
    missing = [c for c in COLUMNS if c not in folds.columns]
    if missing:
        raise invariant_failed(source, "columns", f"missing {missing}; the columns must be {list(COLUMNS)}, "
                    f"got {list(folds.columns)}")
    frame = folds.loc[:, list(COLUMNS)].reset_index(drop=True)
    frame["image"] = frame["image"].astype(str)
    for column, allowed in (("repeat", "integers >= 1, or all 0 for an official split"),
                            ("half", "1 or 2 (3: the validation part of a hold-out, repeat 0)")):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        bad |= ~values.isin([1, 2, 3]) if column == "half" else values < 0
        if bad.any():
            raise invariant_failed(source, "values", f"column {column!r} must hold {allowed}; rows "
                        f"{examples_text(frame.index[bad])} (0-based) hold "
                        f"{examples_text(frame.loc[bad, column].unique())}")
        frame[column] = values.astype(int)
    repeats = sorted(frame["repeat"].unique())
    third = frame["half"] == VALIDATION_PART
    if third.any() and (frame["repeat"] == OFFICIAL_REPEAT).any():
        rows = frame.index[third]
        raise invariant_failed(source, "values", f"column 'half' may hold 3 (a hold-out's validation "
                    f"part) only in repeats 1..R, not in an official split (repeat 0); rows "
                    f"{examples_text(rows)} (0-based)")
    if third.any():
        parts = frame.groupby("repeat")["half"].nunique()
        lacking = parts.index[parts < 3].tolist()
        if lacking:
            raise invariant_failed(source, "values", f"column 'half' holds 3 (a hold-out's "
                        f"validation part), so every repeat must hold halves 1, 2 and 3; repeats "
                        f"{examples_text(lacking)} do not")
    if OFFICIAL_REPEAT in repeats and len(repeats) > 1:
        raise invariant_failed(source, "values", f"repeat 0 marks an official split and cannot be mixed with "
                    f"repeats {repeats[1:]}")
    if repeats and repeats[0] != OFFICIAL_REPEAT and repeats != list(range(1, len(repeats) + 1)):
        raise invariant_failed(source, "values", f"repeats must be numbered 1..R without gaps; got {repeats}")
    return frame


def check_folds(folds: pd.DataFrame, manifest: pd.DataFrame, design: str, *,
                tolerance: float | None = None, source: str = "folds.csv",
                grouped: bool = True) -> None:
    """Check every invariant of a folds table; raise on the first that fails.

    In order: the columns ``image, repeat, half`` exist; repeats are 1..R (or all 0, an official
    split) and halves 1 or 2; in every repeat each image the design keeps appears exactly once
    (no missing, duplicate or unknown id, no image the design removes); both halves are non-empty
    and hold every class of the design; no group (lesion/patient) is split across halves. For
    5×2 folds also: the repeats are distinct partitions (swapped halves count as the same), and
    they are balanced: in every repeat, for every diagnosis and every class of the design, with n
    images of which at most m lie in one group,
    |n_half1 − n_half2| ≤ max(2, ceil(tolerance × n), m).
    An official split is exempt from these two. A hold-out (half 3 present) instead: every repeat
    holds halves 1, 2 and 3, all repeats are the same split (its runs), each part holds every
    class, and each part holds every diagnosis and class within that bound of its share
    (``holdout_imbalance``).

    Why this bound: a group cannot be split, so m is unavoidable; the greedy of ``make_folds``
    keeps single-diagnosis groups within m of balance (usually within 1) and may trade a unit
    between a diagnosis and its class, hence 2; ``tolerance`` (default 5%) leaves room for groups
    mixing diagnoses. A careless random split has |difference| about sqrt(n), above ceil(0.05 n) for
    n < 400, and the bound applies to every diagnosis, class and repeat, so such a split of a
    realistic dataset fails it. ``make_folds`` redraws until its folds meet the default bound.

    Args:
        folds: table with columns ``image, repeat, half``.
        manifest: manifest table.
        design: design name.
        tolerance: the fraction in the balance bound; ``None`` means 0.05.
        source: name of the folds in messages (the file path).
        grouped: ``False`` only for the leaky hold-out split of Kim & Rocheteau's code
            (``make_holdout(grouped=False)``): every image counts as its own group.

    Raises:
        PipelineError: naming the invariant, the repeat and the first few images at fault.
    """
    kept = kept_images(manifest, design)
    if not grouped:
        kept = kept.assign(group=kept["image"])
    frame = typed_folds(folds, source)
    if frame.empty:
        raise invariant_failed(source, "each kept image once per repeat", "the table has no rows")
    known = set(manifest["image"].astype(str))
    unknown = frame["image"][~frame["image"].isin(known)].unique()
    if len(unknown):
        raise invariant_failed(source, "each kept image once per repeat", f"image ids not in the manifest: "
                    f"{examples_text(unknown)}")
    removed = frame["image"][~frame["image"].isin(set(kept["image"]))].unique()
    if len(removed):
        raise invariant_failed(source, "each kept image once per repeat", f"images that design {design!r} "
                    f"removes: {examples_text(removed)}")
    duplicated = frame[frame.duplicated(["repeat", "image"])]
    if len(duplicated):
        raise invariant_failed(source, "each kept image once per repeat", f"repeat "
                    f"{duplicated['repeat'].iloc[0]} lists images more than once: "
                    f"{examples_text(duplicated['image'].unique())}")
    halves = {}
    for repeat, rows in frame.groupby("repeat", sort=True):
        half = rows.set_index("image")["half"].reindex(kept["image"])
        if half.isna().any():
            raise invariant_failed(source, "each kept image once per repeat", f"repeat {repeat} misses images "
                        f"{examples_text(half.index[half.isna()])}")
        halves[repeat] = half.to_numpy(dtype=int)
    strata = strata_of(kept, get_design(design).classes, tolerance)
    diffs = {r: np.where(h == 1, 1, -1) @ strata.onehot for r, h in halves.items()}
    holdout = is_holdout(frame)
    if holdout:
        first = min(halves)
        other = [r for r, h in halves.items() if not np.array_equal(h, halves[first])]
        if other:
            raise invariant_failed(source, "runs share one split", f"the hold-out's repeats are "
                        f"its independent runs on one split, but repeats {examples_text(other)} "
                        f"differ from repeat {first}")
    for repeat, half in halves.items():
        empty = [h for h in (1, 2) if not (half == h).any()]
        if empty:
            raise invariant_failed(source, "halves non-empty", f"repeat {repeat}: half {empty[0]} is empty")
        missing, _ = strata.problems(diffs[repeat])
        if holdout:
            missing = [f"the {PART_NAMES[h]} part (half {h}) has no {c!r}" for h in PART_NAMES
                       for c in get_design(design).classes
                       if not ((half == h) & (kept["label"] == c).to_numpy()).any()]
        if missing:
            raise invariant_failed(source, "every class in both halves",
                        f"repeat {repeat}: {'; '.join(missing)}")
        parts = kept.assign(half=half).groupby("group")["half"].nunique()
        split = parts.index[parts > 1]
        if len(split):
            raise invariant_failed(source, "no group split across halves", f"repeat {repeat} splits groups "
                        f"{examples_text(split)} (images "
                        f"{examples_text(kept['image'][kept['group'].isin(split)])})")
    if holdout:
        imbalanced = holdout_imbalance(strata, halves[min(halves)])
        if imbalanced:
            raise invariant_failed(source, "balance", f"hold-out: {'; '.join(imbalanced[:5])}"
                        + (f" ({len(imbalanced)} in all)" if len(imbalanced) > 5 else ""))
    if is_official(frame) or holdout:
        return
    images = kept["image"].to_numpy()
    # The images beside the first kept image: the same for a partition and its swap.
    keys = {r: frozenset(images[h == h[0]].tolist()) for r, h in halves.items()}
    for a, b in combinations(keys, 2):
        if keys[a] == keys[b]:
            raise invariant_failed(source, "distinct partitions", f"repeats {a} and {b} are the same "
                        f"partition (possibly with halves swapped) of {len(images)} images")
    for repeat, diff in diffs.items():
        _, imbalanced = strata.problems(diff)
        if imbalanced:
            raise invariant_failed(source, "balance", f"repeat {repeat}: {'; '.join(imbalanced[:5])}"
                        + (f" ({len(imbalanced)} in all)" if len(imbalanced) > 5 else ""))


def holdout_imbalance(strata: Strata, part: np.ndarray) -> list[str]:
    """Where a hold-out's parts are unbalanced: for every diagnosis and class, with n images (at
    most m in one group), a part holding a share s of all images must hold n·s images within
    max(2, ceil(tolerance × n), m) — the 5×2 bound, with the part's share in place of one half.

    Args:
        strata: the strata of the kept images (``strata_of``).
        part: array of shape (n_images,), each image's half (1 train, 2 test, 3 validation).
    """
    totals = strata.onehot.sum(axis=0)
    out = []
    for h, name in PART_NAMES.items():
        inside = part == h
        counts = inside.astype(np.int64) @ strata.onehot
        expected = totals * inside.mean()
        for k, (kind, value) in enumerate(strata.names):
            if abs(counts[k] - expected[k]) > strata.allowed[k]:
                out.append(f"{kind} {value!r}: {counts[k]} images in the {name} part, "
                           f"{expected[k]:.1f} expected from its share (allowed |difference| "
                           f"{strata.allowed[k]})")
    return out


def write_folds(folds: pd.DataFrame, path: str | os.PathLike, manifest: pd.DataFrame, design: str,
                *, tolerance: float | None = None, grouped: bool = True) -> None:
    """Check ``folds`` (see ``check_folds``) and write them to ``path`` atomically."""
    check_folds(folds, manifest, design, tolerance=tolerance, source=str(path), grouped=grouped)
    write_csv(path, folds.loc[:, list(COLUMNS)])


def read_folds(path: str | os.PathLike, manifest: pd.DataFrame, design: str, *,
               tolerance: float | None = None, grouped: bool = True) -> pd.DataFrame:
    """Read a ``folds.csv`` and check it (see ``check_folds``).

    Returns:
        Table with columns ``image`` (str), ``repeat`` and ``half`` (int).
    """
    try:
        folds = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PipelineError(f"folds file {path} does not exist; write it with `python -m pipeline "
                            f"folds --manifest ... --design {design} --out {path}`.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"folds file {path} is not a readable CSV ({exc}); rewrite it with "
                            "`python -m pipeline folds`.") from None
    check_folds(folds, manifest, design, tolerance=tolerance, source=str(path), grouped=grouped)
    return typed_folds(folds, str(path))


def half_ids(folds: pd.DataFrame, repeat: int, half: int) -> list[str]:
    """The images of one half of one repeat, in the folds table's order."""
    return folds.loc[(folds["repeat"] == repeat) & (folds["half"] == half), "image"].tolist()


def train_ids_digest(ids) -> str:
    """The digest of a run's training images (ids in folds order): the provenance that fine-tuned
    networks, feature entries and SVM runs record and check against the current folds."""
    return hash_json([str(i) for i in ids])


def counts_per_half(folds: pd.DataFrame, manifest: pd.DataFrame, design: str) -> pd.DataFrame:
    """Class counts per (repeat, half): one row each, a column per class plus ``images``."""
    kept = kept_images(manifest, design)
    merged = typed_folds(folds, "folds").merge(kept[["image", "label"]], on="image", how="left")
    table = pd.crosstab([merged["repeat"], merged["half"]], merged["label"])
    table = table.reindex(columns=list(get_design(design).classes), fill_value=0)
    table["images"] = table.sum(axis=1)
    return table
