"""Kim & Rocheteau's (2020) Table 1 and ROC figure, from the result tables of joined experiments.

Their study is a grid: backbones x {without, with ImageNet transfer} x 10 independent runs. Here
each backbone (or backbone with metadata) is one experiment, whose cells ``none+ft`` (trained from
scratch: table (a)) and ``imagenet+ft`` (transfer: table (b)) are its two halves; the experiments
are joined by ``report.architectures``. Why experiments joined rather than a list of networks in
one config: every stage, cache key and result file is already per network, so each backbone stays
an experiment ``make`` can run, resume and redo alone, and the grid is just the report's join.

``transfer_tables`` lays out (a) and (b): accuracy, AUROC, AUPRC and F1 as mean [95% CI] over the
runs (Student's t, ``mean_ci``), rows ordered by AUROC, in (b) the one-tailed Welch t test of
transfer against none (``one_tailed_t_test``; ``*`` p < 0.05, ``**`` p < 0.001), and in both the
one-tailed test of each model's AUROC against the clinicians' (``above_reference``), whose rows
close the table. ``plot_roc_corner`` draws the mean ROC curves with the top-left corner magnified.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from pipeline.cache.files import atomic_path
from pipeline.data.designs import DESIGNS
from pipeline.evaluation.statistics import above_reference, mean_ci, one_tailed_t_test, stars
from pipeline.reporting.markdown import markdown_table
from pipeline.reporting.results import with_cells

# Their Table 1 columns: metrics.csv column -> title.
KR_METRICS = {"accuracy": "Accuracy", "auc": "AUROC", "ap": "AUPRC", "f1": "F1"}
# The clinicians' AUROC they cite (mean ± 95% CI half width, from a meta-analysis).
CLINICIANS = {"general practitioners": (0.83, 0.03), "dermatologists": (0.91, 0.02)}
WITHOUT, WITH = "none+ft", "imagenet+ft"


def _interval(values) -> str:
    mean, _, low, high = mean_ci(values, bounds=(0.0, 1.0))
    return f"{mean:.3f}" if np.isnan(low) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def transfer_tables(metrics_by_model: dict[str, pd.DataFrame], design: str
                    ) -> dict[str, pd.DataFrame]:
    """Table 1 (a) without and (b) with transfer.

    Args:
        metrics_by_model: model name -> its experiment's ``metrics.csv`` table.
        design: the design (their study: ``melanoma_vs_benign``).

    Returns:
        ``{"a": table, "b": table}``: one row per model that ran the cell, ordered by mean AUROC
        (highest first), columns ``Model, Runs``, each metric as "mean [low, high]", then (b only)
        ``p (transfer > none)`` with its stars, then ``p (> <clinicians>)`` for each reference.
        Hidden numeric columns ``_auroc`` hold the means used for the order.
    """
    tables = {}
    for part, cell in (("a", WITHOUT), ("b", WITH)):
        rows = []
        for model, metrics in metrics_by_model.items():
            frame = with_cells(metrics, f"metrics of {model}")
            runs = frame[(frame["cell"] == cell) & (frame["design"] == design)]
            if runs.empty:
                continue
            row = {"Model": model, "Runs": len(runs), "_auroc": float(runs["auc"].mean())}
            for column, title in KR_METRICS.items():
                row[title] = _interval(runs[column].to_numpy(float))
            if part == "b":
                without = frame[(frame["cell"] == WITHOUT) & (frame["design"] == design)]
                _, _, p = one_tailed_t_test(runs["auc"], without["auc"])
                row["p (transfer > none)"] = "—" if np.isnan(p) else f"{p:.3g}{stars(p)}"
            for who, (mean, half) in CLINICIANS.items():
                _, p = above_reference(runs["auc"], mean, half)
                row[f"p (> {who})"] = "—" if np.isnan(p) else f"{p:.3g}{stars(p)}"
            rows.append(row)
        table = pd.DataFrame(rows)
        if len(table):
            table = table.sort_values("_auroc", ascending=False, kind="stable")
        tables[part] = table.reset_index(drop=True)
    return tables


def transfer_section(metrics_by_model: dict[str, pd.DataFrame],
                     predictions_by_model: dict[str, pd.DataFrame], out_dir: str | os.PathLike,
                     design: str = "melanoma_vs_benign") -> list[str]:
    """The report's lines for Kim & Rocheteau's Table 1 and ROC figure (``roc_corner.png``)."""
    tables = transfer_tables(metrics_by_model, design)
    lines = [f"## Table 1 (Kim & Rocheteau 2020): {DESIGNS[design].title}", "",
             "Test-part metrics, mean [95% CI] over the independent runs (Student's t), rows by "
             "AUROC. p: one-tailed Welch t test of transfer against none on AUROC, and one-tailed "
             "z test of the AUROC against the clinicians' (mean ± 95% CI); * p < 0.05, "
             "** p < 0.001.", ""]
    for part, title in (("a", "(a) without transfer (`none+ft`)"),
                        ("b", "(b) with ImageNet transfer (`imagenet+ft`)")):
        table = tables[part]
        lines += [f"### {title}", ""]
        if table.empty:
            lines += ["No experiment ran this cell.", ""]
            continue
        columns = [c for c in table.columns if not c.startswith("_")]
        rows = [[row[c] for c in columns] for _, row in table.iterrows()]
        rows += [[f"{who} (cited)", "—", "—", f"{mean:.2f} ± {half:.2f}", "—", "—"]
                 + ["—"] * (len(columns) - 6) for who, (mean, half) in CLINICIANS.items()]
        lines += [markdown_table(columns, rows), ""]
    if any(not p.empty for p in predictions_by_model.values()):
        plot_roc_corner(predictions_by_model, Path(out_dir) / "roc_corner.png", design)
        lines += ["![ROC curves, top-left corner magnified](roc_corner.png)", ""]
    return lines


def plot_roc_corner(predictions_by_model: dict[str, pd.DataFrame], path: str | os.PathLike,
                    design: str = "melanoma_vs_benign", corner: float = 0.3) -> pd.DataFrame:
    """Mean ROC curve (vertical average over runs) of each model's two cells, with an inset
    magnifying the top-left corner ``[0, corner] x [1 - corner, 1]``.

    Returns:
        The curves: ``model, cell, fpr, tpr, runs``.
    """
    grid = np.linspace(0, 1, 401)
    fig = Figure(figsize=(7, 6.5), layout="constrained")
    ax = fig.subplots()
    inset = ax.inset_axes([0.45, 0.08, 0.5, 0.5])
    positive = DESIGNS[design].positive or "melanoma"
    curves = []
    for model, predictions in predictions_by_model.items():
        preds = with_cells(predictions, f"predictions of {model}", ["y_true", "score"])
        preds = preds[preds["design"] == design]
        for cell, style in ((WITHOUT, "--"), (WITH, "-")):
            tprs = []
            for _, run in preds[preds["cell"] == cell].groupby(["repeat", "test_half"]):
                y = (run["y_true"].astype(str) == positive).to_numpy()
                if 0 < y.sum() < len(y):
                    fpr, tpr, _ = roc_curve(y, run["score"].to_numpy(float))
                    tprs.append(np.interp(grid, fpr, tpr))
            if not tprs:
                continue
            mean = np.mean(tprs, axis=0)
            curves.append(pd.DataFrame({"model": model, "cell": cell, "fpr": grid, "tpr": mean,
                                        "runs": len(tprs)}))
            for axes in (ax, inset):
                axes.plot(grid, mean, ls=style, lw=1.5, label=f"{model}, {cell}")
    for axes in (ax, inset):
        axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        axes.grid(alpha=0.3)
    inset.set(xlim=(0, corner), ylim=(1 - corner, 1.0), title="top-left corner")
    ax.indicate_inset_zoom(inset, edgecolor="black")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate (1 − specificity)",
           ylabel="true-positive rate (sensitivity)",
           title=f"{DESIGNS[design].title}: mean ROC over runs (dashed: without transfer)")
    ax.legend(loc="upper left", fontsize="x-small", bbox_to_anchor=(0.0, 0.85))
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["model", "cell", "fpr", "tpr", "runs"])
