"""Evaluation: metrics of one run and statistics over the 5x2 runs.

Metrics of one run (scores on one test half): AUC, average precision, accuracy, sensitivity,
specificity, F1; for the 3-class design also the paper's one-vs-one mean AUC and the reference
code's macro one-vs-rest AUC. Statistics: Student's t intervals over runs, a stratified bootstrap
for a single split, and the 5x2cv t test (Dietterich 1998) and F test (Alpaydin 1999) between cells.

Conventions: ``y`` holds labels from ``classes`` or indices 0..k-1 into it (the ``y`` column of
``pipeline.designs.apply_design``); score column k belongs to ``classes[k]``; binary scores are one
column, higher meaning ``classes[1]``, the positive class. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix, f1_score,
                             roc_auc_score)

from pipeline.errors import PipelineError

__all__ = ["class_indices", "fast_auc", "auc_ovo_mean", "auc_ovr_macro", "binary_metrics",
           "cell_metrics", "mean_ci", "bootstrap_ci", "paired_5x2cv_t_test",
           "combined_5x2cv_f_test", "compare_cells", "cell_name"]


def class_indices(y: Sequence, classes: Sequence) -> np.ndarray:
    """Class indices of ``y``.

    Args:
        y: array of shape (n_samples,) of labels from ``classes`` or, when the labels are not
            numbers, of indices 0..k-1 into it.
        classes: the class labels in order.

    Returns:
        Integer array of shape (n_samples,).
    """
    y = np.asarray(y)
    classes = list(classes)
    lookup = {c: i for i, c in enumerate(classes)}
    if all(v in lookup for v in y.tolist()):
        return np.array([lookup[v] for v in y.tolist()], dtype=int)
    # Indices only when the labels are not numbers themselves, which would make y ambiguous.
    if (np.asarray(classes).dtype.kind not in "iufb" and np.issubdtype(y.dtype, np.integer)
            and y.size and y.min() >= 0 and y.max() < len(classes)):
        return y.astype(int)
    bad = sorted({str(v) for v in y.tolist() if v not in lookup})[:5]
    raise PipelineError(f"labels {bad} are not among the classes {classes} (nor indices 0.."
                        f"{len(classes) - 1} into them); pass the classes the scores belong to.")


def _scores_matrix(scores, n: int, k: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (n, k):
        raise PipelineError(f"scores must be an array of shape (n_samples, n_classes) = "
                            f"({n}, {k}); got shape {scores.shape}.")
    if not np.all(np.isfinite(scores)):
        raise PipelineError(f"scores contain NaN or infinite values in rows "
                            f"{np.flatnonzero(~np.isfinite(scores).all(axis=1))[:5].tolist()}.")
    return scores


def fast_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUC by the Mann-Whitney identity, (rank sum of positives - n1(n1+1)/2) / (n1 n0).

    Equals ``roc_auc_score(positive, score)`` (mid-ranks count ties one half) at a tenth of its
    cost, which matters when choosing C (hundreds of AUCs per training half). No validation.

    Args:
        positive: boolean array of shape (n,) with both values present.
        score: finite array of shape (n,).

    Returns:
        The AUC in [0, 1].
    """
    positive = np.asarray(positive, dtype=bool)
    n1 = int(positive.sum())
    n0 = positive.size - n1
    return float((stats.rankdata(score)[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_ovo_mean(y: Sequence, scores: np.ndarray, classes: Sequence) -> float:
    """The paper's 3-class metric: mean of the one-vs-one AUCs (Hand & Till's M measure).

    For each unordered pair of classes (i, j), keep the samples of classes i and j only;
    A(i|j) is the AUC of score column i for "class i" against "class j" (the probability that a
    random sample of class i gets a higher column-i score than a random sample of class j, ties
    counting one half), and A(j|i) likewise with column j. The pair's AUC is
    (A(i|j) + A(j|i)) / 2 and the result is the mean over the k(k-1)/2 pairs. This is Hand & Till
    (2001), the definition of scikit-learn's ``roc_auc_score(multi_class="ovo", average="macro")``
    (used by the reference code's grid search), but it accepts any scores, not only probabilities;
    we chose it over the AUC of the difference s_i - s_j because it is the published, library-backed
    definition. For two classes it equals the ordinary AUC when the columns are (-s, s).

    Args:
        y: true classes, array of shape (n_samples,) (labels or indices into ``classes``).
        scores: array of shape (n_samples, n_classes), column k for ``classes[k]``.
        classes: class names in column order.

    Returns:
        The mean one-vs-one AUC in [0, 1].
    """
    idx = class_indices(y, classes)
    scores = _scores_matrix(scores, len(idx), len(classes))
    missing = [c for k, c in enumerate(classes) if not np.any(idx == k)]
    if missing:
        raise PipelineError(f"one-vs-one AUC needs samples of every class; {missing} have none "
                            f"among {len(idx)} samples.")
    aucs = []
    for i, j in itertools.combinations(range(len(classes)), 2):
        mask = (idx == i) | (idx == j)
        a_ij = fast_auc(idx[mask] == i, scores[mask, i])
        a_ji = fast_auc(idx[mask] == j, scores[mask, j])
        aucs.append((a_ij + a_ji) / 2)
    return float(np.mean(aucs))


def auc_ovr_macro(y: Sequence, scores: np.ndarray, classes: Sequence | None = None) -> float:
    """The reference code's 3-class metric: macro mean of the one-vs-rest AUCs.

    AUC of column k for "class k" against all other samples, averaged over classes with equal
    weight. Computed per class as the AUC of ``(y == k, scores[:, k])`` because scikit-learn's
    ``roc_auc_score(multi_class="ovr")`` insists on probabilities; SVM decision values are not.

    Args:
        y: true classes, array of shape (n_samples,).
        scores: array of shape (n_samples, n_classes).
        classes: class names in column order; default ``range(n_classes)``.

    Returns:
        The macro one-vs-rest AUC in [0, 1].
    """
    if classes is None:
        classes = list(range(np.shape(scores)[1])) if np.ndim(scores) == 2 else []
    idx = class_indices(y, classes)
    scores = _scores_matrix(scores, len(idx), len(classes))
    for k, name in enumerate(classes):
        if not np.any(idx == k) or np.all(idx == k):
            raise PipelineError(f"one-vs-rest AUC of class {name!r} is undefined: it has "
                                f"{int(np.sum(idx == k))} of {len(idx)} samples.")
    return float(np.mean([fast_auc(idx == k, scores[:, k]) for k in range(len(classes))]))


def binary_metrics(y_true: Sequence, score: np.ndarray, threshold: float = 0.0) -> dict:
    """Ranking and operating-point metrics of a two-class classifier.

    Args:
        y_true: array of shape (n_samples,) of 0/1 (or booleans); 1 is the positive class.
        score: array of shape (n_samples,); higher means positive (SVM decision values).
        threshold: a sample is called positive when ``score > threshold`` (0 for an SVM, as in
            its ``predict``).

    Returns:
        Dict with ``auc``, ``ap`` (average precision), ``accuracy``, ``sensitivity`` (recall of the
        positives), ``specificity`` (recall of the negatives) and ``f1`` (of the positive class;
        0 when nothing is called positive), all floats in [0, 1].
    """
    y = np.asarray(y_true)
    score = np.asarray(score, dtype=float)
    if y.ndim != 1 or score.shape != y.shape:
        raise PipelineError(f"y_true and score must be arrays of the same shape (n_samples,); got "
                            f"{y.shape} and {score.shape}.")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise PipelineError(f"y_true must hold 0/1 (1 = positive); got values "
                            f"{np.unique(y)[:5].tolist()}.")
    y = y.astype(int)
    if len(np.unique(y)) < 2:
        raise PipelineError(f"metrics need both classes; all {len(y)} samples are class {y[0]}.")
    if not np.all(np.isfinite(score)):
        raise PipelineError(f"scores contain NaN or infinite values in rows "
                            f"{np.flatnonzero(~np.isfinite(score))[:5].tolist()}.")
    pred = (score > threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {"auc": float(roc_auc_score(y, score)),
            "ap": float(average_precision_score(y, score)),
            "accuracy": float(accuracy_score(y, pred)),
            "sensitivity": float(tp / (tp + fn)),
            "specificity": float(tn / (tn + fp)),
            "f1": float(f1_score(y, pred, zero_division=0.0))}


def cell_metrics(y_true: Sequence, scores: np.ndarray, classes: Sequence,
                 threshold: float = 0.0) -> dict:
    """Metrics of one run of a cell, for any design.

    Two classes: exactly ``binary_metrics`` (positive class ``classes[1]``). Three classes:
    ``auc`` is the paper's one-vs-one mean (``auc_ovo_mean``), ``auc_ovr`` the reference code's
    macro one-vs-rest AUC, ``ap`` the macro one-vs-rest average precision, ``accuracy`` that of the
    argmax over the score columns, and ``sensitivity`` / ``specificity`` / ``f1`` those of
    melanoma against the rest, a sample being called melanoma when its argmax is melanoma.

    Args:
        y_true: array of shape (n_samples,), labels or indices into ``classes``.
        scores: array of shape (n_samples,) for two classes, (n_samples, n_classes) otherwise.
        classes: class names in column order (a design's ``classes``); for more than two classes
            one must be ``"melanoma"``.
        threshold: decision threshold for two classes. Multiclass decisions are the argmax, so it
            must stay 0 there.

    Returns:
        Dict of metric name -> float.
    """
    classes = list(classes)
    idx = class_indices(y_true, classes)
    if len(classes) == 2:
        return binary_metrics(idx, scores, threshold)
    if threshold != 0.0:
        raise PipelineError(f"threshold={threshold} has no effect with {len(classes)} classes "
                            "(decisions are the argmax); leave it at 0.")
    if "melanoma" not in classes:
        raise PipelineError(f"multiclass metrics report melanoma against the rest; classes "
                            f"{classes} have no 'melanoma'.")
    scores = _scores_matrix(scores, len(idx), len(classes))
    pred = scores.argmax(axis=1)
    mel = classes.index("melanoma")
    tn, fp, fn, tp = confusion_matrix(idx == mel, pred == mel, labels=[False, True]).ravel()
    return {"auc": auc_ovo_mean(idx, scores, classes),
            "auc_ovr": auc_ovr_macro(idx, scores, classes),
            "ap": float(np.mean([average_precision_score(idx == k, scores[:, k])
                                 for k in range(len(classes))])),
            "accuracy": float(np.mean(pred == idx)),
            "sensitivity": float(tp / (tp + fn)),
            "specificity": float(tn / (tn + fp)),
            "f1": float(f1_score(idx == mel, pred == mel, zero_division=0.0))}


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


def cell_name(source: str, finetune: bool) -> str:
    """A cell's name: the transfer source, with ``+ft`` when fine-tuned (``imagenet+ft``)."""
    return f"{source}+ft" if finetune else str(source)


def _as_bool(values: pd.Series) -> pd.Series:
    if values.dtype == bool:
        return values
    text = values.astype(str).str.strip().str.lower()
    known = {"true": True, "1": True, "false": False, "0": False}
    bad = sorted(set(text) - set(known))
    if bad:
        raise PipelineError(f"column 'finetune' must be boolean (True/False); got {bad[:5]}.")
    return text.map(known).astype(bool)


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
    rows["cell"] = [cell_name(s, f) for s, f in zip(rows["source"], _as_bool(rows["finetune"]))]
    repeats = sorted(rows["repeat"].unique().tolist())
    halves = sorted(rows["test_half"].unique().tolist())
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
