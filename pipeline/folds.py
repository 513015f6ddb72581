"""5×2 cross-validation folds: make, check, read and write ``folds.csv``.

Menegola et al. (2017) evaluate every design by 5×2-fold cross-validation: 5 repeats of a 50/50
split, each half used once for training and once for testing. Their splits are "semi-random": the
halves balance the *fine* diagnosis (manifest column ``diagnosis``), not only the design's label.
Here, in addition, the images of one lesion or patient (manifest column ``group``) never straddle
the halves, the 5 repeats are 5 distinct partitions, and the seed fixes everything.

``folds.csv`` has the columns ``image, repeat, half``: one row per (kept image, repeat), repeats
1..R, halves 1 and 2. Repeat 0 is reserved for an official train/test split (ISIC 2016): half 1 is
the official training set, half 2 the official test set, and callers train on half 1 only. Use
``fold_runs`` to list the (repeat, train half, test half) runs instead of assuming 10.

Command: ``python -m pipeline folds --manifest manifest.csv --design NAME --out folds.csv
[--seed N] [--repeats 5] [--official]`` writes the folds and prints the class counts per half.
"""

from __future__ import annotations

import argparse
import os
from itertools import combinations

import numpy as np
import pandas as pd

from pipeline.cache import write_csv
from pipeline.designs import apply_design, get_design
from pipeline.errors import PipelineError

COLUMNS = ("image", "repeat", "half")
OFFICIAL_REPEAT = 0
DEFAULT_TOLERANCE = 0.05
_MANIFEST_COLUMNS = ("image", "category", "diagnosis", "group")
# Draws per repeat before giving up. The first draws take groups largest first, which gives the
# tightest balance; later draws take them in random order, which admits more distinct partitions
# (largest-first greedy is nearly deterministic when group sizes all differ).
_MAX_DRAWS = 200
_SORTED_DRAWS = 10
_FIX = "Fix: regenerate the folds for this manifest and design with `python -m pipeline folds`."


def _examples(items, n: int = 5) -> str:
    items = [str(i) for i in items]
    more = f", ... ({len(items)} in all)" if len(items) > n else f" ({len(items)} in all)"
    return ", ".join(items[:n]) + more


