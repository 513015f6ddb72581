"""Report figures of an experiment (``auc.png``, ``roc.png``, ``referral.png``), drawn with matplotlib.

- ``plot_auc``: AUC per cell with its 95% CI, one panel per design, the paper's value as a marker;
- ``plot_roc``: per design, the mean ROC curve of each cell over its runs (true-positive rates
  averaged at fixed false-positive rates) with a ±1 sd band; for the 3-class design, melanoma
  against the rest;
- ``plot_referral``: the referral curves (``pipeline.evaluation.referral``) of every cell.

Inputs are ``pipeline.reporting.tables.summarize`` output and the ``predictions.csv`` table; each PNG is
written atomically. Plots use matplotlib's object-oriented API (a ``Figure`` rendered by Agg), never
pyplot's global state, so figures can be drawn from any thread or process without a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import roc_curve

from pipeline.cache.files import atomic_path
from pipeline.data.designs import DESIGNS
from pipeline.errors import PipelineError
from pipeline.protocol import CELL_TITLES
from pipeline.reporting.paper import PAPER_TABLE1
from pipeline.reporting.results import not_run_entries, ordered, skipped_entry, with_cells

_COLORS = dict(zip(CELL_TITLES, ("#1f77b4", "#9467bd", "#8c564b", "#ff7f0e", "#2ca02c", "#d62728",
                                 "#7f7f7f", "#e377c2")))


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_auc(summary: pd.DataFrame, path: str | os.PathLike,
             paper_table: pd.DataFrame | None = PAPER_TABLE1,
             not_run: Iterable[dict] = ()) -> pd.DataFrame:
    """AUC (%) per cell with its 95% CI, one panel per design; the paper's value as a marker.

    Args:
        summary: ``summarize`` output with ``metric == "auc"`` rows.
        path: the PNG to write.
        paper_table: designs x cells of the paper's AUC (%), or None.
        not_run: cells that could not run; their place on the axis reads "not run".

    Returns:
        The points drawn: one row per design x cell with ``auc``, ``low``, ``high`` (in %, NaN
        where the cell did not run) and ``paper`` (the marker, NaN where there is none).
    """
    auc = summary[summary["metric"] == "auc"]
    entries = not_run_entries(not_run)
    designs = ordered(auc["design"], DESIGNS)
    cells = ordered([*auc["cell"], *(e["cell"] for e in entries)], CELL_TITLES)
    # Wide enough for the longest design title even with a single cell per panel.
    width = max(3.9, 0.55 * len(cells) + 1.0)
    fig = Figure(figsize=(width * len(designs) + 0.6, 5.0), layout="constrained")
    axes = fig.subplots(1, len(designs), sharey=True, squeeze=False)[0]
    points = []
    for ax, design in zip(axes, designs):
        part = auc[auc["design"] == design].set_index("cell")
        for i, cell in enumerate(cells):
            point = {"design": design, "cell": cell, "auc": np.nan, "low": np.nan,
                     "high": np.nan, "paper": np.nan}
            if cell in part.index:
                r = part.loc[cell]
                point.update(auc=100 * r["mean"], low=100 * r["low"], high=100 * r["high"])
                err = None if not np.isfinite(r["low"]) else [[100 * (r["mean"] - r["low"])],
                                                               [100 * (r["high"] - r["mean"])]]
                ax.errorbar(i, 100 * r["mean"], yerr=err, fmt="o", color=_COLORS[cell], capsize=4,
                            label="this run, 95% CI")
            elif skipped_entry(entries, design, cell):
                ax.text(i, 0.03, "not run", rotation=90, ha="center", va="bottom", color="grey",
                        transform=ax.get_xaxis_transform())
            if paper_table is not None and design in paper_table.index and \
                    cell in paper_table.columns and np.isfinite(paper_table.loc[design, cell]):
                # Beside the point, not on it, so an equal value does not hide this run's mean.
                ax.plot(i + 0.25, paper_table.loc[design, cell], "kx", markersize=8,
                        label="paper (Menegola et al. 2017)")
                point["paper"] = float(paper_table.loc[design, cell])
            points.append(point)
        ax.set_xticks(range(len(cells)), cells, rotation=40, ha="right")
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.set_title(DESIGNS[design].title)
        ax.set_xlabel("cell (+ft = fine-tuned)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("AUC (%)")
    # Proxy handles in black: the points are coloured by cell, the legend explains the markers.
    handles = [Line2D([], [], color="k", marker="o", label="this run: mean, 95% CI")]
    if any(line.get_label().startswith("paper") for ax in axes for line in ax.get_lines()):
        handles.append(Line2D([], [], color="k", marker="x", ls="none", markersize=8,
                              label="paper (Menegola et al. 2017)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    fig.suptitle("AUC per cell with 95% CI (t over runs; bootstrap for a single run)")
    _save(fig, Path(path))
    return pd.DataFrame(points, columns=["design", "cell", "auc", "low", "high", "paper"])


def plot_roc(predictions: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Mean ROC curve of every cell over its runs, with a ±1 sd band, one panel per design.

    Curves are averaged vertically: each run's true-positive rate is interpolated at 201 fixed
    false-positive rates and the mean taken (pooling raw scores would mix SVMs whose decision
    values have different scales). The 3-class design shows melanoma against the rest
    (``score_melanoma``). Runs whose test images hold a single class have no ROC and are left out;
    the legend then gives the number of runs used.

    Args:
        predictions: ``predictions.csv`` table.
        path: the PNG to write.

    Returns:
        The curves drawn: one row per design x cell x grid point with ``fpr``, ``tpr`` (the mean
        over runs), ``tpr_sd`` and ``runs`` (how many runs the mean is over).
    """
    preds = with_cells(predictions, "predictions table", ["y_true"])
    designs = ordered(preds["design"], DESIGNS)
    grid = np.linspace(0, 1, 201)
    fig = Figure(figsize=(5.2 * len(designs), 5.6), layout="constrained")
    axes = fig.subplots(1, len(designs), squeeze=False)[0]
    most_runs, curves = 0, []
    for ax, design in zip(axes, designs):
        part = preds[preds["design"] == design]
        positive = DESIGNS[design].positive or "melanoma"
        column = "score" if DESIGNS[design].positive else "score_melanoma"
        if column not in part.columns:
            raise PipelineError(f"predictions table lacks column {column!r} for design {design!r}.")
        for cell in ordered(part["cell"], CELL_TITLES):
            runs = list(part[part["cell"] == cell].groupby(["repeat", "test_half"], sort=True))
            tprs, aucs = [], []
            for _, run in runs:
                y = (run["y_true"].astype(str) == positive).to_numpy()
                if 0 < y.sum() < len(y):
                    score = run[column].to_numpy(dtype=float)
                    fpr, tpr, _ = roc_curve(y, score)
                    tprs.append(np.interp(grid, fpr, tpr))
                    aucs.append(area_under_curve(fpr, tpr))  # = roc_auc_score, without re-ranking
            most_runs = max(most_runs, len(tprs))
            if not tprs:
                continue
            mean, sd = np.mean(tprs, axis=0), np.std(tprs, axis=0)
            curves.append(pd.DataFrame({"design": design, "cell": cell, "fpr": grid, "tpr": mean,
                                        "tpr_sd": sd, "runs": len(tprs)}))
            used = "" if len(tprs) == len(runs) else f", {len(tprs)}/{len(runs)} runs"
            ax.plot(grid, mean, color=_COLORS[cell], lw=1.8,
                    label=f"{cell} (AUC {100 * np.mean(aucs):.1f}{used})")
            if len(tprs) > 1:
                ax.fill_between(grid, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1),
                                color=_COLORS[cell], alpha=0.12, lw=0)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
        vs = f"{positive} vs. rest" if DESIGNS[design].positive is None else f"positive: {positive}"
        ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal",
               title=f"{DESIGNS[design].title}\n({vs})",
               xlabel="false-positive rate (1 − specificity)",
               ylabel="true-positive rate (sensitivity)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle("ROC curves: mean over runs at fixed false-positive rates, band ±1 sd"
                 if most_runs > 1 else "ROC curves (one run per cell)")
    _save(fig, Path(path))
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["design", "cell", "fpr", "tpr", "tpr_sd", "runs"])


