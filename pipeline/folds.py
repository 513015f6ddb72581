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
from dataclasses import dataclass
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
                            f"{_examples(duplicated)}. Fix the manifest.")
    empty = kept["image"][kept["group"].str.strip() == ""]
    if len(empty):
        raise PipelineError(f"manifest column 'group' is empty for images {_examples(empty)}; it "
                            "must hold the lesion or patient id (the image id when there is none).")
    return kept


@dataclass(frozen=True)
class _Strata:
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


def _strata(kept: pd.DataFrame, classes, tolerance: float | None) -> _Strata:
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
    return _Strata([("diagnosis", d) for d in diagnoses] + [("class", c) for c in classes],
                   onehot, codes, counts, allowed.astype(np.int64))


def make_folds(manifest: pd.DataFrame, design: str, seed: int = 0,
               repeats: int = 5) -> pd.DataFrame:
    """Semi-random 5×2 folds: halves balanced on the fine diagnosis, groups never split.

    Each repeat shuffles the groups with ``numpy.random.default_rng(seed)``, sorts them by size
    (largest first, stable) and puts each in the half that minimises the imbalance: the sum over
    diagnoses and over the design's classes of the squared difference of counts between halves,
    each weighted by ceil(n_kept / n_stratum); ties go to the smaller half, then to a coin flip.
    A draw is redone (with the next generator state) if its partition equals an earlier repeat's
    (also with halves swapped), misses a class in a half, or fails the balance bound of
    ``check_folds``; after 10 draws the groups are taken in random order instead of largest
    first, which admits more distinct partitions.

    Why not scikit-learn's ``StratifiedGroupKFold(n_splits=2, shuffle=True)`` with the diagnosis
    as label: it balances one label only (not the design's classes as well), does not promise
    distinct repeats, and on the structures of ``tests/test_folds.py`` 4 of 50 five-repeat sets
    it made failed the balance bound that these folds always meet.

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
    strata = _strata(kept, classes, None)
    codes, counts = strata.codes, strata.counts
    n_groups = len(counts)
    if 2 ** min(n_groups - 1, 62) - 1 < repeats:
        raise PipelineError(f"design {design!r} keeps {len(kept)} images in {n_groups} groups, "
                            f"which admit {max(2 ** (n_groups - 1) - 1, 0)} distinct 2-way "
                            f"partitions; {repeats} repeats were asked. Use more data or fewer --repeats.")
    for c in classes:
        holders = kept.loc[kept["label"] == c, "group"].unique()
        if len(holders) < 2:
            raise PipelineError(f"class {c!r} of design {design!r} has its images in "
                                f"{len(holders)} group(s) ({_examples(holders)}); both halves need "
                                "it. Use data with that class in at least two lesions/patients.")
    sizes = np.bincount(codes)
    # Integer weights ~ 1/n per stratum: the greedy then balances proportions, so a rare diagnosis
    # inside big mixed-diagnosis groups (ISIC 2020 patients) is not drowned by the common ones.
    # Integers keep the arithmetic exact, hence identical on every machine.
    weights = -(-len(kept) // np.maximum(strata.onehot.sum(axis=0), 1))
    rng = np.random.default_rng(seed)
    seen: set[frozenset] = set()
    frames = []
    for repeat in range(1, int(repeats) + 1):
        for draw in range(_MAX_DRAWS):
            order = rng.permutation(n_groups)
            if draw < _SORTED_DRAWS:
                order = order[np.argsort(-sizes[order], kind="stable")]
            group_half = _greedy(order, counts, weights, sizes, rng)
            # Groups are never split, so the groups beside group 0 identify the partition.
            key = frozenset(np.flatnonzero(group_half == group_half[0]).tolist())
            diff = np.where(group_half == 1, 1, -1) @ counts
            if key not in seen and not any(strata.problems(diff)):
                break
        else:
            raise PipelineError(f"found only {repeat - 1} distinct balanced partitions of the "
                                f"{len(kept)} images ({n_groups} groups) of design {design!r} "
                                f"after {_MAX_DRAWS} draws for repeat {repeat}; ask for fewer "
                                "--repeats.")
        seen.add(key)
        frames.append(pd.DataFrame({"image": kept["image"].to_numpy(), "repeat": repeat,
                                    "half": group_half[codes]}))
    return pd.concat(frames, ignore_index=True)


def _greedy(order: np.ndarray, counts: np.ndarray, weights: np.ndarray, sizes: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """Assign groups in ``order`` to halves 1/2; returns the half of each group."""
    diff = np.zeros(counts.shape[1], dtype=np.int64)  # half 1 minus half 2, per stratum
    totals = [0, 0]
    half = np.empty(len(sizes), dtype=np.int64)
    for g in order:
        # Cost Σ w_k diff_k²: putting c in half 1 rather than half 2 changes it by
        # 4 Σ w_k diff_k c_k, so the sign of that weighted dot product picks the better half.
        dot = int((weights * diff) @ counts[g])
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
        raise PipelineError("the manifest has no 'split' column; an official split exists only "
                            "for ISIC 2016, whose manifest records it. Drop --official to make "
                            "5×2 folds.")
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
    5×2 folds also: the repeats are distinct partitions (swapped halves count as the same), and
    they are balanced: in every repeat, for every diagnosis and every class of the design, with n
    images of which at most m lie in one group,
    |n_half1 − n_half2| ≤ max(2, ceil(tolerance × n), m).
    An official split is exempt from these two.

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

    Raises:
        PipelineError: naming the invariant, the repeat and the first few images at fault.
    """
    kept = _kept(manifest, design)
    frame = _typed(folds, source)
    if frame.empty:
        raise _fail(source, "each kept image once per repeat", "the table has no rows")
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
    strata = _strata(kept, get_design(design).classes, tolerance)
    diffs = {r: np.where(h == 1, 1, -1) @ strata.onehot for r, h in halves.items()}
    for repeat, half in halves.items():
        empty = [h for h in (1, 2) if not (half == h).any()]
        if empty:
            raise _fail(source, "halves non-empty", f"repeat {repeat}: half {empty[0]} is empty")
        missing, _ = strata.problems(diffs[repeat])
        if missing:
            raise _fail(source, "every class in both halves",
                        f"repeat {repeat}: {'; '.join(missing)}")
        parts = kept.assign(half=half).groupby("group")["half"].nunique()
        split = parts.index[parts > 1]
        if len(split):
            raise _fail(source, "no group split across halves", f"repeat {repeat} splits groups "
                        f"{_examples(split)} (images "
                        f"{_examples(kept['image'][kept['group'].isin(split)])})")
    if is_official(frame):
        return
    images = kept["image"].to_numpy()
    # The images beside the first kept image: the same for a partition and its swap.
    keys = {r: frozenset(images[h == h[0]].tolist()) for r, h in halves.items()}
    for a, b in combinations(keys, 2):
        if keys[a] == keys[b]:
            raise _fail(source, "distinct partitions", f"repeats {a} and {b} are the same "
                        f"partition (possibly with halves swapped) of {len(images)} images")
    for repeat, diff in diffs.items():
        _, imbalanced = strata.problems(diff)
        if imbalanced:
            raise _fail(source, "balance", f"repeat {repeat}: {'; '.join(imbalanced[:5])}"
                        + (f" ({len(imbalanced)} in all)" if len(imbalanced) > 5 else ""))


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
    parser.add_argument("--config", help="experiment file: write folds/<design>.csv for each of its "
                        "designs (replaces the options below)")
    parser.add_argument("--manifest", help="manifest.csv written by `pipeline data`")
    parser.add_argument("--design", help="labelling design (see `pipeline designs`)")
    parser.add_argument("--out", help="folds.csv to write")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--repeats", type=int, default=None, help="number of repeats (default 5)")
    parser.add_argument("--official", action="store_true",
                        help="write the official train/test split (ISIC 2016) as repeat 0")


def run(args: argparse.Namespace) -> int:
    from pipeline.manifest import read_manifest

    if args.config:
        from pipeline.config import load_config
        from pipeline.prepare import prepare_folds

        given = [f"--{k}" for k in ("manifest", "design", "out", "seed", "repeats")
                 if getattr(args, k) is not None] + (["--official"] if args.official else [])
        if given:
            raise PipelineError(f"--config takes the folds settings from the experiment file; "
                                f"{', '.join(given)} would do nothing. Set them in its [folds] "
                                "section instead.")
        prepare_folds(load_config(args.config))
        return 0
    missing = [f"--{k}" for k in ("manifest", "design", "out") if not getattr(args, k)]
    if missing:
        raise PipelineError(f"`folds` needs --manifest, --design and --out (or --config EXP); "
                            f"missing {', '.join(missing)}.")
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
    how = ("official split: train on half 1, test on half 2" if is_official(folds) else
           f"{folds['repeat'].nunique()} repeats, each half trains once")
    print(f"wrote {args.out}: {len(fold_runs(folds))} runs ({how})")
    return 0
