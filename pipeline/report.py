"""Report stage: the paper's tables, plots and ``report.md`` from an experiment's result files.

Reads an experiment's ``metrics.csv`` (one row per run: design x cell x repeat x test half),
``predictions.csv`` (one row per test image per run: ``score`` for two classes, ``score_<class>``
for three) and, for Table 4, the manifest's ``difficulty``. Writes into the experiment's folder,
every file atomically:

- ``report.md``: the experiment's facts; Table 1 (AUC % "mean ± sd" over runs) next to the paper's
  numbers; AUC, AP, ACC, SE, SP, F1 with 95% confidence intervals; Table 4 (AUC by diagnostic
  difficulty) when the manifest has difficulty; the 5x2cv t and F tests between cells; the cells
  that could not run, with reason and fix; the figures;
- ``auc.png``: AUC per cell with its 95% CI, one panel per design, the paper's value as a marker;
- ``roc.png``: per design, the mean ROC curve of each cell over its runs (true-positive rates
  averaged at fixed false-positive rates) with a ±1 sd band; for the 3-class design, melanoma
  against the rest;
- ``comparisons.csv``: ``pipeline.evaluate.compare_cells`` for every design.

A cell is ``<source>`` (fc7 features of the source network, no fine-tuning) or ``<source>+ft``.
Plots use matplotlib's object-oriented API (a ``Figure`` rendered by Agg), never pyplot's global
state, so reports can be written from any thread or process without a display.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import roc_auc_score, roc_curve

from pipeline.cache import atomic_path, hash_bytes, write_csv, write_text
from pipeline.designs import DESIGNS, get_design
from pipeline.errors import PipelineError
from pipeline.evaluate import bootstrap_ci, cell_metrics, cell_name, compare_cells, mean_ci

SOURCES = ("none", "retinopathy", "imagenet", "double")
# Table order: the paper's six cells, then the two that complete the 4 x 2 grid.
CELL_TITLES = {
    "none+ft": "No Transfer",
    "retinopathy": "From Retinopathy, no FT",
    "retinopathy+ft": "From Retinopathy, with FT",
    "imagenet": "From ImageNet, no FT",
    "imagenet+ft": "From ImageNet, with FT",
    "double+ft": "Double Transfer, with FT",
    "none": "Random features, no FT",
    "double": "Double Transfer, no FT",
}
PAPER_CELLS = tuple(CELL_TITLES)[:6]
LEVELS = ("low", "medium", "high")
METRIC_TITLES = {"auc": "AUC", "auc_ovr": "AUC OvR", "ap": "AP", "accuracy": "ACC",
                 "sensitivity": "SE", "specificity": "SP", "f1": "F1"}
RUN_KEY = ["design", "cell", "repeat", "test_half"]

# Menegola et al. (2017), AUC in %. Table 1: Atlas, VGG-M; Table 3: imagenet+ft per network;
# Table 2: ISIC 2016 official split, VGG-16, imagenet+ft; Table 4: Atlas, VGG-M, imagenet+ft.
PAPER_TABLE1 = pd.DataFrame([[76.0, 72.8, 76.0, 79.1, 82.5, 78.8],
                             [75.7, 73.5, 75.3, 77.9, 80.9, 80.9],
                             [73.0, 71.4, 72.8, 79.4, 83.6, 81.8]],
                            index=list(DESIGNS), columns=list(PAPER_CELLS))
PAPER_TABLE3 = pd.DataFrame([[82.5, 80.9, 83.6], [83.8, 83.5, 84.5]],
                            index=["VGG-M", "VGG-16"], columns=list(DESIGNS))
PAPER_TABLE2 = {"auc": 80.7, "ap": 54.9, "accuracy": 79.2, "sensitivity": 47.6,
                "specificity": 88.1}
PAPER_TABLE4 = pd.DataFrame([[93.7, 82.5, 58.8, 82.5], [93.0, 79.6, 56.6, 80.9]],
                            index=["malignant_vs_benign", "melanoma_vs_benign"],
                            columns=[*LEVELS, "all"])


# ----------------------------------------------------------------------------- inputs
def _with_cells(frame: pd.DataFrame, what: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Validate a result table (``metrics.csv`` or ``predictions.csv``) and add its ``cell``."""
    needed = ["source", "finetune", "design", "repeat", "test_half", *extra]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise PipelineError(f"{what} lacks columns {missing}; it needs {needed} (columns found: "
                            f"{list(frame.columns)}). Rewrite it with `python -m pipeline svm`.")
    if frame.empty:
        raise PipelineError(f"{what} has no rows: no cell ran. Run `python -m pipeline svm` for "
                            "the experiment first (cells that cannot run are listed in not_run).")
    out = frame.copy()
    for column, allowed in (("source", SOURCES), ("design", tuple(DESIGNS))):
        out[column] = out[column].astype(str)
        bad = ~out[column].isin(allowed)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PipelineError(f"{what}, row {i + 2}: {column} {out[column].iloc[i]!r} is not "
                                f"one of {', '.join(allowed)}.")
    flags = out["finetune"].astype(str).str.strip().str.lower().map(_BOOLEANS)
    if flags.isna().any():
        i = int(np.flatnonzero(flags.isna())[0])
        raise PipelineError(f"{what}, row {i + 2}: finetune {out['finetune'].iloc[i]!r} is not a "
                            "boolean; write True or False.")
    out["finetune"] = flags.astype(bool)
    out["cell"] = [cell_name(s, f) for s, f in zip(out["source"], out["finetune"])]
    return out