def plot_referral(summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Referral curves: per 2-class design (rows), the share of positives that reach a doctor and
    the sensitivity and specificity on the cases the model decides (columns), against the mean
    realised referral rate; one colour per cell, solid for the most-uncertain policy and dashed for
    the paper's (confident positives + uncertain referred; in the first column only, as it
    decides negative calls only, so its SE on decided cases is 0 and its SP 1 by construction).

    Args:
        summary: ``pipeline.evaluation.referral.summarize_referral`` output.
        path: the PNG to write.
    """
    designs = ordered(summary["design"], DESIGNS)
    if not designs:
        raise PipelineError("the referral summary is empty: no 2-class design to plot.")
    measures = [("to_doctor", "positives that reach a doctor"),
                ("sensitivity", "sensitivity on decided cases"),
                ("specificity", "specificity on decided cases")]
    fig = Figure(figsize=(14.0, 4.2 * len(designs) + 0.8), layout="constrained")
    axes = fig.subplots(len(designs), len(measures), squeeze=False)
    styles = {"uncertain": "-", "paper": "--"}
    for row, design in zip(axes, designs):
        part = summary[summary["design"] == design]
        for ax, (measure, title) in zip(row, measures):
            for cell in ordered(part["cell"], CELL_TITLES):
                for policy, style in styles.items():
                    if policy == "paper" and measure != "to_doctor":
                        continue  # it decides negative calls only: SE 0 and SP 1 by construction
                    curve = part[(part["cell"] == cell) & (part["policy"] == policy)]
                    curve = curve.sort_values("rate")
                    ax.plot(curve["referred"], curve[measure], ls=style, color=_COLORS[cell],
                            lw=1.6, marker="." if policy == "uncertain" else None)
            if measure == "to_doctor":
                ax.axhline(0.95, color="grey", lw=1, ls=":")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="share of cases referred (mean over runs)",
                   title=f"{DESIGNS[design].title}: {title}")
            ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=_COLORS[c], lw=2, label=c)
               for c in ordered(summary["cell"], CELL_TITLES)]
    handles += [Line2D([], [], color="k", ls="-", label="refer the most uncertain"),
                Line2D([], [], color="k", ls="--", label="refer confident positives + uncertain "
                       "(paper)"),
                Line2D([], [], color="grey", ls=":", label="95% of positives reach a doctor")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5))
    fig.suptitle("Referral: the model decides some cases, a dermatologist sees the rest "
                 "(mean over runs)")
    return _save(fig, Path(path))
