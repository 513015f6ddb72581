"""Statistics over runs: confidence intervals and the 5x2cv tests between cells.

Student's t intervals over runs, a stratified bootstrap for a single split, and the 5x2cv paired t
test (Dietterich 1998) and combined F test (Alpaydin 1999) between cells. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.errors import PipelineError
from pipeline.protocol import cell_name, parse_bool


def mean_ci(values: Sequence[float], confidence: float = 0.95,
            bounds: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
    """Mean, standard deviation and Student's t confidence interval over runs.

    The 10 runs of 5x2 cross-validation share training data (each image is in five training
    halves), so they are not independent and this interval is optimistic (too narrow); it is the
    usual summary (Kim & Rocheteau 2020) and is reported as such.

    Args:
        values: array of shape (n_runs,), one metric value per run.
        confidence: coverage of the interval, in (0, 1).
        bounds: the metric's range, e.g. ``(0, 1)`` for AUC; the interval is clipped to it (the t
            interval ignores that a proportion cannot exceed 1).

    Returns:
        ``(mean, sd, low, high)``; ``sd`` uses n - 1. With one run ``sd``, ``low`` and ``high``
        are NaN (use ``bootstrap_ci`` for a single split); identical runs give ``low == high``.
    """
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise PipelineError(f"mean_ci needs at least one finite value; got {values.tolist()[:10]}.")
    if not 0 < confidence < 1:
        raise PipelineError(f"confidence must be in (0, 1); got {confidence}.")
    mean = float(values.mean())
    if values.size == 1:
        return mean, float("nan"), float("nan"), float("nan")
    sd = float(values.std(ddof=1))
    if sd == 0:
        return mean, 0.0, mean, mean
    low, high = stats.t.interval(confidence, values.size - 1, loc=mean, scale=stats.sem(values))
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, sd, float(low), float(high)


def bootstrap_ci(y: Sequence, score: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
                 n_boot: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap interval of a metric on one test set (e.g. ISIC 2016's official split).

    Resampling is stratified by class (each class resampled with replacement to its own size), so
    every resample has every class and AUC stays defined; the class prevalence is held fixed.

    Args:
        y: true classes, array of shape (n_samples,).
        score: array of shape (n_samples,) or (n_samples, n_classes).
        metric: ``metric(y, score) -> float``, e.g. ``sklearn.metrics.roc_auc_score``.
        n_boot: number of resamples.
        seed: seed of the resampling.
        confidence: coverage of the interval.

    Returns:
        ``(estimate on all samples, low, high)``.
    """
    y = np.asarray(y)
    score = np.asarray(score)
    if len(score) != len(y):
        raise PipelineError(f"y has {len(y)} samples but score has {len(score)}.")
    if n_boot < 1 or not 0 < confidence < 1:
        raise PipelineError(f"n_boot must be >= 1 and confidence in (0, 1); got {n_boot}, "
                            f"{confidence}.")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    boot = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        boot[b] = metric(y[idx], score[idx])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return float(metric(y, score)), float(low), float(high)