_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _ordered(values: Iterable[str], order: Iterable[str]) -> list[str]:
    present = set(values)
    return [v for v in order if v in present]


def _not_run(not_run: Iterable[dict]) -> list[dict]:
    """Normalise ``not_run`` entries: ``cell``, ``designs`` (None = every design), reason, fix."""
    entries = []
    for i, entry in enumerate(not_run):
        missing = [k for k in ("source", "finetune", "reason", "fix") if k not in entry]
        finetune = _BOOLEANS.get(str(entry.get("finetune")).strip().lower())
        if missing or entry["source"] not in SOURCES or finetune is None:
            raise PipelineError(f"not_run entry {i} ({entry!r}) needs keys source (one of "
                                f"{', '.join(SOURCES)}), finetune (True/False), reason and fix"
                                + (f"; missing {missing}." if missing else "."))
        design = entry.get("design")
        entries.append({"cell": cell_name(entry["source"], finetune),
                        "designs": None if design is None else {get_design(design).name},
                        "reason": str(entry["reason"]), "fix": str(entry["fix"])})
    return entries


def _skipped(entries: list[dict], design: str, cell: str) -> dict | None:
    for entry in entries:
        if entry["cell"] == cell and (entry["designs"] is None or design in entry["designs"]):
            return entry
    return None


def _score_columns(design: str) -> list[str]:
    classes = get_design(design).classes
    return ["score"] if len(classes) == 2 else [f"score_{c}" for c in classes]


def _run_scores(run: pd.DataFrame, design: str, what: str) -> np.ndarray:
    """Scores of one run: array of shape (n_images,) or (n_images, 3)."""
    columns = _score_columns(design)
    missing = [c for c in columns if c not in run.columns]
    if missing:
        raise PipelineError(f"{what} lacks score columns {missing} for design {design!r}.")
    scores = run[columns].to_numpy(dtype=float)
    return scores[:, 0] if len(columns) == 1 else scores


# ----------------------------------------------------------------------------- summaries
def _pct(value: float) -> str:
    return "—" if not np.isfinite(value) else f"{100 * value:.1f}"


def _mean_sd(mean: float, sd: float) -> str:
    return _pct(mean) if not np.isfinite(sd) else f"{_pct(mean)} ± {_pct(sd)}"


def _mean_ci(mean: float, low: float, high: float) -> str:
    return _pct(mean) if not np.isfinite(low) else f"{_pct(mean)} [{_pct(low)}, {_pct(high)}]"


def _bootstrap(run: pd.DataFrame, design: str, column: str, value: float, threshold: float,
               n_boot: int, seed: int, confidence: float,
               cache: dict) -> tuple[float, float, float]:
    """``bootstrap_ci`` of one metric of one run; ``(value, nan, nan)`` if the design lacks it.

    ``bootstrap_ci`` draws the same resamples for every metric (same seed), so ``cell_metrics`` of
    each resample is computed once and kept in ``cache`` for the run's other metrics.
    """
    classes = get_design(design).classes

    def metrics_of(y: np.ndarray, s: np.ndarray) -> dict:
        key = hash_bytes(y.tobytes() + np.ascontiguousarray(s).tobytes())
        if key not in cache:
            cache[key] = cell_metrics(y, s, classes, threshold)
        return cache[key]

    y = run["y_true"].astype(str).to_numpy()
    scores = _run_scores(run, design, "predictions table")
    whole = metrics_of(y, scores)
    if column not in whole:  # e.g. auc_ovr of a 2-class design
        return value, np.nan, np.nan
    return bootstrap_ci(y, scores, lambda yy, ss: metrics_of(yy, ss)[column], n_boot=n_boot,
                        seed=seed, confidence=confidence)