def _kept(manifest: pd.DataFrame, design: str) -> pd.DataFrame:
    """The design's kept images, with ``image``, ``diagnosis`` and ``group`` as str."""
    missing = [c for c in _MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise PipelineError(f"manifest lacks column(s) {missing}; folds need {list(_MANIFEST_COLUMNS)}"
                            ". Rebuild the manifest with `python -m pipeline data`.")
    kept = apply_design(manifest, design)
    for column in ("image", "diagnosis", "group"):
        kept[column] = kept[column].astype(str)
    duplicated = kept["image"][kept["image"].duplicated()].unique()
    if len(duplicated):
        raise PipelineError(f"manifest image ids must be unique; repeated: {_examples(duplicated)}. "
                            "Fix the manifest.")
    empty = kept["image"][kept["group"].str.strip() == ""]
    if len(empty):
        raise PipelineError(f"manifest column 'group' is empty for images {_examples(empty)}; it must "
                            "hold the lesion or patient id (the image id when there is none).")
    return kept


def allowed_imbalance(kept: pd.DataFrame, column: str, tolerance: float | None = None) -> pd.Series:
    """The largest |n_half1 − n_half2| the balance check accepts for each value of ``column``.

    For a value (a diagnosis or a class) with n images, of which at most m lie in one group:
    ``max(2, ceil(tolerance × n), m)``. Why: a group cannot be split, so m is unavoidable; the
    greedy balancing in ``make_folds`` keeps the difference of single-diagnosis groups within m and
    usually within 1, and trades a unit or two between a diagnosis and its class, hence 2; and
    ``tolerance`` (default 5%) leaves room for multi-diagnosis groups on large data. A careless
    random split instead has |difference| of about sqrt(n), above ``ceil(0.05 n)`` for n < 400, and
    the check runs over every diagnosis, class and repeat, so such a split of a realistic
    dataset fails it.

    Args:
        kept: the design's kept images, with columns ``group`` and ``column``.
        column: ``"diagnosis"`` or ``"label"``.
        tolerance: the fraction; ``None`` means ``DEFAULT_TOLERANCE`` (0.05).

    Returns:
        Integer series indexed by the values of ``column``.
    """
    fraction = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    n = kept.groupby(column).size()
    largest = kept.groupby([column, "group"]).size().groupby(level=0).max()
    bound = np.maximum(np.maximum(2, np.ceil(fraction * n)), largest.reindex(n.index))
    return bound.astype(int)


def _balance_problems(kept: pd.DataFrame, half: np.ndarray, bounds: dict) -> list[str]:
    sign = pd.Series(np.where(half == 1, 1, -1))
    problems = []
    for column, allowed in bounds.items():
        diff = sign.groupby(kept[column].to_numpy()).sum()
        for value in diff.index[diff.abs().to_numpy() > allowed.reindex(diff.index).to_numpy()]:
            n = int((kept[column] == value).sum())
            n1 = (n + int(diff[value])) // 2
            problems.append(f"{'class' if column == 'label' else column} {value!r}: {n1} images in "
                            f"half 1, {n - n1} in half 2 (allowed |difference| {allowed[value]})")
    return problems


def _missing_classes(kept: pd.DataFrame, half: np.ndarray, classes) -> list[str]:
    return [f"half {h} has no {c!r}" for h in (1, 2) for c in classes
            if not ((half == h) & (kept["label"] == c).to_numpy()).any()]


def _partition_key(images: np.ndarray, half: np.ndarray) -> frozenset:
    """The images in the half holding the smallest id: equal for a partition and its swap."""
    first = half[np.argmin(images)] if len(images) else 1
    return frozenset(images[half == first].tolist())


def make_folds(manifest: pd.DataFrame, design: str, seed: int = 0, repeats: int = 5) -> pd.DataFrame:
    """Semi-random 5×2 folds: halves balanced on the fine diagnosis, groups never split.

    Each repeat shuffles the groups with ``numpy.random.default_rng(seed)``, sorts them by size
    (largest first, stable), and puts each in the half that minimises the imbalance: the sum over
    diagnoses and over the design's classes of the squared difference of counts between the halves;
    ties go to the smaller half, then to a coin flip. A draw is redone (with the next generator
    state) if its partition equals an earlier repeat's (also with halves swapped), misses a class
    in a half, or exceeds ``allowed_imbalance``. scikit-learn's ``StratifiedGroupKFold`` is not
    used: it stratifies one label only and does not sort groups by size, so its halves are less
    balanced on the diagnoses and it cannot be asked for distinct repeats.

    Args:
        manifest: manifest table (columns ``image, category, diagnosis, group``).
        design: design name (see ``pipeline.designs``).
        seed: random seed; the same seed gives the same folds.
        repeats: number of distinct 2-way partitions.

    Returns:
        Table with columns ``image, repeat, half``: for each repeat 1..repeats, every kept image
        once, in manifest order.

    Raises:
        PipelineError: if the data admit too few distinct balanced partitions.
    """
    if int(repeats) < 1:
        raise PipelineError(f"repeats must be an integer >= 1; got {repeats}.")
    classes = get_design(design).classes
    kept = _kept(manifest, design)
    codes, groups = pd.factorize(kept["group"])
    n_groups = len(groups)
    if 2 ** min(n_groups - 1, 62) - 1 < repeats:
        raise PipelineError(f"design {design!r} keeps {len(kept)} images in {n_groups} groups, which "
                            f"admit {max(2 ** (n_groups - 1) - 1, 0)} distinct 2-way partitions; "
                            f"{repeats} repeats were asked. Use more data or fewer --repeats.")
    for c in classes:
        holders = kept.loc[kept["label"] == c, "group"].unique()
        if len(holders) < 2:
            raise PipelineError(f"class {c!r} of design {design!r} has its images in "
                                f"{len(holders)} group(s) ({_examples(holders)}); both halves need "
                                "it. Use data with that class in at least two lesions/patients.")
    onehot = pd.concat([pd.get_dummies(kept["diagnosis"], prefix="diagnosis"),
                        pd.get_dummies(kept["label"], prefix="class")], axis=1)
    counts = onehot.groupby(codes).sum().to_numpy(dtype=np.int64)  # (n_groups, n_strata)
    sizes = np.bincount(codes)
    bounds = {c: allowed_imbalance(kept, c) for c in ("diagnosis", "label")}
    images = kept["image"].to_numpy()
    rng = np.random.default_rng(seed)
    seen: set[frozenset] = set()
    frames = []
    for repeat in range(1, int(repeats) + 1):
        for draw in range(_MAX_DRAWS):
            order = rng.permutation(n_groups)
            if draw < _SORTED_DRAWS:
                order = order[np.argsort(-sizes[order], kind="stable")]
            half = _greedy(order, counts, sizes, rng)[codes]
            key = _partition_key(images, half)
            if (key not in seen and not _missing_classes(kept, half, classes)
                    and not _balance_problems(kept, half, bounds)):
                break
        else:
            raise PipelineError(f"found only {repeat - 1} distinct balanced partitions of the "
                                f"{len(kept)} images ({n_groups} groups) of design {design!r} after "
                                f"{_MAX_DRAWS} draws for repeat {repeat}; ask for fewer --repeats.")
        seen.add(key)
        frames.append(pd.DataFrame({"image": images, "repeat": repeat, "half": half}))
    return pd.concat(frames, ignore_index=True)


def _greedy(order: np.ndarray, counts: np.ndarray, sizes: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Assign groups in ``order`` to halves 1/2; returns the half of each group."""
    diff = np.zeros(counts.shape[1], dtype=np.int64)  # half 1 minus half 2, per stratum
    totals = [0, 0]
    half = np.empty(len(sizes), dtype=np.int64)
    for g in order:
        # |diff + c|² − |diff − c|² = 4 diff·c, so the sign of diff·c picks the better half.
        dot = int(diff @ counts[g])
        if dot == 0:
            dot = totals[0] - totals[1] or (1 if rng.random() < 0.5 else -1)
        h = 2 if dot > 0 else 1
        half[g] = h
        diff += counts[g] if h == 1 else -counts[g]
        totals[h - 1] += int(sizes[g])
    return half


def is_official(folds: pd.DataFrame) -> bool:
    """Whether ``folds`` is an official train/test split (repeat 0: train on half 1 only)."""
    return len(folds) > 0 and bool((pd.to_numeric(folds["repeat"]) == OFFICIAL_REPEAT).all())


def fold_runs(folds: pd.DataFrame) -> list[tuple[int, int, int]]:
    """The (repeat, train half, test half) runs: 2 per repeat, or 1 for an official split."""
    if is_official(folds):
        return [(OFFICIAL_REPEAT, 1, 2)]
    return [(int(r), a, b) for r in sorted(pd.unique(folds["repeat"])) for a, b in ((1, 2), (2, 1))]


def official_split(manifest: pd.DataFrame, design: str | None = None) -> pd.DataFrame:
    """The official train/test split of ISIC 2016 as a folds table.

    Args:
        manifest: manifest with a ``split`` column (``train``/``test``).
        design: if given, only the images this design keeps.

    Returns:
        Table ``image, repeat, half`` with repeat 0 (``OFFICIAL_REPEAT``), half 1 = official
        training set, half 2 = official test set; ``is_official`` is true for it.
    """
    if "split" not in manifest.columns:
        raise PipelineError("the manifest has no 'split' column; an official split exists only for "
                            "ISIC 2016, whose manifest records it. Drop --official to make 5×2 folds.")
    rows = manifest if design is None else apply_design(manifest, design)
    split = rows["split"].astype(str)
    bad = rows["image"][~split.isin(["train", "test"])]
    if len(bad):
        raise PipelineError(f"manifest column 'split' must be 'train' or 'test'; images "
                            f"{_examples(bad)} have {sorted(set(split[bad.index]))}.")
    return pd.DataFrame({"image": rows["image"].astype(str).to_numpy(), "repeat": OFFICIAL_REPEAT,
                         "half": np.where(split == "train", 1, 2)})


def _fail(source: str, invariant: str, detail: str) -> PipelineError:
    return PipelineError(f"{source}: invariant '{invariant}' failed: {detail}. {_FIX}")


def _typed(folds: pd.DataFrame, source: str) -> pd.DataFrame:
    """Columns present and repeat/half values valid; returns a copy with int repeat/half."""
    missing = [c for c in COLUMNS if c not in folds.columns]
    if missing:
        raise _fail(source, "columns", f"missing {missing}; the columns must be {list(COLUMNS)}, "
                    f"got {list(folds.columns)}")
    frame = folds.loc[:, list(COLUMNS)].reset_index(drop=True)
    frame["image"] = frame["image"].astype(str)
    for column, allowed in (("repeat", "integers >= 1, or all 0 for an official split"),
                            ("half", "1 or 2")):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        bad |= ~values.isin([1, 2]) if column == "half" else values < 0
        if bad.any():
            raise _fail(source, "values", f"column {column!r} must hold {allowed}; rows "
                        f"{_examples(frame.index[bad])} (0-based) hold "
                        f"{_examples(frame.loc[bad, column].unique())}")
        frame[column] = values.astype(int)
    repeats = sorted(frame["repeat"].unique())
    if OFFICIAL_REPEAT in repeats and len(repeats) > 1:
        raise _fail(source, "values", f"repeat 0 marks an official split and cannot be mixed with "
                    f"repeats {repeats[1:]}")
    if repeats and repeats[0] != OFFICIAL_REPEAT and repeats != list(range(1, len(repeats) + 1)):
        raise _fail(source, "values", f"repeats must be numbered 1..R without gaps; got {repeats}")
    return frame


def check_folds(folds: pd.DataFrame, manifest: pd.DataFrame, design: str, *,
                tolerance: float | None = None, source: str = "folds.csv") -> None:
    """Check every invariant of a folds table; raise on the first that fails.

    In order: the columns ``image, repeat, half`` exist; repeats are 1..R (or all 0, an official
    split) and halves 1 or 2; in every repeat each image the design keeps appears exactly once
    (no missing, duplicate or unknown id, no image the design removes); both halves are non-empty
    and hold every class of the design; no group (lesion/patient) is split across halves. For
    5×2 folds also: the repeats are distinct partitions (swapped halves count as the same), and in
    every repeat, for every diagnosis and every class of the design, |n_half1 − n_half2| ≤
    ``allowed_imbalance`` = max(2, ceil(tolerance × n), largest number of its images in one group).
    An official split is exempt from the last two.

    Args:
        folds: table with columns ``image, repeat, half``.
        manifest: manifest table.
        design: design name.
        tolerance: fraction for ``allowed_imbalance``; ``None`` means 0.05.
        source: name of the folds in messages (the file path).

    Raises:
        PipelineError: naming the invariant, the repeat and the first few images at fault.
    """
    kept = _kept(manifest, design)
    frame = _typed(folds, source)
    known = set(manifest["image"].astype(str))
    unknown = frame["image"][~frame["image"].isin(known)].unique()
    if len(unknown):
        raise _fail(source, "each kept image once per repeat", f"image ids not in the manifest: "
                    f"{_examples(unknown)}")
    removed = frame["image"][~frame["image"].isin(set(kept["image"]))].unique()
    if len(removed):
        raise _fail(source, "each kept image once per repeat", f"images that design {design!r} "
                    f"removes: {_examples(removed)}")
    duplicated = frame[frame.duplicated(["repeat", "image"])]
    if len(duplicated):
        raise _fail(source, "each kept image once per repeat", f"repeat "
                    f"{duplicated['repeat'].iloc[0]} lists images more than once: "
                    f"{_examples(duplicated['image'].unique())}")
    halves = {}
    for repeat, rows in frame.groupby("repeat", sort=True):
        half = rows.set_index("image")["half"].reindex(kept["image"])
        if half.isna().any():
            raise _fail(source, "each kept image once per repeat", f"repeat {repeat} misses images "
                        f"{_examples(half.index[half.isna()])}")
        halves[repeat] = half.to_numpy(dtype=int)
    classes = get_design(design).classes
    for repeat, half in halves.items():
        problems = _missing_classes(kept, half, classes)
        if problems:
            empty = [h for h in (1, 2) if not (half == h).any()]
            name = "halves non-empty" if empty else "every class in both halves"
            raise _fail(source, name, f"repeat {repeat}: {'; '.join(problems)}")
        parts = kept.assign(half=half).groupby("group")["half"].nunique()
        split = parts.index[parts > 1]
        if len(split):
            raise _fail(source, "no group split across halves", f"repeat {repeat} splits groups "
                        f"{_examples(split)} (images "
                        f"{_examples(kept['image'][kept['group'].isin(split)])})")
    if is_official(frame):
        return
    images = kept["image"].to_numpy()
    keys = {r: _partition_key(images, h) for r, h in halves.items()}
    for a, b in combinations(keys, 2):
        if keys[a] == keys[b]:
            raise _fail(source, "distinct partitions", f"repeats {a} and {b} are the same partition "
                        f"(possibly with halves swapped) of {len(images)} images")
    bounds = {c: allowed_imbalance(kept, c, tolerance) for c in ("diagnosis", "label")}
    for repeat, half in halves.items():
        problems = _balance_problems(kept, half, bounds)
        if problems:
            raise _fail(source, "balance", f"repeat {repeat}: {'; '.join(problems[:5])}"
                        + (f" ({len(problems)} in all)" if len(problems) > 5 else ""))


def write_folds(folds: pd.DataFrame, path: str | os.PathLike, manifest: pd.DataFrame, design: str,
                *, tolerance: float | None = None) -> None:
    """Check ``folds`` (see ``check_folds``) and write them to ``path`` atomically."""
    check_folds(folds, manifest, design, tolerance=tolerance, source=str(path))
    write_csv(path, folds.loc[:, list(COLUMNS)])


def read_folds(path: str | os.PathLike, manifest: pd.DataFrame, design: str, *,
               tolerance: float | None = None) -> pd.DataFrame:
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
    check_folds(folds, manifest, design, tolerance=tolerance, source=str(path))
    return _typed(folds, str(path))


def counts_per_half(folds: pd.DataFrame, manifest: pd.DataFrame, design: str) -> pd.DataFrame:
    """Class counts per (repeat, half): one row each, a column per class plus ``images``."""
    kept = _kept(manifest, design)
    merged = _typed(folds, "folds").merge(kept[["image", "label"]], on="image", how="left")
    table = pd.crosstab([merged["repeat"], merged["half"]], merged["label"])
    table = table.reindex(columns=list(get_design(design).classes), fill_value=0)
    table["images"] = table.sum(axis=1)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest.csv written by `pipeline data`")
    parser.add_argument("--design", required=True, help="labelling design (see `pipeline designs`)")
    parser.add_argument("--out", required=True, help="folds.csv to write")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--repeats", type=int, default=None, help="number of repeats (default 5)")
    parser.add_argument("--official", action="store_true",
                        help="write the official train/test split (ISIC 2016) as repeat 0")


def run(args: argparse.Namespace) -> int:
    from pipeline.datasets import read_manifest

    manifest = read_manifest(args.manifest)
    if args.official:
        if args.seed is not None or args.repeats is not None:
            raise PipelineError("--official writes the published train/test split; --seed and "
                                "--repeats would do nothing. Drop them, or drop --official.")
        folds = official_split(manifest, args.design)
    else:
        folds = make_folds(manifest, args.design, seed=0 if args.seed is None else args.seed,
                           repeats=5 if args.repeats is None else args.repeats)
    write_folds(folds, args.out, manifest, args.design)
    print(counts_per_half(folds, manifest, args.design).to_string())
    print(f"wrote {args.out}: {len(fold_runs(folds))} runs "
          f"({'official split, train on half 1 only' if is_official(folds) else '5×2-style'})")
    return 0