def _5x2_differences(scores_a, scores_b) -> tuple[np.ndarray, np.ndarray]:
    """p_i^(j) = a - b, array of shape (5, 2), and s_i^2, array of shape (5,)."""
    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.shape != (5, 2) or b.shape != (5, 2):
        raise PipelineError(f"5x2cv tests need arrays of shape (5, 2) (repeat x fold) for both "
                            f"classifiers; got {a.shape} and {b.shape}.")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise PipelineError("5x2cv tests need finite metric values; got NaN or infinity.")
    p = a - b
    s2 = ((p - p.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return p, s2


def paired_5x2cv_t_test(scores_a, scores_b) -> tuple[float, float]:
    """Dietterich's (1998) 5x2cv paired t test.

    With p_i^(j) = a - b on fold j of repeat i, p̄_i their mean over the two folds and
    s_i^2 = (p_i^(1) - p̄_i)^2 + (p_i^(2) - p̄_i)^2: t = p_1^(1) / sqrt(mean_i s_i^2), which follows
    Student's t with 5 degrees of freedom under the null; p is two-sided.

    When every s_i^2 is 0 the statistic is undefined; we return ``(nan, 1.0)`` if p_1^(1) is 0 too
    (no difference at all, e.g. identical classifiers) and ``(±inf, 0.0)`` otherwise (a difference
    without any fold-to-fold variation).

    Fold 1 of repeat i is the run trained on the repeat's first half and tested on its second
    (Dietterich's convention; ``compare_cells`` orders the columns so).

    Args:
        scores_a: array of shape (5, 2), a metric of classifier A per (repeat, fold).
        scores_b: array of shape (5, 2), the same metric of classifier B on the same folds.

    Returns:
        ``(t, p)``.
    """
    p, s2 = _5x2_differences(scores_a, scores_b)
    if s2.sum() == 0:
        return (float("nan"), 1.0) if p[0, 0] == 0 else (float(np.sign(p[0, 0]) * np.inf), 0.0)
    t = p[0, 0] / np.sqrt(s2.mean())
    return float(t), float(2 * stats.t.sf(abs(t), df=5))


def combined_5x2cv_f_test(scores_a, scores_b) -> tuple[float, float]:
    """Alpaydin's (1999) combined 5x2cv F test.

    f = sum_i sum_j (p_i^(j))^2 / (2 sum_i s_i^2), F-distributed with (10, 5) degrees of freedom
    under the null (notation of ``paired_5x2cv_t_test``); p = ``scipy.stats.f.sf(f, 10, 5)``.
    When every s_i^2 is 0: ``(nan, 1.0)`` if every difference is 0, ``(inf, 0.0)`` otherwise.

    Args:
        scores_a: array of shape (5, 2).
        scores_b: array of shape (5, 2).

    Returns:
        ``(f, p)``.
    """
    p, s2 = _5x2_differences(scores_a, scores_b)
    num = float((p ** 2).sum())
    if s2.sum() == 0:
        return (float("nan"), 1.0) if num == 0 else (float("inf"), 0.0)
    f = num / (2 * s2.sum())
    return float(f), float(stats.f.sf(f, 10, 5))


def compare_cells(metrics: pd.DataFrame, design: str, metric: str = "auc") -> pd.DataFrame:
    """Compare every pair of cells of one design with the 5x2cv t and F tests.

    Args:
        metrics: one row per run, with columns ``source``, ``finetune`` (bool), ``design``,
            ``repeat`` (5 values), ``test_half`` (2 values) and the metric.
        design: the design whose cells are compared.
        metric: the metric column to compare.

    Returns:
        One row per pair of cells (cells in sorted order, ``a`` before ``b``), columns ``design,
        a, b, mean_diff`` (mean of a - b over the 10 runs) ``, t_stat, t_p, f_stat, f_p``.
    """
    needed = ["source", "finetune", "design", "repeat", "test_half", metric]
    missing = [c for c in needed if c not in metrics.columns]
    if missing:
        raise PipelineError(f"metrics table lacks columns {missing}; it needs {needed}.")
    rows = metrics.loc[metrics["design"].astype(str) == design].copy()
    if rows.empty:
        raise PipelineError(f"metrics table has no rows for design {design!r}; designs present: "
                            f"{sorted(metrics['design'].astype(str).unique())}.")
    try:
        flags = rows["finetune"].map(parse_bool)
    except ValueError as exc:
        raise PipelineError(f"column 'finetune' of the metrics table: {exc}.") from None
    rows["cell"] = [cell_name(s, f) for s, f in zip(rows["source"], flags)]
    repeats = sorted(rows["repeat"].unique().tolist())
    # Dietterich's fold 1 of a repeat trains on the first half and tests on the second (mlxtend's
    # paired_ttest_5x2cv does the same), so column 0 is the run tested on half 2.
    halves = sorted(rows["test_half"].unique().tolist(), reverse=True)
    if len(repeats) != 5 or len(halves) != 2:
        raise PipelineError(f"design {design!r}: 5x2cv tests need 5 repeats x 2 test halves; got "
                            f"repeats {repeats} and test halves {halves}.")
    tables = {}
    for cell, group in rows.groupby("cell", sort=True):
        dup = group.loc[group.duplicated(["repeat", "test_half"]), ["repeat", "test_half"]]
        if len(dup):
            raise PipelineError(f"design {design!r}, cell {cell!r}: several rows for (repeat, "
                                f"test_half) {dup.values[:3].tolist()}; one row per run.")
        table = group.pivot(index="repeat", columns="test_half", values=metric)
        table = table.reindex(index=repeats, columns=halves)
        if table.isna().any().any():
            gaps = [(r, h) for r in repeats for h in halves if pd.isna(table.loc[r, h])]
            raise PipelineError(f"design {design!r}, cell {cell!r}: no {metric!r} for (repeat, "
                                f"test_half) {gaps[:5]}; every cell needs all 10 runs.")
        tables[cell] = table.to_numpy(dtype=float)
    out = []
    for a, b in itertools.combinations(sorted(tables), 2):
        t, tp = paired_5x2cv_t_test(tables[a], tables[b])
        f, fp = combined_5x2cv_f_test(tables[a], tables[b])
        out.append({"design": design, "a": a, "b": b,
                    "mean_diff": float((tables[a] - tables[b]).mean()),
                    "t_stat": t, "t_p": tp, "f_stat": f, "f_p": fp})
    return pd.DataFrame(out, columns=["design", "a", "b", "mean_diff", "t_stat", "t_p", "f_stat",
                                      "f_p"])


def one_tailed_t_test(better: Sequence[float], worse: Sequence[float]) -> tuple[float, float, float]:
    """Welch's two-sample t test, one-tailed: is the mean of ``better`` above that of ``worse``?

    Kim & Rocheteau (2020) compare each model with and without transfer over independent runs
    (fresh models, different seeds), so the samples are independent and their variances need not
    be equal: t = (m1 − m2) / sqrt(s1²/n1 + s2²/n2), Welch–Satterthwaite degrees of freedom
    df = (s1²/n1 + s2²/n2)² / ((s1²/n1)²/(n1 − 1) + (s2²/n2)²/(n2 − 1)), p = P(T_df ≥ t).

    Args:
        better: array of shape (n1,), the metric of each run of the model expected better.
        worse: array of shape (n2,), the other model's.

    Returns:
        ``(t, df, p)``; NaN when either sample has fewer than 2 runs or both have no variance.
    """
    a, b = np.asarray(better, float).ravel(), np.asarray(worse, float).ravel()
    if a.size < 2 or b.size < 2:
        return float("nan"), float("nan"), float("nan")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return float("nan"), float("nan"), float("nan")
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return float(t), float(df), float(stats.t.sf(t, df))


def above_reference(values: Sequence[float], reference: float, half_width: float,
                    confidence: float = 0.95) -> tuple[float, float]:
    """One-tailed test that the mean of ``values`` exceeds a published reference ``mean ± CI``.

    The clinicians' AUROCs that Kim & Rocheteau compare with (general practitioners 0.83 ± 0.03,
    dermatologists 0.91 ± 0.02) come from a meta-analysis as a mean and a 95% confidence half
    width, not as samples; so the test is a z test on the difference of two means with both
    standard errors, the reference's being ``half_width / z_{(1+confidence)/2}``.

    Args:
        values: array of shape (n_runs,), at least 2.
        reference: the reference mean.
        half_width: the reference's confidence half width.
        confidence: the coverage the half width was published at.

    Returns:
        ``(z, p)`` with p = P(Z ≥ z); NaN for fewer than 2 runs.
    """
    values = np.asarray(values, float).ravel()
    if values.size < 2:
        return float("nan"), float("nan")
    se_ref = half_width / stats.norm.ppf((1 + confidence) / 2)
    se = np.sqrt(values.var(ddof=1) / values.size + se_ref ** 2)
    z = (values.mean() - reference) / se
    return float(z), float(stats.norm.sf(z))


def stars(p: float) -> str:
    """Kim & Rocheteau's marks: ``**`` for p < 0.001, ``*`` for p < 0.05, else empty."""
    return "**" if p < 0.001 else "*" if p < 0.05 else ""