def summarize(metrics: pd.DataFrame, columns: Sequence[str] = ("auc",),
              predictions: pd.DataFrame | None = None, confidence: float = 0.95,
              threshold: float = 0.0, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean, sd and confidence interval of metrics over the runs of every design x cell.

    Several runs: Student's t interval over runs (``mean_ci``). One run (an official split) and
    ``predictions`` given: stratified percentile bootstrap over its test images (``bootstrap_ci``
    with ``cell_metrics`` at ``threshold``). Runs where a metric is NaN do not count (``n_runs``).

    Args:
        metrics: ``metrics.csv`` table, one row per run.
        columns: metric columns to summarise.
        predictions: ``predictions.csv`` table, needed only for a bootstrap.
        confidence: coverage of the intervals.
        threshold: decision threshold of the bootstrapped operating-point metrics.
        n_boot: bootstrap resamples.
        seed: seed of the bootstrap.

    Returns:
        One row per design x cell x metric (designs and cells in table order), columns ``design,
        cell, metric, n_runs, mean, sd, low, high, ci`` (``ci`` says how the interval was made).
    """
    frame = _with_cells(metrics, "metrics table", columns)
    if frame.duplicated(RUN_KEY).any():
        dup = frame.loc[frame.duplicated(RUN_KEY), RUN_KEY].iloc[0].tolist()
        raise PipelineError(f"metrics table has several rows for run {dup} (design, cell, repeat, "
                            "test_half); each run must appear once.")
    preds = None if predictions is None else _with_cells(predictions, "predictions table",
                                                         ["y_true"])
    rows, caches = [], {}
    for design in _ordered(frame["design"], DESIGNS):
        for cell in _ordered(frame.loc[frame["design"] == design, "cell"], CELL_TITLES):
            runs = frame[(frame["design"] == design) & (frame["cell"] == cell)]
            for column in columns:
                values = runs[column].astype(float).dropna()
                row = {"design": design, "cell": cell, "metric": column, "n_runs": len(values)}
                if len(values) == 0:
                    row.update(mean=np.nan, sd=np.nan, low=np.nan, high=np.nan, ci="no values")
                elif len(values) > 1 or preds is None:
                    mean, sd, low, high = mean_ci(values, confidence, bounds=(0.0, 1.0))
                    row.update(mean=mean, sd=sd, low=low, high=high,
                               ci=f"t, {len(values)} runs" if len(values) > 1 else "single run")
                else:
                    key = runs.loc[values.index[0], RUN_KEY]
                    run = preds.loc[(preds[RUN_KEY] == key.to_numpy()).all(axis=1)]
                    if run.empty:
                        raise PipelineError(f"predictions table has no rows for run "
                                            f"{key.tolist()}; cannot bootstrap its CI.")
                    mean, low, high = _bootstrap(run, design, column, float(values.iloc[0]),
                                                 threshold, n_boot, seed, confidence,
                                                 caches.setdefault((design, cell), {}))
                    row.update(mean=mean, sd=np.nan, low=low, high=high,
                               ci=f"bootstrap, {n_boot} resamples" if np.isfinite(low)
                               else "single run")
                rows.append(row)
    return pd.DataFrame(rows, columns=["design", "cell", "metric", "n_runs", "mean", "sd", "low",
                                       "high", "ci"])


def _table1(summary: pd.DataFrame, entries: list[dict]) -> pd.DataFrame:
    summary = summary.set_index(["design", "cell"])
    designs = _ordered(summary.index.get_level_values(0), DESIGNS)
    cells = _ordered([*summary.index.get_level_values(1), *(e["cell"] for e in entries)],
                     CELL_TITLES)
    table = pd.DataFrame("no results", index=pd.Index(designs, name="design"), columns=cells,
                         dtype=object)
    for design in designs:
        for cell in cells:
            if _skipped(entries, design, cell):
                if (design, cell) in summary.index:
                    raise PipelineError(f"cell {cell!r}, design {design!r} has results in the "
                                        "metrics table and is also listed as not run; remove one.")
                table.loc[design, cell] = "not run"
            elif (design, cell) in summary.index:
                row = summary.loc[(design, cell)]
                table.loc[design, cell] = _mean_sd(row["mean"], row["sd"])
    return table


def table1(metrics: pd.DataFrame, not_run: Iterable[dict] = (),
           metric: str = "auc") -> pd.DataFrame:
    """Table 1: AUC (%) "mean ± sd" over runs, designs x cells in the paper's layout.

    Args:
        metrics: ``metrics.csv`` table, one row per run.
        not_run: ``{source, finetune, reason, fix[, design]}`` for cells that could not run; they
            read "not run".
        metric: metric column (``auc``: for 3 classes the paper's one-vs-one mean).

    Returns:
        Index = design names (paper order), columns = cell names (the paper's six, then ``none``
        and ``double``, each only when it has results or is listed in ``not_run``). Cells without
        runs for a design read "no results"; with a single run, the mean alone.
    """
    return _table1(summarize(metrics, [metric]), _not_run(not_run))


def table1_numeric(metrics: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Table 1's means as numbers (AUC %), designs x cells in table order, NaN where absent."""
    summary = summarize(metrics, [metric])
    table = summary.pivot(index="design", columns="cell", values="mean") * 100
    return table.reindex(index=_ordered(table.index, DESIGNS),
                         columns=_ordered(table.columns, CELL_TITLES))


def table_architectures(metrics_by_network: dict[str, pd.DataFrame], cell: str = "imagenet+ft",
                        metric: str = "auc") -> pd.DataFrame:
    """Table 3: AUC (%) "mean ± sd" of one cell per design, one row per network.

    Args:
        metrics_by_network: network name -> its experiment's ``metrics.csv`` table.
        cell: the cell compared (the paper: ``imagenet+ft``).
        metric: metric column.

    Returns:
        Index = network names (given order), columns = design names; "no results" where the
        network's table has no runs of ``cell`` for a design.
    """
    rows = {}
    for network, metrics in metrics_by_network.items():
        summary = summarize(metrics, [metric])
        summary = summary[summary["cell"] == cell].set_index("design")
        rows[network] = {d: _mean_sd(summary.loc[d, "mean"], summary.loc[d, "sd"])
                         if d in summary.index else "no results" for d in DESIGNS}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(DESIGNS))


def table_difficulty(predictions: pd.DataFrame, manifest: pd.DataFrame,
                     cell: str = "imagenet+ft") -> tuple[pd.DataFrame, list[str]]:
    """Table 4: AUC by the test images' diagnostic difficulty, per 2-class design.

    For every run of ``cell``, the AUC on the run's test images of each difficulty level and on
    all of them; then the mean and sd over the runs where the level's images hold both classes.

    Args:
        predictions: ``predictions.csv`` table.
        manifest: manifest table with ``image`` and ``difficulty`` (``low|medium|high`` or empty).
        cell: the cell reported (the paper: ``imagenet+ft``).

    Returns:
        ``(table, notes)``: one row per design x level (``low, medium, high, all``), columns
        ``design, level, mean, sd, runs_used, runs_total, share`` (share = fraction of the design's
        test images at that level); and sentences on what was skipped and why. The table is empty
        when the manifest has no difficulty.
    """
    columns = ["design", "level", "mean", "sd", "runs_used", "runs_total", "share"]
    preds = _with_cells(predictions, "predictions table", ["image", "y_true"])
    two_class = preds["design"].map(lambda d: DESIGNS[d].positive is not None)
    preds = preds[(preds["cell"] == cell) & two_class]
    if "difficulty" not in manifest.columns or \
            not manifest["difficulty"].fillna("").astype(str).isin(LEVELS).any():
        return pd.DataFrame(columns=columns), ["Table 4 skipped: the manifest has no diagnostic "
                                               "difficulty (only the Atlas provides it)."]
    if preds.empty:
        return pd.DataFrame(columns=columns), [f"Table 4 skipped: no predictions of cell {cell!r} "
                                               "for a 2-class design."]
    level = manifest.set_index(manifest["image"].astype(str))["difficulty"].fillna("").astype(str)
    unknown = sorted(set(preds["image"].astype(str)) - set(level.index))
    if unknown:
        raise PipelineError(f"predictions table has {len(unknown)} images that are not in the "
                            f"manifest (e.g. {unknown[:3]}); pass the manifest the experiment "
                            "used.")
    preds = preds.assign(level=preds["image"].astype(str).map(level))
    rows, notes = [], []
    for design in _ordered(preds["design"], DESIGNS):
        positive = DESIGNS[design].positive
        part = preds[preds["design"] == design]
        runs = list(part.groupby(["repeat", "test_half"], sort=True))
        images = part.drop_duplicates("image")
        for name in (*LEVELS, "all"):
            aucs = []
            for _, run in runs:
                subset = run if name == "all" else run[run["level"] == name]
                y = (subset["y_true"].astype(str) == positive).to_numpy()
                if 0 < y.sum() < len(y):
                    aucs.append(roc_auc_score(y, subset["score"].to_numpy(dtype=float)))
            share = 1.0 if name == "all" else float((images["level"] == name).mean())
            mean, sd = (mean_ci(aucs)[:2] if aucs else (np.nan, np.nan))
            rows.append({"design": design, "level": name, "mean": mean, "sd": sd,
                         "runs_used": len(aucs), "runs_total": len(runs), "share": share})
            if len(aucs) < len(runs):
                notes.append(f"{DESIGNS[design].title}, {name} difficulty: {len(runs) - len(aucs)} "
                             f"of {len(runs)} runs skipped (their test images of this level hold "
                             "a single class or none); AUC over the other "
                             f"{len(aucs)} runs.")
        unrated = int((images["level"] == "").sum())
        if unrated:
            notes.append(f"{DESIGNS[design].title}: {unrated} of {len(images)} test images have no "
                         "difficulty; they count only in All.")
    return pd.DataFrame(rows, columns=columns), notes


def table_isic_metrics(metrics: pd.DataFrame, predictions: pd.DataFrame | None = None,
                       threshold: float = 0.0, confidence: float = 0.95, n_boot: int = 1000,
                       seed: int = 0) -> pd.DataFrame:
    """AUC, AUC OvR (3 classes), AP, ACC, SE, SP, F1 (%) per cell with 95% confidence intervals.

    ACC, SE, SP and F1 are those of the decision ``score > threshold`` (0 is the SVM's own
    decision) for two classes, and of the argmax, melanoma against the rest, for three. Intervals:
    Student's t over runs, or a bootstrap over test images for a single run (see ``summarize``).

    Args:
        metrics: ``metrics.csv`` table.
        predictions: ``predictions.csv`` table (for single-run bootstraps).
        threshold: the decision threshold the metrics were computed with.
        confidence: coverage of the intervals.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        Index (design, cell), columns the metric titles then ``runs`` and ``CI``; values
        "mean [low, high]".
    """
    names = [c for c in METRIC_TITLES if c in metrics.columns]
    return _isic_table(summarize(metrics, names, predictions, confidence, threshold, n_boot, seed))


def _isic_table(summary: pd.DataFrame) -> pd.DataFrame:
    rows = {}
    for (design, cell), part in summary.groupby(["design", "cell"], sort=False):
        row = {}
        for r in part.itertuples():
            two_class_ovr = r.metric == "auc_ovr" and len(DESIGNS[design].classes) == 2
            row[METRIC_TITLES[r.metric]] = "—" if two_class_ovr else _mean_ci(r.mean, r.low, r.high)
        row["runs"] = int(part["n_runs"].max())
        row["CI"] = part["ci"].iloc[0]
        rows[(design, cell)] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["design", "cell"]
    return table


def comparisons(metrics: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Every pair of cells compared per design (5x2cv paired t test and combined F test).

    Args:
        metrics: ``metrics.csv`` table with 5 repeats x 2 test halves per cell.
        metric: the metric compared.

    Returns:
        ``compare_cells`` of every design, concatenated: columns ``design, a, b, mean_diff,
        t_stat, t_p, f_stat, f_p``. Each pair is oriented so that ``a`` comes before ``b`` in
        Table 1's order (swapping a and b negates ``mean_diff`` and ``t_stat``; the p-values and
        ``f_stat`` do not change), and pairs are sorted in that order.
    """
    designs = _ordered(_with_cells(metrics, "metrics table", [metric])["design"], DESIGNS)
    if not designs:
        raise PipelineError("metrics table has no rows; nothing to compare.")
    table = pd.concat([compare_cells(metrics, d, metric) for d in designs], ignore_index=True)
    order = {c: i for i, c in enumerate(CELL_TITLES)}
    swap = (table["a"].map(order) > table["b"].map(order)).to_numpy()
    table.loc[swap, ["a", "b"]] = table.loc[swap, ["b", "a"]].to_numpy()
    table.loc[swap, ["mean_diff", "t_stat"]] *= -1
    key = (table["design"].map({d: i for i, d in enumerate(DESIGNS)}) * 10_000
           + table["a"].map(order) * 100 + table["b"].map(order))
    return table.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


# ----------------------------------------------------------------------------- markdown
def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured markdown table (``|`` in cells escaped)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _p(value: float) -> str:
    if not np.isfinite(value):
        return "—"
    text = "<0.001" if value < 0.001 else f"{value:.3f}"
    return text + " *" if value < 0.05 else text


def format_comparison_table(comparisons: pd.DataFrame) -> str:
    """The comparisons as a markdown table; p < 0.05 marked ``*``; differences in AUC points."""
    rows = [[DESIGNS[r.design].title if r.design in DESIGNS else r.design, r.a, r.b,
             f"{100 * r.mean_diff:+.1f}", f"{r.t_stat:.2f}", _p(r.t_p), f"{r.f_stat:.2f}",
             _p(r.f_p)] for r in comparisons.itertuples()]
    return markdown_table(["design", "a", "b", "mean a − b", "t", "p (t)", "F", "p (F)"], rows)


# ----------------------------------------------------------------------------- figures
_COLORS = dict(zip(CELL_TITLES, ("#1f77b4", "#9467bd", "#8c564b", "#ff7f0e", "#2ca02c", "#d62728",
                                 "#7f7f7f", "#e377c2")))


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_auc(summary: pd.DataFrame, path: str | os.PathLike,
             paper_table: pd.DataFrame | None = PAPER_TABLE1, not_run: Iterable[dict] = ()) -> Path:
    """AUC (%) per cell with its 95% CI, one panel per design; the paper's value as a marker.

    Args:
        summary: ``summarize`` output with ``metric == "auc"`` rows.
        path: the PNG to write.
        paper_table: designs x cells of the paper's AUC (%), or None.
        not_run: cells that could not run; their place on the axis reads "not run".

    Returns:
        ``path``.
    """
    auc = summary[summary["metric"] == "auc"]
    entries = _not_run(not_run)
    designs = _ordered(auc["design"], DESIGNS)
    cells = _ordered([*auc["cell"], *(e["cell"] for e in entries)], CELL_TITLES)
    # Wide enough for the longest design title even with a single cell per panel.
    width = max(3.9, 0.55 * len(cells) + 1.0)
    fig = Figure(figsize=(width * len(designs) + 0.6, 5.0), layout="constrained")
    axes = fig.subplots(1, len(designs), sharey=True, squeeze=False)[0]
    for ax, design in zip(axes, designs):
        part = auc[auc["design"] == design].set_index("cell")
        for i, cell in enumerate(cells):
            if cell in part.index:
                r = part.loc[cell]
                err = None if not np.isfinite(r["low"]) else [[100 * (r["mean"] - r["low"])],
                                                               [100 * (r["high"] - r["mean"])]]
                ax.errorbar(i, 100 * r["mean"], yerr=err, fmt="o", color=_COLORS[cell], capsize=4,
                            label="this run, 95% CI")
            elif _skipped(entries, design, cell):
                ax.text(i, 0.03, "not run", rotation=90, ha="center", va="bottom", color="grey",
                        transform=ax.get_xaxis_transform())
            if paper_table is not None and design in paper_table.index and \
                    cell in paper_table.columns and np.isfinite(paper_table.loc[design, cell]):
                # Beside the point, not on it, so an equal value does not hide this run's mean.
                ax.plot(i + 0.25, paper_table.loc[design, cell], "kx", markersize=8,
                        label="paper (Menegola et al. 2017)")
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
    return _save(fig, Path(path))


def plot_roc(predictions: pd.DataFrame, path: str | os.PathLike) -> Path:
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
        ``path``.
    """
    preds = _with_cells(predictions, "predictions table", ["y_true"])
    designs = _ordered(preds["design"], DESIGNS)
    grid = np.linspace(0, 1, 201)
    fig = Figure(figsize=(5.2 * len(designs), 5.6), layout="constrained")
    axes = fig.subplots(1, len(designs), squeeze=False)[0]
    most_runs = 0
    for ax, design in zip(axes, designs):
        part = preds[preds["design"] == design]
        positive = DESIGNS[design].positive or "melanoma"
        column = "score" if DESIGNS[design].positive else "score_melanoma"
        if column not in part.columns:
            raise PipelineError(f"predictions table lacks column {column!r} for design {design!r}.")
        for cell in _ordered(part["cell"], CELL_TITLES):
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
    return _save(fig, Path(path))


# ----------------------------------------------------------------------------- report.md
def _is_5x2(frame: pd.DataFrame) -> bool:
    return all(g["repeat"].nunique() == 5 and g["test_half"].nunique() == 2 and len(g) == 10
               for _, g in frame.groupby(["design", "cell"]))


def _table1_section(summary: pd.DataFrame, entries: list[dict],
                    paper_table: pd.DataFrame | None) -> list[str]:
    table = _table1(summary[summary["metric"] == "auc"], entries)
    n_runs = sorted(set(summary.loc[summary["metric"] == "auc", "n_runs"]))
    runs = f"{n_runs[0]}" if len(n_runs) == 1 else f"{n_runs[0]}–{n_runs[-1]}"
    head = ["Design", *(["", ] if paper_table is not None else []),
            *(f"{CELL_TITLES[c]} ({c})" for c in table.columns)]
    rows = []
    for design, values in table.iterrows():
        rows.append([DESIGNS[design].title, *(["this run"] if paper_table is not None else []),
                     *values])
        if paper_table is not None:
            rows.append(["", "paper", *(f"{paper_table.loc[design, c]:.1f}"
                                         if design in paper_table.index and c in paper_table.columns
                                         else "—" for c in table.columns)])
    return ["## Table 1: AUC (%) by transfer source", "",
            (f"Mean ± sd over {runs} runs per cell. " if n_runs[-1] > 1 else
             "One run per cell (no sd; confidence intervals in the metrics table). ")
            + "For the 3-class design the AUC is the paper's mean of the three one-vs-one AUCs "
            "(the reference code's one-vs-rest AUC is in the metrics table below). "
            + ("\"paper\": Menegola et al. (2017), Table 1 (Interactive Atlas, VGG-M), for "
               "reference. " if paper_table is not None else "")
            + ("\"not run\": see *Cells not run*." if entries else ""), "",
            markdown_table(head, rows), "",
            "![AUC per cell with 95% confidence intervals](auc.png)"]


def _difficulty_section(predictions: pd.DataFrame, manifest: pd.DataFrame | None, cell: str,
                        paper: pd.DataFrame | None) -> list[str]:
    lines = ["## Table 4: AUC (%) by diagnostic difficulty", ""]
    if manifest is None:
        return lines + ["Skipped: no manifest was given, so the test images' difficulty is "
                        "unknown."]
    table, notes = table_difficulty(predictions, manifest, cell)
    if table.empty:
        return lines + notes
    rows = []
    for design, part in table.groupby("design", sort=False):
        values = []
        for r in part.itertuples():
            partial = r.runs_used < r.runs_total
            values.append(_mean_sd(r.mean, r.sd)
                          + (f" ({r.runs_used}/{r.runs_total} runs)" if partial else ""))
        rows.append([DESIGNS[design].title, "this run", *values])
        if paper is not None and design in paper.index:
            rows.append(["", "paper", *(f"{v:.1f}" for v in paper.loc[design])])
    first = table["design"].iloc[0]
    shares = table[table["design"] == first].set_index("level")["share"]
    lines += [f"Cell `{cell}`: the AUC of each run on its test images of one difficulty level, "
              f"then mean ± sd over runs. Share of the {DESIGNS[first].title} test images: "
              + ", ".join(f"{lvl} {100 * shares[lvl]:.1f}%" for lvl in LEVELS)
              + (" (paper: 38.1, 36.3, 25.6%)." if paper is not None else "."), "",
              markdown_table(["Design", "", "Low", "Medium", "High", "All"], rows)]
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])


