"""The paper's effects, each tested on this experiment's own runs, for ``report.md``.

A report claims an effect only where its statistics support it. For every pair of cells the paper
makes a claim about (ImageNet features above random ones, training from scratch above the
untrained network, fine-tuning above none, transfer above training from scratch) and for
difficulty (AUC falling from low to high), the verdict comes from Alpaydin's combined 5x2cv F test
(p < 0.05; Alpaydin 1999 shows it keeps the 5x2cv t test's low type I error with more power, as
it uses all ten differences where the t test's numerator is one of them; the t test's p is shown
beside it): *shown* when the mean difference points the paper's way and is significant,
*within noise* when it is not significant (whatever its sign), *contradicted* when it is
significant the other way. Without 5 x 2 runs nothing is tested and the section says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data.designs import DESIGNS
from pipeline.evaluation.statistics import combined_5x2cv_f_test, paired_5x2cv_t_test
from pipeline.reporting.markdown import markdown_table

# (better, worse, the claim) in the paper's words
CELL_EFFECTS = (
    ("imagenet", "none", "ImageNet features beat the untrained network's random features"),
    ("none+ft", "none", "training from scratch beats the untrained network's random features"),
    ("imagenet+ft", "imagenet", "fine-tuning improves the ImageNet features"),
    ("imagenet+ft", "none+ft", "ImageNet transfer beats training from scratch"),
)
ALPHA = 0.05


def verdict(difference: float, p: float) -> str:
    """The words for a difference (expected > 0) and its two-sided p-value."""
    if not np.isfinite(p):
        return "not tested"
    if p >= ALPHA:
        return f"within noise (p = {p:.2f})"
    return (f"shown (p = {p:.3f})" if p >= 0.001 else "shown (p < 0.001)") if difference > 0 \
        else f"contradicted (p = {p:.3f})"


def cell_effects(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The verdict on each of ``CELL_EFFECTS`` whose cells this experiment ran, per design.

    Args:
        comparisons: ``pipeline.reporting.tables.comparisons`` (pairs in table order).

    Returns:
        ``design, claim, better, worse, difference`` (AUC points, better − worse) ``, p`` (the F
        test's) ``, t_p, verdict``.
    """
    rows = []
    for design in comparisons["design"].unique():
        part = comparisons[comparisons["design"] == design]
        for better, worse, claim in CELL_EFFECTS:
            hit = part[((part["a"] == better) & (part["b"] == worse))
                       | ((part["a"] == worse) & (part["b"] == better))]
            if hit.empty:
                continue
            r = hit.iloc[0]
            sign = 1.0 if r["a"] == better else -1.0
            difference = 100 * sign * float(r["mean_diff"])
            rows.append({"design": design, "claim": claim, "better": better, "worse": worse,
                         "difference": difference, "p": float(r["f_p"]), "t_p": float(r["t_p"]),
                         "verdict": verdict(difference, float(r["f_p"]))})
    return pd.DataFrame(rows, columns=["design", "claim", "better", "worse", "difference", "p",
                                       "t_p", "verdict"])


def difficulty_effects(per_run: pd.DataFrame) -> pd.DataFrame:
    """Whether AUC falls from low to high difficulty, per design, from per-run AUCs.

    Args:
        per_run: ``pipeline.reporting.tables.run_difficulty_aucs`` of one cell.

    Returns:
        ``design, difference`` (mean AUC low − high, points) ``, p`` (F test) ``, t_p, verdict``; a
        design whose runs are not 5 x 2 or whose levels lack a class in some run is ``not
        tested``.
    """
    rows = []
    for design, part in per_run.groupby("design", sort=False):
        table = part.pivot_table(index=["repeat", "test_half"], columns="level", values="auc")
        difference, p, t_p = np.nan, np.nan, np.nan
        if {"low", "high"} <= set(table.columns):
            low, high = table["low"], table["high"]
            difference = 100 * float((low - high).mean())
            repeats = sorted(table.index.get_level_values(0).unique())
            if len(repeats) == 5 and len(table) == 10 and low.notna().all() and \
                    high.notna().all():
                # rows (repeat, tested on half 2) first: Dietterich's fold 1, as compare_cells
                order = sorted(table.index, key=lambda key: (key[0], -key[1]))
                a = low.loc[order].to_numpy().reshape(5, 2)
                b = high.loc[order].to_numpy().reshape(5, 2)
                p, t_p = combined_5x2cv_f_test(a, b)[1], paired_5x2cv_t_test(a, b)[1]
        rows.append({"design": design, "difference": difference, "p": p, "t_p": t_p,
                     "verdict": verdict(difference, p)})
    return pd.DataFrame(rows, columns=["design", "difference", "p", "t_p", "verdict"])


def effects_section(cells: pd.DataFrame, difficulty: pd.DataFrame | None,
                    difficulty_cell: str) -> list[str]:
    """``report.md``'s section on the paper's effects, tested."""
    lines = ["## The paper's effects, tested on these runs", ""]
    if cells.empty and (difficulty is None or difficulty.empty):
        return lines + ["Not tested: the tests need 5 repeats x 2 test halves per cell and the "
                        "cells each claim compares.", ""]
    lines += ["Each claim is tested with Alpaydin's combined 5x2cv F test (p < 0.05), which uses "
              "all ten paired differences (Dietterich's 5x2cv t test, whose numerator is one of "
              "them, is less powerful; its p is given too): *shown* when the mean difference "
              "points the paper's way and is significant, *within noise* when it is not "
              "significant, *contradicted* when it is significant the other way. Only what is "
              "*shown* is a finding of this run.", ""]

    def p_text(p: float) -> str:
        return f"{p:.3f}" if np.isfinite(p) else "—"

    rows = [[DESIGNS[r.design].title, r.claim, f"{r.better} − {r.worse}",
             f"{r.difference:+.1f}", r.verdict, p_text(r.t_p)] for r in cells.itertuples()]
    if difficulty is not None:
        rows += [[DESIGNS[r.design].title, f"AUC falls from low to high difficulty "
                  f"(`{difficulty_cell}`)", "low − high",
                  "—" if not np.isfinite(r.difference) else f"{r.difference:+.1f}", r.verdict,
                  p_text(r.t_p)]
                 for r in difficulty.itertuples()]
    return lines + [markdown_table(["Design", "Claim", "Difference", "AUC points",
                                    "Verdict (F test)", "p (t test)"], rows), ""]
