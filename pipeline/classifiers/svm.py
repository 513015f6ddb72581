"""The linear SVM of the paper on L2-normalised fc7 features, C chosen on a validation split.

The paper's classifier (Menegola et al. 2017, section 2): L2-normalise each feature vector, train
a linear SVM (scikit-learn), choose C on a 10% stratified validation split of the training half by
AUC, refit on the whole half. Multiclass (the 3-class design): one-vs-rest SVMs, C chosen by the
paper's one-vs-one mean AUC. ``selection="reference"`` is the reference code's choice instead: AUC
averaged over 10 random 10% splits, with ``class_weight="balanced"``; for 3 classes it is also the
reference code's classifier, libsvm's one-vs-one SVC scored by its Platt probabilities
(``GramPlattSVC``), because the two rank images differently (up to 0.3 in test AUC on weak
signals, ``benchmarks/bench_agreement.py``).

Solver. A training half has ~500 images of 4096 features, far fewer images than features, so the
SVM is solved in the dual: the Gram matrix K = X Xᵀ of the normalised features (500 x 500) is
computed once per training half, and every validation split and every C reuses slices of it with
``SVC(kernel="precomputed")``. This is libsvm's ``SVC(kernel="linear")`` (hinge loss, unpenalised
intercept, tol 1e-3; the reference code's SVM) up to rounding, and the fitted model keeps only the
primal weights. Measured on 500 x 4096 synthetic features, 8 C values each fitted on 450 and on 500
images (2 CPU cores): precomputed Gram 0.15 s; ``LinearSVC(dual=True, loss="hinge")`` 1.1 s (its
intercept is regularised, so AUCs differ slightly at small C); ``LinearSVC(dual=False)`` 2.0 s;
``SVC(kernel="linear")`` 3.5 s with the Gram solver's AUCs. Against the reference protocol
(``benchmarks/bench_svm.py``, 1,000 x 4,096): ``selection="reference"`` picks the same C and gives
the same test scores, 60x faster for 3 classes (500 x 4096 training half: 3.8 s against 240 s) and
~100x for two. ``solver="liblinear"`` keeps ``LinearSVC`` as an option (one-vs-rest decision values
for 3 classes, whatever the selection).

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Real
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, StratifiedShuffleSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, normalize
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from pipeline.classifiers.platt import GramPlattSVC, platt_svc
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import auc_ovo_mean, class_indices, fast_auc

SELECTIONS = ("paper", "reference")
SOLVERS = ("gram", "liblinear")
# Validation AUCs this close count as a tie (then the smaller C wins): identical rankings give
# identical AUCs, so this only absorbs floating-point noise in the mean over splits.
_TIE = 1e-12


class GramLinearSVC(ClassifierMixin, BaseEstimator):
    """Linear SVM solved in the dual on the Gram matrix; one-vs-rest for more than two classes.

    Each binary problem is ``SVC(kernel="precomputed")`` on K = X Xᵀ, the same optimisation
    problem as ``SVC(kernel="linear")`` (hinge loss, unpenalised intercept). After fitting, the
    primal weights w = Σ αᵢ yᵢ xᵢ are kept, so predicting is one matrix product.

    Args:
        C: regularisation parameter (> 0).
        class_weight: ``None``; ``"balanced"`` (within each binary problem: class k against the
            rest); or a dict label -> weight (labels not in it weigh 1): every sample's C is
            multiplied by its own class's weight, as in each of SVC's binary problems.
        tol: libsvm's stopping tolerance (> 0; 1e-3 is SVC's default).

    Attributes:
        classes_: array of shape (n_classes,).
        coef_: array of shape (1, n_features) for two classes, (n_classes, n_features) otherwise.
        intercept_: array of shape (1,) or (n_classes,).
        n_features_in_: number of features seen in ``fit``.
        feature_names_in_: feature names seen in ``fit`` (only when ``X`` had string column names).
    """

    def __init__(self, C: float = 1.0, class_weight=None, tol: float = 1e-3):
        self.C = C
        self.class_weight = class_weight
        self.tol = tol

    def _check_params(self) -> None:
        """Raise ``ValueError`` naming the parameter unless C and tol are reals > 0 and
        class_weight is None, "balanced" or a dict (checked in ``fit``, as scikit-learn does)."""
        for name in ("C", "tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
                raise ValueError(f"The '{name}' parameter of GramLinearSVC must be a real number "
                                 f"> 0. Got {value!r} instead.")
        weight = self.class_weight
        if not (weight is None or weight == "balanced" or isinstance(weight, dict)):
            raise ValueError("The 'class_weight' parameter of GramLinearSVC must be None, "
                             f"'balanced' or a dict label -> weight. Got {weight!r} instead.")

    def fit(self, X, y) -> "GramLinearSVC":
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"GramLinearSVC needs samples of at least 2 classes; got 1 class "
                             f"({self.classes_[0]!r}).")
        weight = self.class_weight
        if isinstance(weight, dict):  # per class, in the order of classes_
            weight = compute_class_weight(weight, classes=self.classes_, y=y)
        machines = _fit_dual(X @ X.T, y_idx, len(self.classes_), self.C, weight, self.tol)
        self.coef_ = np.vstack([m.dual_coef_ @ X[m.support_] for m in machines])
        self.intercept_ = np.concatenate([m.intercept_ for m in machines])
        return self

    def decision_function(self, X) -> np.ndarray:
        """Array of shape (n,) (higher = ``classes_[1]``) or (n, n_classes)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        scores = X @ self.coef_.T + self.intercept_
        return scores.ravel() if len(self.classes_) == 2 else scores

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        best = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[best]