def write_report(out_dir: str | os.PathLike, metrics: pd.DataFrame, predictions: pd.DataFrame,
                 manifest: pd.DataFrame | None = None, not_run: Iterable[dict] = (),
                 header: dict | None = None, paper_table: pd.DataFrame | None = PAPER_TABLE1, *,
                 paper_difficulty: pd.DataFrame | None = PAPER_TABLE4,
                 difficulty_cell: str = "imagenet+ft", threshold: float = 0.0,
                 n_boot: int = 1000, seed: int = 0, extra_sections: Sequence[str] = ()) -> Path:
    """Write ``report.md``, ``auc.png``, ``roc.png`` and ``comparisons.csv`` into ``out_dir``.

    ``report.md`` is written last, so its presence means the report is complete.

    Args:
        out_dir: the experiment's output folder.
        metrics: ``metrics.csv`` table.
        predictions: ``predictions.csv`` table.
        manifest: manifest table, for Table 4 (None: Table 4 is skipped with a note).
        not_run: ``{source, finetune, reason, fix[, design]}`` for cells that could not run.
        header: experiment facts, printed in order at the top (name, dataset, network, ...);
            its ``experiment`` entry titles the report (default: the folder's name).
        paper_table: the paper's AUC (%) designs x cells shown beside Table 1 and in ``auc.png``,
            or None where the paper has no comparable numbers (another dataset or network).
        paper_difficulty: the paper's Table 4, or None.
        difficulty_cell: the cell of Table 4 (the paper: ``imagenet+ft``).
        threshold: decision threshold of ACC, SE, SP and F1 (0 = the SVM's decision).
        n_boot: bootstrap resamples for single-run intervals.
        seed: bootstrap seed.
        extra_sections: markdown lines inserted before the comparisons (e.g. Table 3).

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    not_run = list(not_run)
    entries = _not_run(not_run)
    names = [c for c in METRIC_TITLES if c in metrics.columns]
    summary = summarize(metrics, names, predictions, threshold=threshold, n_boot=n_boot, seed=seed)
    header = dict(header or {})
    title = header.get("experiment", out.name)
    lines = [f"# Report: {title}", "",
             markdown_table(["fact", "value"], [[k, v] for k, v in header.items()])
             if header else "No experiment facts were given.", ""]
    lines += _table1_section(summary, entries, paper_table) + [""]

    isic = _isic_table(summary)
    lines += ["## Metrics with 95% confidence intervals (ISIC 2016 style)", "",
              f"In %. ACC, SE, SP and F1 at decision threshold {threshold:g} on the SVM score "
              "(score > threshold = positive); for the 3-class design ACC is that of the argmax "
              "and SE, SP, F1 are melanoma against the rest; AP is averaged over one-vs-rest "
              "classes there, and AUC OvR is the reference code's macro one-vs-rest AUC. "
              "Intervals: Student's t over runs (optimistic: 5x2 runs share training images), or "
              "a stratified bootstrap of the test images for a single run (column CI).", "",
              markdown_table(["Design", "Cell", *isic.columns],
                             [[DESIGNS[d].title, c, *row] for (d, c), row in isic.iterrows()]), ""]

    plot_roc(predictions, out / "roc.png")
    lines += ["## ROC curves", "", "Mean ROC curve of each cell over its runs (true-positive "
              "rates averaged at fixed false-positive rates), band ±1 sd; the legend gives the "
              "mean AUC of the plotted curves (for the 3-class design: melanoma against the rest, "
              "not Table 1's one-vs-one mean).", "", "![ROC curves per design](roc.png)", ""]
    lines += _difficulty_section(predictions, manifest, difficulty_cell, paper_difficulty) + [""]

    lines += list(extra_sections)
    frame = _with_cells(metrics, "metrics table")
    lines += ["## Comparisons between cells", ""]
    if _is_5x2(frame):
        table = comparisons(metrics)
        lines += ["AUC of cell a minus cell b (in points), with Dietterich's 5x2cv paired t test "
                  "and Alpaydin's combined 5x2cv F test; * marks p < 0.05. Also in "
                  "`comparisons.csv`.", "", format_comparison_table(table)]
    else:
        table = pd.DataFrame(columns=["design", "a", "b", "mean_diff", "t_stat", "t_p", "f_stat",
                                      "f_p"])
        lines += ["Not computed: the 5x2cv tests need 5 repeats x 2 test halves per cell, and this "
                  "experiment's cells have other run counts (e.g. one official train/test split)."]
    write_csv(out / "comparisons.csv", table)

    lines += ["", "## Cells not run", ""]
    if entries:
        lines += [markdown_table(["Cell", "Designs", "Reason", "Fix"], [
            [f"{CELL_TITLES[e['cell']]} ({e['cell']})", "all" if e["designs"] is None
             else ", ".join(DESIGNS[d].title for d in sorted(e["designs"])), e["reason"],
             e["fix"]] for e in entries])]
    else:
        lines += ["None: every cell this experiment asked for ran."]
    plot_auc(summary, out / "auc.png", paper_table, not_run)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"


# --- the `report` and `compare` stages -----------------------------------------------------------

def read_results(config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``metrics.csv`` and ``predictions.csv`` of an experiment, ``finetune`` as bool."""
    from pipeline import artifacts

    frames = []
    for name in ("metrics.csv", "predictions.csv"):
        frame = pd.read_csv(artifacts.require(config, name), keep_default_na=False,
                            na_values=[""], dtype={"design": str, "source": str, "image": str,
                                                   "y_true": str})
        frame["finetune"] = frame["finetune"].astype(str).str.lower().eq("true")
        frames.append(frame)
    return frames[0], frames[1]


