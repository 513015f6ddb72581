"""One hold-out split, train / validation / test (Kim & Rocheteau 2020: 60 / 20 / 20), grouped.

The split is a folds table (``pipeline.folds.table``) whose half 1 is the training part, half 2
the test part and half 3 (``VALIDATION_PART``) the validation part, repeated identically as
repeats 1..R, one per independent training run (``runs``; the run's seed is ``run_seeds``). Like the 5×2 folds it
balances the fine diagnosis and the design's classes across the parts, and the images of one
patient or lesion (manifest column ``group``) stay in one part. The paper's own code split images
without grouping (a patient's images could land in train and test); that leaky split is available
only by name, ``grouped=False``, never by default. The paper's 10 independent runs all use this one
split; they differ in their seeds only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.data.designs import get_design
from pipeline.errors import PipelineError
from pipeline.folds.table import (PART_NAMES, TEST_HALF, TRAIN_HALF, VALIDATION_PART,
                                  holdout_imbalance, kept_images, strata_of)

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
_PARTS = (TRAIN_HALF, VALIDATION_PART, TEST_HALF)  # the order of ``fractions``
_MAX_DRAWS = 50


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``fractions`` as three floats > 0 summing to 1 (train, validation, test)."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or not all(0 < f < 1 for f in values) or abs(sum(values) - 1) > 1e-6:
        raise PipelineError(f"hold-out fractions must be three numbers in (0, 1), train, "
                            f"validation and test, summing to 1 (the paper: [0.6, 0.2, 0.2]); "
                            f"got {list(fractions)}.")
    return values


def make_holdout(manifest: pd.DataFrame, design: str, seed: int = 0,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS, *, runs: int = 1,
                 grouped: bool = True) -> pd.DataFrame:
    """A stratified train / validation / test split, groups never split across parts.

    Groups are shuffled with ``numpy.random.default_rng(seed)``, taken largest first (stable), and
    each goes to the part where it lowers the imbalance most: the sum over parts and over strata
    (every diagnosis, every class of the design, and the image count) of
    ``w_k (n_pk − f_p N_k)²``, with ``w_k = 1 / N_k`` so that a rare diagnosis weighs like a common
    one; ties go to a coin flip. A draw whose parts miss a class or break the balance bound of
    ``check_folds`` (``pipeline.folds.table.holdout_imbalance``) is redrawn with the next
    generator state.

    Args:
        manifest: manifest table (columns ``image, category, diagnosis, group``).
        design: design name (see ``pipeline.data.designs``).
        seed: random seed; the same seed gives the same split.
        fractions: shares of the training, validation and test parts.
        runs: how many independent training runs use the split (its repeats 1..runs).
        grouped: keep each ``group`` in one part (default). ``False`` treats every image as its
            own group: the paper's code's leaky split, for comparison only.

    Returns:
        Table with columns ``image, repeat, half``: for each repeat 1..runs the same split, half
        1 (train), 3 (validation) or 2 (test), every kept image once, in manifest order.

    Raises:
        PipelineError: if the fractions are invalid, a class has fewer than 3 groups, or no
            balanced split was found.
    """
    fractions = check_fractions(fractions)
    run_seeds(seed, runs)  # checks runs
    classes = get_design(design).classes
    kept = kept_images(manifest, design)
    if not grouped:
        kept = kept.assign(group=kept["image"])
    for c in classes:
        holders = kept.loc[kept["label"] == c, "group"].nunique()
        if holders < 3:
            raise PipelineError(f"class {c!r} of design {design!r} has its images in {holders} "
                                "group(s); each of the hold-out's train, validation and test parts "
                                "needs it. Use data with that class in at least three patients.")
    strata = strata_of(kept, classes, None)
    counts = np.concatenate([strata.counts, np.bincount(strata.codes)[:, None]], axis=1)
    counts = counts.astype(np.float64)
    totals = counts.sum(axis=0)
    weights = 1.0 / np.maximum(totals, 1)
    targets = np.outer(fractions, totals)  # (3 parts, n_strata + 1)
    sizes = counts[:, -1]
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_DRAWS):
        order = rng.permutation(len(sizes))
        order = order[np.argsort(-sizes[order], kind="stable")]
        filled = np.zeros_like(targets)
        group_part = np.empty(len(sizes), dtype=np.int64)
        for g in order:
            # Cost change of adding counts[g] to part p: Σ_k w_k (2 (n_pk − t_pk) c_k + c_k²).
            delta = ((2 * (filled - targets) + counts[g]) * counts[g]) @ weights
            best = np.flatnonzero(np.isclose(delta, delta.min(), rtol=0, atol=1e-12))
            p = int(best[0] if len(best) == 1 else rng.choice(best))
            group_part[g] = p
            filled[p] += counts[g]
        part = np.asarray(_PARTS)[group_part][strata.codes]
        complete = all(((part == h) & (kept["label"] == c).to_numpy()).any()
                       for h in PART_NAMES for c in classes)
        if complete and not holdout_imbalance(strata, part):
            return pd.concat([pd.DataFrame({"image": kept["image"].to_numpy(), "repeat": r,
                                            "half": part}) for r in range(1, int(runs) + 1)],
                             ignore_index=True)
    raise PipelineError(f"found no balanced hold-out split {list(fractions)} of the {len(kept)} "
                        f"images ({len(sizes)} groups) of design {design!r} in {_MAX_DRAWS} draws; "
                        "a few very large groups cannot be spread. Use more data or other "
                        "fractions.")


def run_seeds(seed: int, runs: int) -> list[int]:
    """The seeds of the ``runs`` independent training runs on one hold-out split: run r (1-based,
    the folds table's repeat r) gets ``seed + r − 1``, so run 1 is the experiment's own seed and
    the runs are distinct."""
    if int(runs) < 1:
        raise PipelineError(f"runs must be an integer >= 1; got {runs}.")
    return [int(seed) + r for r in range(int(runs))]