def _fit_dual(K: np.ndarray, y_idx: np.ndarray, n_classes: int, C: float, class_weight,
              tol: float = 1e-3) -> list[SVC]:
    """One precomputed-kernel SVC (two classes) or one per class against the rest.

    ``class_weight``: ``None``, ``"balanced"`` (SVC's, per binary problem) or an array of shape
    (n_classes,), each sample's C multiplied by its class's weight (libsvm sample weights).
    """
    targets = [y_idx == 1] if n_classes == 2 else [y_idx == k for k in range(n_classes)]
    per_class = class_weight is not None and not isinstance(class_weight, str)
    weights = np.asarray(class_weight, dtype=np.float64)[y_idx] if per_class else None
    return [SVC(kernel="precomputed", C=C, class_weight=None if per_class else class_weight,
                tol=tol).fit(K, t, sample_weight=weights) for t in targets]


def _dual_decision(machines: list[SVC], K_cross: np.ndarray) -> np.ndarray:
    """Decision values from K_cross, array of shape (n_samples, n_train): (n,) or (n, k)."""
    scores = np.column_stack([m.decision_function(K_cross) for m in machines])
    return scores.ravel() if scores.shape[1] == 1 else scores


def make_svm(C: float, *, class_weight=None, seed: int = 0, solver: str = "gram") -> Pipeline:
    """The paper's classifier for one C: L2 normalisation, then a linear SVM.

    Args:
        C: SVM regularisation parameter (> 0).
        class_weight: ``None`` (paper) or ``"balanced"`` (reference code).
        seed: ``random_state`` of liblinear's coordinate-descent order; the ``gram`` solver
            (libsvm SMO) is deterministic and uses no randomness.
        solver: ``"gram"`` (default, the fastest: ``GramLinearSVC``, same solution as
            ``SVC(kernel="linear")``) or ``"liblinear"``: ``LinearSVC(loss="hinge", dual=True)``
            (dual coordinate descent, tol 1e-4, max_iter 100000: converges for C up to 1e4 on
            500 x 4096 normalised features, but slowly at large C when images outnumber
            features; its intercept is regularised).

    Returns:
        An unfitted ``make_pipeline(Normalizer(norm="l2"), svm)``.
    """
    if solver == "gram":
        svm = GramLinearSVC(C=C, class_weight=class_weight)
    elif solver == "liblinear":
        svm = LinearSVC(C=C, loss="hinge", dual=True, tol=1e-4, max_iter=100_000,
                        class_weight=class_weight, random_state=seed)
    else:
        raise PipelineError(f"unknown SVM solver {solver!r}; known solvers: {', '.join(SOLVERS)}.")
    return make_pipeline(Normalizer(norm="l2"), svm)


