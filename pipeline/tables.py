"""Report tables: the paper's tables and the summaries behind them, from an experiment's results.

Inputs are the tables the ``svm`` stage writes, as DataFrames: ``metrics.csv`` (one row per run:
design x cell x repeat x test half) and ``predictions.csv`` (one row per test image per run:
``score`` for two classes, ``score_<class>`` for three), plus, for Table 4, the manifest's
``difficulty``. Holds:

- the result tables' vocabulary (``SOURCES``, ``CELL_TITLES``, ``METRIC_TITLES``, ``LEVELS``)
  and the paper's numbers (``PAPER_TABLE1`` .. ``PAPER_TABLE4``);
- the checks that turn a result table into one with a ``cell`` column, and the ``not_run`` entries;
- ``summarize`` (mean, sd and confidence interval per design x cell x metric) and the tables built
  on it: ``table1``, ``table1_numeric``, ``table_architectures`` (Table 3), ``table_difficulty``
  (Table 4), ``table_isic_metrics``, ``comparisons`` (5x2cv tests), and ``markdown_table``.

A cell is ``<source>`` (fc7 features of the source network, no fine-tuning) or ``<source>+ft``.
Nothing here writes files; ``pipeline.report`` writes them, ``pipeline.figures`` draws the plots.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.cache import hash_bytes
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
