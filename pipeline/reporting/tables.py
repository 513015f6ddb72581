"""Summaries of an experiment's runs and the paper's tables built on them.

Inputs are the tables the ``svm`` stage writes, as DataFrames: ``metrics.csv`` (one row per run:
design x cell x repeat x test half) and ``predictions.csv`` (one row per test image per run:
``score`` for two classes, ``score_<class>`` for three), plus, for Table 4, the manifest's
``difficulty``. ``summarize`` gives mean, sd and confidence interval per design x cell x metric;
the tables built on it are ``table1``, ``table1_numeric``, ``table_architectures`` (Table 3),
``table_difficulty`` (Table 4), ``table_isic_metrics`` and ``comparisons`` (5x2cv tests).

Nothing here writes files: ``pipeline.reporting.report`` writes them, ``pipeline.reporting.figures``
draws the plots.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.cache.files import hash_bytes
from pipeline.data.designs import DESIGNS, get_design
from pipeline.data.vocabulary import DIFFICULTY_LEVELS
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import cell_metrics
from pipeline.evaluation.statistics import bootstrap_ci, compare_cells, mean_ci
from pipeline.protocol import CELL_TITLES
from pipeline.reporting.results import (
    RUN_KEY,
    not_run_entries,
    ordered,
    run_scores,
    skipped_entry,
    with_cells,
)

METRIC_TITLES = {"auc": "AUC", "auc_ovr": "AUC OvR", "ap": "AP", "accuracy": "ACC",
                 "sensitivity": "SE", "specificity": "SP", "f1": "F1"}


def percent(value: float) -> str:
    """A fraction as a percentage with one decimal ("—" for NaN)."""
    return "—" if not np.isfinite(value) else f"{100 * value:.1f}"


def mean_sd(mean: float, sd: float) -> str:
    """"mean ± sd" in % (the mean alone without an sd)."""
    return percent(mean) if not np.isfinite(sd) else f"{percent(mean)} ± {percent(sd)}"


def mean_ci_text(mean: float, low: float, high: float) -> str:
    """"mean [low, high]" in % (the mean alone without an interval)."""
    return percent(mean) if not np.isfinite(low) else f"{percent(mean)} [{percent(low)}, {percent(high)}]"


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
    scores = run_scores(run, design, "predictions table")
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
    frame = with_cells(metrics, "metrics table", columns)
    if frame.duplicated(RUN_KEY).any():
        dup = frame.loc[frame.duplicated(RUN_KEY), RUN_KEY].iloc[0].tolist()
        raise PipelineError(f"metrics table has several rows for run {dup} (design, cell, repeat, "
                            "test_half); each run must appear once.")
    preds = None if predictions is None else with_cells(predictions, "predictions table",
                                                         ["y_true"])
    rows, caches = [], {}
    for design in ordered(frame["design"], DESIGNS):
        for cell in ordered(frame.loc[frame["design"] == design, "cell"], CELL_TITLES):
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


def table1_from_summary(summary: pd.DataFrame, entries: list[dict]) -> pd.DataFrame:
    """Table 1 (see ``table1``) from ``summarize`` rows of one metric and ``not_run_entries``."""
    summary = summary.set_index(["design", "cell"])
    designs = ordered(summary.index.get_level_values(0), DESIGNS)
    cells = ordered([*summary.index.get_level_values(1), *(e["cell"] for e in entries)],
                     CELL_TITLES)
    table = pd.DataFrame("no results", index=pd.Index(designs, name="design"), columns=cells,
                         dtype=object)
    for design in designs:
        for cell in cells:
            if skipped_entry(entries, design, cell):
                if (design, cell) in summary.index:
                    raise PipelineError(f"cell {cell!r}, design {design!r} has results in the "
                                        "metrics table and is also listed as not run; remove one.")
                table.loc[design, cell] = "not run"
            elif (design, cell) in summary.index:
                row = summary.loc[(design, cell)]
                table.loc[design, cell] = mean_sd(row["mean"], row["sd"])
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
    return table1_from_summary(summarize(metrics, [metric]), not_run_entries(not_run))


def table1_numeric(metrics: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Table 1's means as numbers (AUC %), designs x cells in table order, NaN where absent."""
    summary = summarize(metrics, [metric])
    table = summary.pivot(index="design", columns="cell", values="mean") * 100
    return table.reindex(index=ordered(table.index, DESIGNS),
                         columns=ordered(table.columns, CELL_TITLES))


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
        rows[network] = {d: mean_sd(summary.loc[d, "mean"], summary.loc[d, "sd"])
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
    preds = with_cells(predictions, "predictions table", ["image", "y_true"])
    two_class = preds["design"].map(lambda d: DESIGNS[d].positive is not None)
    preds = preds[(preds["cell"] == cell) & two_class]
    if "difficulty" not in manifest.columns or \
            not manifest["difficulty"].fillna("").astype(str).isin(DIFFICULTY_LEVELS).any():
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
    per_run = run_difficulty_aucs(preds)
    rows, notes = [], []
    for design in ordered(preds["design"], DESIGNS):
        part = preds[preds["design"] == design]
        images = part.drop_duplicates("image")
        runs = per_run[per_run["design"] == design]
        n_runs = runs[["repeat", "test_half"]].drop_duplicates().shape[0]
        for name in (*DIFFICULTY_LEVELS, "all"):
            aucs = runs.loc[runs["level"] == name, "auc"].dropna().tolist()
            share = 1.0 if name == "all" else float((images["level"] == name).mean())
            mean, sd = (mean_ci(aucs)[:2] if aucs else (np.nan, np.nan))
            rows.append({"design": design, "level": name, "mean": mean, "sd": sd,
                         "runs_used": len(aucs), "runs_total": n_runs, "share": share})
            if len(aucs) < n_runs:
                notes.append(f"{DESIGNS[design].title}, {name} difficulty: {n_runs - len(aucs)} "
                             f"of {n_runs} runs skipped (their test images of this level hold "
                             "a single class or none); AUC over the other "
                             f"{len(aucs)} runs.")
        unrated = int((images["level"] == "").sum())
        if unrated:
            notes.append(f"{DESIGNS[design].title}: {unrated} of {len(images)} test images have no "
                         "difficulty; they count only in All.")
    return pd.DataFrame(rows, columns=columns), notes


def run_difficulty_aucs(predictions: pd.DataFrame) -> pd.DataFrame:
    """The AUC of every run on its test images of each difficulty level, and on all of them.

    Args:
        predictions: ``predictions.csv`` rows of one cell and 2-class designs, with a ``level``
            column (the image's difficulty, ``""`` when unknown).

    Returns:
        One row per design x repeat x test half x level (``low, medium, high, all``): ``design,
        repeat, test_half, level, auc`` (NaN where the level's test images hold a single class).
    """
    rows = []
    for (design, repeat, half), run in predictions.groupby(["design", "repeat", "test_half"],
                                                             sort=True):
        positive = DESIGNS[design].positive
        for name in (*DIFFICULTY_LEVELS, "all"):
            subset = run if name == "all" else run[run["level"] == name]
            y = (subset["y_true"].astype(str) == positive).to_numpy()
            auc = (roc_auc_score(y, subset["score"].to_numpy(dtype=float))
                   if 0 < y.sum() < len(y) else np.nan)
            rows.append({"design": design, "repeat": repeat, "test_half": half, "level": name,
                         "auc": auc})
    return pd.DataFrame(rows, columns=["design", "repeat", "test_half", "level", "auc"])


def difficulty_predictions(predictions: pd.DataFrame, manifest: pd.DataFrame,
                           cell: str) -> pd.DataFrame:
    """``predictions.csv`` rows of ``cell`` in 2-class designs with each image's ``level``."""
    preds = with_cells(predictions, "predictions table", ["image", "y_true"])
    two_class = preds["design"].map(lambda d: DESIGNS[d].positive is not None)
    preds = preds[(preds["cell"] == cell) & two_class]
    level = manifest.set_index(manifest["image"].astype(str))["difficulty"].fillna("").astype(str)
    return preds.assign(level=preds["image"].astype(str).map(level).fillna(""))


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
    return isic_table_from_summary(summarize(metrics, names, predictions, confidence, threshold, n_boot, seed))


def isic_table_from_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The metrics table (see ``table_isic_metrics``) from ``summarize`` rows."""
    rows = {}
    for (design, cell), part in summary.groupby(["design", "cell"], sort=False):
        row = {}
        for r in part.itertuples():
            two_class_ovr = r.metric == "auc_ovr" and len(DESIGNS[design].classes) == 2
            row[METRIC_TITLES[r.metric]] = "—" if two_class_ovr else mean_ci_text(r.mean, r.low, r.high)
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
    designs = ordered(with_cells(metrics, "metrics table", [metric])["design"], DESIGNS)
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

