"""Metrics of one run (scores on one test half).

AUC, average precision, accuracy, sensitivity, specificity, F1; for the 3-class design also the
paper's one-vs-one mean AUC and the reference code's macro one-vs-rest AUC. Statistics over runs
are in ``pipeline.evaluation.statistics``.

Conventions: ``y`` holds labels from ``classes`` or indices 0..k-1 into it (the ``y`` column of
``pipeline.data.designs.apply_design``); score column k belongs to ``classes[k]``; binary scores are one
column, higher meaning ``classes[1]``, the positive class. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from pipeline.errors import PipelineError


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