@dataclass
class FitResult:
    """A fitted classifier and how its C was chosen.

    Attributes:
        model: fitted estimator with ``decision_function`` (and ``predict_proba`` for the
            reference protocol), trained on class indices 0..k-1.
        C_: the chosen C.
        val_auc_: C -> validation AUC (mean over validation splits), for every C of the grid.
        classes_: array of shape (n_classes,), the labels in score-column order; for two classes
            ``classes_[1]`` is the positive class.
        response_method: the model method that gives scores (``decision_function`` or
            ``predict_proba``).
    """

    model: object
    C_: float
    val_auc_: dict
    classes_: np.ndarray
    response_method: str = "decision_function"


def _check_inputs(X, y, classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate features and labels; returns (X float64, classes, y as indices into classes)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise PipelineError(f"features must be an array of shape (n_images, n_features); got shape "
                            f"{X.shape}.")
    X = X.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        raise PipelineError(f"features have NaN or infinite values in rows {bad[:5].tolist()} "
                            f"({bad.size} rows); re-extract the features.")
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise PipelineError(f"labels must be an array of shape ({X.shape[0]},), one per feature "
                            f"row; got shape {y.shape}.")
    classes = np.unique(y) if classes is None else np.asarray(list(classes))
    y_idx = class_indices(y, classes)
    counts = np.bincount(y_idx, minlength=len(classes))
    if len(classes) < 2 or np.any(counts == 0):
        empty = [str(c) for c, n in zip(classes.tolist(), counts) if n == 0]
        raise PipelineError(f"training data needs samples of every class; class counts "
                            f"{dict(zip(map(str, classes.tolist()), counts.tolist()))}"
                            + (f", empty: {empty}" if empty else "") + ". Check the design "
                            "and the fold: a training half must contain every class.")
    return X, classes, y_idx


def _check_grid(C_grid) -> np.ndarray:
    try:
        grid = np.asarray(C_grid, dtype=float).ravel()
    except (TypeError, ValueError):
        grid = np.array([np.nan])
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise PipelineError(f"C_grid must be a non-empty list of finite floats > 0; got "
                            f"{np.asarray(C_grid).tolist()}.")
    return np.unique(grid)


def _validation_splits(y_idx: np.ndarray, classes: np.ndarray, fraction: float, n_splits: int,
                       seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, validation) index pairs; every class must be on both sides."""
    if not 0 < fraction < 1:
        raise PipelineError(f"validation_fraction must be in (0, 1); got {fraction}.")
    if not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise PipelineError(f"n_splits must be an integer >= 1; got {n_splits!r}.")
    counts = np.bincount(y_idx, minlength=len(classes))
    n_val = int(np.ceil(fraction * len(y_idx)))
    splitter = StratifiedShuffleSplit(n_splits=n_splits, test_size=fraction, random_state=seed)
    try:
        splits = list(splitter.split(np.zeros(len(y_idx)), y_idx))
    except ValueError as error:
        small = int(np.argmin(counts))
        raise PipelineError(
            f"cannot make a stratified validation split of {n_val} samples "
            f"(validation_fraction={fraction} of {len(y_idx)}): class {classes[small]!r} has "
            f"{counts[small]} samples ({error}). Use a larger validation_fraction or more "
            "training images.") from None
    for train, val in splits:
        for k, name in enumerate(classes.tolist()):
            if not np.any(y_idx[val] == k):
                raise PipelineError(
                    f"the validation split of {len(val)} samples (validation_fraction={fraction} "
                    f"of {len(y_idx)} training samples) has no sample of class {name!r} (it has "
                    f"{counts[k]} training samples), so its AUC is undefined. Use a "
                    f"validation_fraction of at least {min(0.5, 1.5 / counts[k]):.2f}.")
            if not np.any(y_idx[train] == k):
                raise PipelineError(
                    f"validation_fraction={fraction} leaves no sample of class {name!r} (it has "
                    f"{counts[k]} training samples) to fit the SVM on; use a smaller one.")
    return splits


def _auc(y_idx: np.ndarray, scores: np.ndarray, n_classes: int) -> float:
    if n_classes == 2:
        return fast_auc(y_idx == 1, scores)
    return auc_ovo_mean(y_idx, scores, list(range(n_classes)))


def select_and_fit(X: np.ndarray, y: Sequence, *, C_grid: Sequence[float],
                   selection: str = "paper", validation_fraction: float = 0.1,
                   n_splits: int | None = None, seed: int = 0, classes: Sequence | None = None,
                   solver: str = "gram", validation: tuple[np.ndarray, Sequence] | None = None
                   ) -> FitResult:
    """Choose C on stratified validation splits by AUC, then refit on all of ``X``.

    Args:
        X: features of one training half, array of shape (n_images, n_features), unnormalised.
        y: labels, array of shape (n_images,).
        C_grid: candidate C values (> 0), e.g. ``np.logspace(-3, 4, 8)``.
        selection: ``"paper"`` (one split, no class weights) or ``"reference"`` (``n_splits``
            splits, ``class_weight="balanced"``, AUC averaged over splits; for more than two
            classes with the ``gram`` solver, libsvm's one-vs-one ``GramPlattSVC`` scored by its
            probabilities, as ``reference_protocol_fit``).
        validation_fraction: share of ``X`` held out per split (0.1 in the paper).
        n_splits: number of validation splits; default 1 for ``paper``, 10 for ``reference``.
            Other values average the AUC over that many splits.
        seed: ``random_state`` of the splits (and of liblinear).
        classes: the labels in score-column order (e.g. a design's ``classes``, with ``y`` its
            labels or indices into it); default the sorted unique labels. Every class must occur
            in ``y``.
        solver: see ``make_svm``.
        validation: ``(X_val, y_val)``, a given validation part (a hold-out's, Kim & Rocheteau):
            each C is fitted on all of ``X`` and scored on it, instead of splitting ``X``
            (``validation_fraction`` and ``n_splits`` unused). Every class must occur in it.

    Returns:
        ``FitResult``. The validation AUC is the ordinary AUC for two classes and the paper's
        one-vs-one mean (``auc_ovo_mean``) for more. Ties go to the smaller C.
    """
    X, classes, y_idx = _check_inputs(X, y, classes)
    grid = _check_grid(C_grid)
    if selection not in SELECTIONS:
        raise PipelineError(f"unknown C selection {selection!r}; known: {', '.join(SELECTIONS)}.")
    if solver not in SOLVERS:
        raise PipelineError(f"unknown SVM solver {solver!r}; known solvers: {', '.join(SOLVERS)}.")
    n_splits = (1 if selection == "paper" else 10) if n_splits is None else n_splits
    class_weight = "balanced" if selection == "reference" else None
    fit_X, fit_y = X, y_idx
    if validation is None:
        splits = _validation_splits(y_idx, classes, validation_fraction, n_splits, seed)
    else:
        X_val, _, val_idx = _check_inputs(validation[0], validation[1], classes)
        if X_val.shape[1] != X.shape[1]:
            raise PipelineError(f"the validation features have {X_val.shape[1]} columns, the "
                                f"training features {X.shape[1]}.")
        splits = [(np.arange(len(X)), np.arange(len(X), len(X) + len(X_val)))]
        X, y_idx = np.concatenate([X, X_val]), np.concatenate([y_idx, val_idx])
    k = len(classes)
    # The reference code's 3-class classifier is libsvm's one-vs-one SVC with Platt
    # probabilities; `reference` selection scores the same model (on the Gram matrix).
    platt = selection == "reference" and k > 2 and solver == "gram"
    aucs = np.zeros((len(splits), len(grid)))
    if solver == "gram":
        Xn = normalize(X)
        K = Xn @ Xn.T  # reused by every split and every C
    for s, (train, val) in enumerate(splits):
        if solver == "gram":
            K_train, K_val = K[np.ix_(train, train)], K[np.ix_(val, train)]
        for c, C in enumerate(grid):
            if platt:
                scores = platt_svc("precomputed", C, seed).fit(K_train, y_idx[train]) \
                    .predict_proba(K_val)
            elif solver == "gram":
                scores = _dual_decision(_fit_dual(K_train, y_idx[train], k, C, class_weight), K_val)
            else:
                svm = make_svm(C, class_weight=class_weight, seed=seed, solver=solver)
                scores = svm.fit(X[train], y_idx[train]).decision_function(X[val])
            aucs[s, c] = _auc(y_idx[val], scores, k)
    mean_auc = aucs.mean(axis=0)
    best = int(np.flatnonzero(mean_auc >= mean_auc.max() - _TIE)[0])
    if platt:
        model = make_pipeline(Normalizer(norm="l2"), GramPlattSVC(C=grid[best], seed=seed))
        model.fit(fit_X, fit_y)
    else:
        model = make_svm(grid[best], class_weight=class_weight, seed=seed,
                         solver=solver).fit(fit_X, fit_y)
    return FitResult(model=model, C_=float(grid[best]),
                     val_auc_={float(C): float(a) for C, a in zip(grid, mean_auc)},
                     classes_=classes,
                     response_method="predict_proba" if platt else "decision_function")


def decision_scores(result: FitResult, X: np.ndarray) -> np.ndarray:
    """Scores of a fitted classifier.

    Args:
        result: from ``select_and_fit`` or ``reference_protocol_fit``.
        X: features, array of shape (n_images, n_features), unnormalised.

    Returns:
        Array of shape (n_images,) for two classes (higher = ``result.classes_[1]``), else
        (n_images, n_classes) with column k for ``result.classes_[k]``.
    """
    X = np.asarray(X, dtype=np.float64)
    n_features = getattr(result.model, "n_features_in_", None)
    if X.ndim != 2 or (n_features is not None and X.shape[1] != n_features):
        raise PipelineError(f"features must be an array of shape (n_images, {n_features}) like "
                            f"the training features; got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise PipelineError(f"features have NaN or infinite values in rows "
                            f"{np.flatnonzero(~np.isfinite(X).all(axis=1))[:5].tolist()}.")
    scores = np.asarray(getattr(result.model, result.response_method)(X), dtype=np.float64)
    if result.response_method == "predict_proba" and len(result.classes_) == 2:
        scores = scores[:, 1]
    return scores


def reference_protocol_fit(X: np.ndarray, y: Sequence, C_grid: Sequence[float], seed: int = 0,
                           *, classes: Sequence | None = None) -> FitResult:
    """The reference implementation's classifier, for comparison (slow: Platt calibration).

    ``GridSearchCV`` over C of ``SVC(kernel="linear", probability=True, class_weight="balanced")``
    on L2-normalised features, 10 stratified 10% validation splits, scoring ``roc_auc``
    (``roc_auc_ovo`` on ``predict_proba`` for more than two classes), refit on all of ``X``. The
    calibration is seeded here; the reference code's was not (a bug). Scores are the decision
    values for two classes (what its ``roc_auc`` scorer ranks) and the probabilities otherwise.

    Args:
        X: array of shape (n_images, n_features).
        y: labels, array of shape (n_images,).
        C_grid: candidate C values.
        seed: seed of the splits and of libsvm's calibration.
        classes: as in ``select_and_fit``.

    Returns:
        ``FitResult`` whose ``model`` is the refitted normaliser + SVC pipeline.
    """
    X, classes, y_idx = _check_inputs(X, y, classes)
    grid = _check_grid(C_grid)
    _validation_splits(y_idx, classes, 0.1, 10, seed)
    binary = len(classes) == 2
    pipe = Pipeline([("normalizer", Normalizer(norm="l2")),
                     ("svc", SVC(kernel="linear", probability=True, class_weight="balanced",
                                 random_state=seed))])
    search = GridSearchCV(pipe, {"svc__C": grid.tolist()},
                          cv=StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=seed),
                          scoring="roc_auc" if binary else "roc_auc_ovo")
    with warnings.catch_warnings():
        # scikit-learn 1.9 deprecates probability=True; reproducing the reference needs it.
        warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
        search.fit(X, y_idx)
    return FitResult(model=search.best_estimator_, C_=float(search.best_params_["svc__C"]),
                     val_auc_={float(C): float(a) for C, a in
                               zip(grid, search.cv_results_["mean_test_score"])},
                     classes_=classes,
                     response_method="decision_function" if binary else "predict_proba")