def experiment_header(config) -> dict:
    """The experiment facts printed at the top of the report."""
    import datetime

    import pipeline
    from pipeline import netstore
    from pipeline.networks import get_network

    arch = netstore.architecture(config)
    spec = get_network(arch["network"])
    width = spec.feature_width if arch["width"] == 1.0 else f"{spec.feature_width} x {arch['width']:g}"
    pre, ft = config.recipe("pretrain"), config.recipe("finetune")
    header = {
        "experiment": config.name, "description": config["experiment"]["description"],
        "config": str(config.path),
        "dataset": f"{config['data']['dataset']} ({config['data']['root']})",
        "network": f"{arch['network']}, input {arch['input_size']}x{arch['input_size']}, "
                   f"width x{arch['width']:g}, features `{spec.feature_layer}` ({width})",
        "cells": ", ".join(c.name for c in config.cells),
        "designs": ", ".join(config.designs),
        "folds": f"{config['folds']['scheme']}" + (f", {config['folds']['repeats']} repeats"
                                                     if config["folds"]["scheme"] == "5x2" else ""),
        "training": f"pretrain {pre.epochs} epochs, fine-tune {ft.epochs} epochs, batch "
                    f"{ft.batch_size}, SGD lr {ft.learning_rate:g} Nesterov momentum {ft.momentum:g},"
                    f" L2 {ft.l2:g}, augmentation {ft.augment}",
        "svm": f"C in {list(config['svm']['C_grid'])}, selection {config['svm']['selection']}",
        "seed": config.seed,
    }
    if config["experiment"]["scaled_down"]:
        header["scaled down (declared)"] = config["experiment"]["scaled_down"]
    header["written"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    header["pipeline version"] = pipeline.__version__
    return header


def architectures_section(config, metrics: pd.DataFrame) -> list[str]:
    """Table 3 lines: this experiment's network and those of ``report.architectures``."""
    from pipeline.config import load_config
    from pipeline.networks import get_network

    if not config["report"]["architectures"]:
        return []
    by_network = {get_network(config["network"]["name"]).name: metrics}
    for other_path in config["report"]["architectures"]:
        other = load_config(other_path)
        by_network[get_network(other["network"]["name"]).name] = read_results(other)[0]
    table = table_architectures(by_network)
    rows = [[name, *[v if isinstance(v, str) else f"{v:.1f}" for v in row]]
            for name, row in table.iterrows()]
    return ["## Table 3: AUC (%) by architecture (ImageNet + fine-tuning)", "",
            markdown_table(["Network", *map(str, table.columns)], rows), ""]


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="experiment file, e.g. experiments/demo.toml")


def run(args) -> int:
    from pipeline import artifacts
    from pipeline.config import load_config

    config = load_config(args.config)
    metrics, predictions = read_results(config)
    faithful = (config["data"]["dataset"] == "derm7pt" and config["network"]["name"] == "vgg-m"
                and not config["experiment"]["scaled_down"])
    path = write_report(
        config.output_dir, metrics, predictions, manifest=artifacts.manifest(config),
        not_run=artifacts.not_run(config), header=experiment_header(config),
        paper_table=PAPER_TABLE1 if faithful else None,
        paper_difficulty=PAPER_TABLE4 if faithful else None,
        difficulty_cell=config["report"]["difficulty_cell"], threshold=config["report"]["threshold"],
        seed=config.seed, extra_sections=architectures_section(config, metrics))
    print(f"report: {path}")
    return 0


def compare_add_arguments(parser) -> None:
    add_arguments(parser)
    parser.add_argument("--metric", default="auc", help="metric compared (default auc)")


def compare_run(args) -> int:
    from pipeline.config import load_config

    config = load_config(args.config)
    metrics, _ = read_results(config)
    if args.metric not in metrics.columns:
        raise PipelineError(f"--metric {args.metric!r} is not a column of metrics.csv; choose one "
                            f"of {', '.join(METRIC_TITLES)}.")
    print(format_comparison_table(comparisons(metrics, metric=args.metric)))
    return 0
