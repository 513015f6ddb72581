"""Tests of pipeline.classifiers.svm: the SVM, the choice of C, determinism, bad input, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import normalize
from sklearn.svm import SVC

from pipeline.classifiers.svm import (GramLinearSVC, decision_scores, make_svm, reference_protocol_fit,
                               select_and_fit)
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import auc_ovo_mean

GRID = np.logspace(-3, 4, 8)


def blobs(n: int, d: int, k: int = 2, shift: float = 0.4, seed: int = 0):
    """Non-negative (ReLU-like) features, class c shifted along its own block of 10 dimensions."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = np.abs(rng.normal(size=(n, d)))
    for c in range(k):
        X[y == c, 10 * c:10 * c + 10] += shift
    return X.astype(np.float32), y


def test_modules_do_not_import_tensorflow():
    code = ("import sys, pipeline.classifiers.svm, pipeline.stages.svm, pipeline.evaluation.metrics; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_gram_svm_equals_libsvm_linear_kernel():
    X, y = blobs(120, 60, seed=1)
    Xn = normalize(X.astype(np.float64))
    for C in (1e-2, 1.0, 1e3):
        ours = GramLinearSVC(C=C).fit(Xn, y).decision_function(Xn)
        theirs = SVC(kernel="linear", C=C).fit(Xn, y).decision_function(Xn)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8,
                                   err_msg=f"decision values differ from SVC at C={C}")


def test_gram_svm_multiclass_is_one_vs_rest():
    X, y = blobs(150, 40, k=3, seed=2)
    Xn = normalize(X.astype(np.float64))
    model = GramLinearSVC(C=1.0, class_weight="balanced").fit(Xn, y)
    scores = model.decision_function(Xn)
    assert scores.shape == (150, 3)
    for k in range(3):
        single = SVC(kernel="linear", C=1.0, class_weight="balanced").fit(Xn, y == k)
        np.testing.assert_allclose(scores[:, k], single.decision_function(Xn), atol=1e-8,
                                   err_msg=f"one-vs-rest column {k}")
    assert np.mean(model.predict(Xn) == y) > 0.9


def test_liblinear_option_converges_on_paper_sized_features():
    X, y = blobs(500, 4096, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for C in (1e-3, 1e4):
            model = make_svm(C, solver="liblinear").fit(X, y)
            assert roc_auc_score(y, model.decision_function(X)) > 0.9


@pytest.mark.parametrize("selection", ["paper", "reference"])
def test_select_and_fit_matches_direct_validation(selection):
    X, y = blobs(120, 200, shift=0.2, seed=4)
    result = select_and_fit(X, y, C_grid=GRID, selection=selection, seed=7)
    Xn = normalize(X.astype(np.float64))
    n_splits, weight = (1, None) if selection == "paper" else (10, "balanced")
    splits = list(StratifiedShuffleSplit(n_splits, test_size=0.1, random_state=7).split(Xn, y))
    expected = {}
    for C in GRID:
        aucs = [roc_auc_score(y[va], SVC(kernel="linear", C=C, class_weight=weight)
                              .fit(Xn[tr], y[tr]).decision_function(Xn[va])) for tr, va in splits]
        expected[C] = np.mean(aucs)
    assert list(result.val_auc_) == pytest.approx(list(GRID))
    np.testing.assert_allclose(list(result.val_auc_.values()), list(expected.values()),
                               atol=1e-9, err_msg="validation AUC per C")
    best = max(expected.values())
    assert result.C_ == min(C for C, a in expected.items() if a >= best - 1e-12)
    refit = SVC(kernel="linear", C=result.C_, class_weight=weight).fit(Xn, y)
    np.testing.assert_allclose(decision_scores(result, X), refit.decision_function(Xn), atol=1e-6,
                               err_msg="refit on all of X")


def test_large_C_chosen_when_class_means_mislead():
    # Separable on x1 with a gap, but 10% of the positives sit far out on x2 while the rest sit
    # below the negatives: the class-mean direction (what a tiny C gives) ranks most positives
    # last, the maximum-margin direction (large C) ranks perfectly.
    n = 200
    y = np.repeat([0, 1], n // 2)
    x1 = np.where(y == 1, 0.2, -0.2) + np.random.default_rng(0).uniform(-0.1, 0.1, n)
    x2 = np.where(y == 1, -1.0, 0.0)
    x2[np.flatnonzero(y == 1)[::10]] = 20.0
    X = np.column_stack([x1, x2, np.ones(n)])
    result = select_and_fit(X, y, C_grid=[1e-3, 1e4])
    assert result.C_ == 1e4
    assert result.val_auc_[1e4] > result.val_auc_[1e-3] + 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_small_C_chosen_when_hard_margin_overfits(seed):
    # As many dimensions as images: the maximum-margin (large C) solution interpolates noise,
    # while a tiny C averages the classes (a nearest-mean direction) and keeps the signal on x0.
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], 300)
    X = rng.normal(size=(600, 600))
    X[:, 0] += np.where(y == 1, 1.0, -1.0)
    X = np.column_stack([X, np.full(600, 3.0)])
    result = select_and_fit(X, y, C_grid=[1e-3, 1e4], seed=seed)
    assert result.C_ == 1e-3
    assert result.val_auc_[1e-3] > result.val_auc_[1e4] + 0.03


def test_ties_go_to_the_smaller_C():
    X, y = blobs(100, 30, shift=5.0, seed=5)  # separable: every C ranks the validation perfectly
    result = select_and_fit(X, y, C_grid=[100.0, 1.0, 10.0])
    assert set(result.val_auc_.values()) == {1.0}
    assert result.C_ == 1.0


@pytest.mark.parametrize("solver", ["gram", "liblinear"])
def test_deterministic_for_a_seed(solver):
    # Fewer images than features, as with fc7 features (liblinear is slow at large C otherwise).
    X, y = blobs(90, 120, k=3, shift=0.3, seed=6)
    grid = GRID[::2]
    first = select_and_fit(X, y, C_grid=grid, selection="reference", n_splits=2, seed=11,
                           solver=solver)
    again = select_and_fit(X, y, C_grid=grid, selection="reference", n_splits=2, seed=11,
                           solver=solver)
    other = select_and_fit(X, y, C_grid=grid, selection="reference", n_splits=2, seed=12,
                           solver=solver)
    assert first.C_ == again.C_ and first.val_auc_ == again.val_auc_
    np.testing.assert_array_equal(decision_scores(first, X), decision_scores(again, X))
    assert first.val_auc_ != other.val_auc_


def test_scores_follow_the_class_order():
    X, y = blobs(120, 40, shift=1.0, seed=7)
    labels = np.array(["benign", "melanoma"])[y]
    result = select_and_fit(X, labels, C_grid=[1.0], classes=("benign", "melanoma"))
    scores = decision_scores(result, X)
    assert scores.shape == (120,)
    assert list(result.classes_) == ["benign", "melanoma"]
    assert roc_auc_score(labels == "melanoma", scores) > 0.95
    as_indices = select_and_fit(X, y, C_grid=[1.0], classes=("benign", "melanoma"))
    np.testing.assert_array_equal(decision_scores(as_indices, X), scores)
    flipped = select_and_fit(X, labels, C_grid=[1.0], classes=("melanoma", "benign"))
    # The same problem with the roles swapped, up to libsvm's stopping tolerance (1e-3).
    np.testing.assert_allclose(decision_scores(flipped, X), -scores, atol=1e-2)


def test_multiclass_scores_and_ovo_selection():
    X, y = blobs(180, 40, k=3, shift=0.5, seed=8)
    classes = ("benign", "bcc", "melanoma")
    result = select_and_fit(X, np.array(classes)[y], C_grid=GRID, classes=classes)
    scores = decision_scores(result, X)
    assert scores.shape == (180, 3)
    assert auc_ovo_mean(y, scores, classes) > 0.9
    assert np.mean(scores.argmax(axis=1) == y) > 0.8


def test_reference_protocol_agrees_with_fast_reference_selection():
    X, y = blobs(100, 150, shift=0.2, seed=9)
    slow = reference_protocol_fit(X, y, GRID, seed=3)
    fast = select_and_fit(X, y, C_grid=GRID, selection="reference", seed=3)
    # Same splits, same SVM (libsvm, hinge, balanced), same scorer (decision values) for 2 classes.
    np.testing.assert_allclose(list(slow.val_auc_.values()), list(fast.val_auc_.values()),
                               atol=1e-9, err_msg="validation AUC per C")
    assert slow.C_ == fast.C_
    np.testing.assert_allclose(decision_scores(slow, X), decision_scores(fast, X), atol=1e-6)


def test_fast_reference_selection_is_the_reference_protocol_for_three_classes():
    X, y = blobs(120, 30, k=3, shift=0.15, seed=12)
    slow = reference_protocol_fit(X, y, GRID, seed=4)
    fast = select_and_fit(X, y, C_grid=GRID, selection="reference", seed=4)
    # Same splits, libsvm's one-vs-one SVC with the same seeded Platt calibration, same scorer:
    # on the Gram matrix instead of the linear kernel, so equal up to rounding.
    np.testing.assert_allclose(list(slow.val_auc_.values()), list(fast.val_auc_.values()),
                               atol=1e-9, err_msg="validation AUC per C")
    assert slow.C_ == fast.C_ and fast.response_method == "predict_proba"
    X_new = blobs(40, 30, k=3, shift=0.15, seed=13)[0]
    # Platt's sigmoid fit amplifies the kernel's rounding to ~1e-6 in the probabilities.
    np.testing.assert_allclose(decision_scores(fast, X_new), decision_scores(slow, X_new),
                               atol=2e-5)
    assert (fast.model.predict(X_new) == slow.model.predict(X_new)).all()
    # Without class weights or on liblinear, the one-vs-rest decision values stay.
    assert select_and_fit(X, y, C_grid=GRID, seed=4).response_method == "decision_function"
    assert select_and_fit(X, y, C_grid=GRID, selection="reference", n_splits=2, seed=4,
                          solver="liblinear").response_method == "decision_function"


def test_reference_protocol_multiclass_gives_probabilities():
    X, y = blobs(90, 20, k=3, shift=0.6, seed=10)
    result = reference_protocol_fit(X, y, [0.1, 10.0], seed=0)
    scores = decision_scores(result, X)
    assert scores.shape == (90, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-9)


def test_validation_split_without_a_class_is_an_error():
    X, y = blobs(100, 10, k=3, seed=11)
    y = np.where(np.arange(100) < 5, 1, np.where(np.arange(100) < 10, 2, 0))  # 90 / 5 / 5
    names = np.array(["benign", "bcc", "melanoma"])[y]
    with pytest.raises(PipelineError, match=r"no sample of class '(bcc|melanoma)' \(it has 5 "
                                            r"training samples\).*validation_fraction"):
        select_and_fit(X, names, C_grid=[1.0], classes=("benign", "bcc", "melanoma"))
    tiny_y = np.r_[np.zeros(16, int), [1, 1, 2, 2]]
    with pytest.raises(PipelineError, match="validation_fraction"):
        select_and_fit(X[:20], tiny_y, C_grid=[1.0])
    # A larger validation fraction fixes it, as the message says.
    assert select_and_fit(X, y, C_grid=[1.0], validation_fraction=0.3).C_ == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"C_grid": []}, "C_grid"),
    ({"C_grid": [1.0, -2.0]}, "C_grid"),
    ({"C_grid": ["big"]}, "C_grid"),
    ({"C_grid": [1.0], "selection": "best"}, "unknown C selection"),
    ({"C_grid": [1.0], "solver": "sgd"}, "unknown SVM solver"),
    ({"C_grid": [1.0], "validation_fraction": 1.5}, "validation_fraction"),
    ({"C_grid": [1.0], "n_splits": 0}, "n_splits"),
    ({"C_grid": [1.0], "classes": (0, 1, 2)}, r"empty: \['2'\]"),
])
def test_bad_arguments(kwargs, message):
    X, y = blobs(60, 10, seed=12)
    with pytest.raises(PipelineError, match=message):
        select_and_fit(X, y, **kwargs)


def test_bad_features_and_labels():
    X, y = blobs(60, 10, seed=13)
    bad = X.copy()
    bad[7, 3] = np.nan
    with pytest.raises(PipelineError, match=r"rows \[7\]"):
        select_and_fit(bad, y, C_grid=[1.0])
    with pytest.raises(PipelineError, match=r"shape \(60,\)"):
        select_and_fit(X, y[:-1], C_grid=[1.0])
    with pytest.raises(PipelineError, match="every class"):
        select_and_fit(X, np.zeros(60, int), C_grid=[1.0])
    with pytest.raises(PipelineError, match="not among the classes"):
        select_and_fit(X, y, C_grid=[1.0], classes=(0, 2))
    result = select_and_fit(X, y, C_grid=[1.0])
    with pytest.raises(PipelineError, match=r"\(n_images, 10\)"):
        decision_scores(result, X[:, :5])


def test_gram_svm_is_exported_by_the_package():
    import pipeline
    from pipeline import GramLinearSVC as exported

    assert exported is GramLinearSVC and pipeline.GramLinearSVC is GramLinearSVC


def test_gram_svm_balanced_class_weight_equals_libsvm():
    X, y = blobs(120, 30, shift=0.3, seed=14)
    keep = (y == 0) | (np.arange(120) % 8 == 1)  # 60 negatives, 15 positives
    Xn, labels = normalize(X[keep].astype(np.float64)), np.array(["no", "yes"])[y[keep]]
    ours = GramLinearSVC(C=1.0, class_weight="balanced").fit(Xn, labels).decision_function(Xn)
    theirs = SVC(kernel="linear", C=1.0, class_weight="balanced").fit(Xn, labels)
    np.testing.assert_allclose(ours, theirs.decision_function(Xn), rtol=1e-6, atol=1e-8)
    plain = GramLinearSVC(C=1.0).fit(Xn, labels).decision_function(Xn)
    assert np.abs(plain - ours).max() > 0.1  # the weights matter on this problem


def test_gram_svm_dict_class_weight_weighs_each_sample_by_its_class():
    X, y = blobs(90, 30, k=3, seed=15)
    Xn, weight = normalize(X.astype(np.float64)), {0: 5.0, 2: 0.2}  # class 1 weighs 1
    scores = GramLinearSVC(C=1.0, class_weight=weight).fit(Xn, y).decision_function(Xn)
    per_sample = np.array([5.0, 1.0, 0.2])[y]
    for k in range(3):
        single = SVC(kernel="linear", C=1.0).fit(Xn, y == k, sample_weight=per_sample)
        np.testing.assert_allclose(scores[:, k], single.decision_function(Xn), atol=1e-8)
    binary = y < 2
    ours = GramLinearSVC(C=1.0, class_weight={0: 5.0}).fit(Xn[binary], y[binary])
    theirs = SVC(kernel="linear", C=1.0, class_weight={0: 5.0}).fit(Xn[binary], y[binary])
    np.testing.assert_allclose(ours.decision_function(Xn), theirs.decision_function(Xn),
                               atol=1e-8)


@pytest.mark.parametrize("params, name", [({"C": -1}, "C"), ({"C": 0.0}, "C"),
                                          ({"class_weight": "x"}, "class_weight"),
                                          ({"tol": -1e-3}, "tol")])
def test_gram_svm_bad_parameter(params, name):
    X, y = blobs(20, 5, seed=16)
    model = GramLinearSVC(**params)
    assert model.get_params()[name] == params[name]  # __init__ only stores it
    with pytest.raises(ValueError, match=f"'{name}' parameter of GramLinearSVC must be"):
        model.fit(X, y)


def test_the_package_uses_no_private_scikit_learn_name():
    """scikit-learn may change its private names (``_fit_context``, ``utils._param_validation``)
    in any release of the range setup.cfg allows."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "pipeline"
    private = re.compile(r"^\s*(?:from\s+sklearn[\w.]*\._\w*|from\s+sklearn[\w.]*\s+import\s+"
                         r"(?:.*,\s*)?_\w+|import\s+sklearn[\w.]*\._)", re.M)
    hits = [f"{path.relative_to(package.parent)}: {match.group(0).strip()}"
            for path in package.rglob("*.py") for match in private.finditer(path.read_text())]
    assert not hits, hits


def test_selection_splits_picks_C_by_the_mean_over_splits():
    """``n_splits=K`` with ``paper``: C maximises the mean validation AUC over K stratified splits
    (no class weights), each split's AUC computed with libsvm directly."""
    X, y = blobs(120, 200, shift=0.2, seed=5)
    result = select_and_fit(X, y, C_grid=GRID, selection="paper", n_splits=5, seed=3)
    Xn = normalize(X.astype(np.float64))
    splits = list(StratifiedShuffleSplit(5, test_size=0.1, random_state=3).split(Xn, y))
    per_split = np.array([[roc_auc_score(y[va], SVC(kernel="linear", C=C).fit(Xn[tr], y[tr])
                                         .decision_function(Xn[va])) for C in GRID]
                          for tr, va in splits])
    np.testing.assert_allclose(list(result.val_auc_.values()), per_split.mean(axis=0), atol=1e-9)
    mean = per_split.mean(axis=0)
    assert result.C_ == GRID[np.flatnonzero(mean >= mean.max() - 1e-12)[0]]
    # it is the mean, not the first split's choice, whenever those differ
    assert not np.allclose(per_split[0], mean)


def test_selection_splits_deterministic_and_one_split_is_the_paper():
    X, y = blobs(120, 200, shift=0.2, seed=6)
    a = select_and_fit(X, y, C_grid=GRID, selection="paper", n_splits=10, seed=2)
    b = select_and_fit(X, y, C_grid=GRID, selection="paper", n_splits=10, seed=2)
    assert a.C_ == b.C_ and a.val_auc_ == b.val_auc_
    np.testing.assert_array_equal(decision_scores(a, X), decision_scores(b, X))
    one = select_and_fit(X, y, C_grid=GRID, selection="paper", n_splits=1, seed=2)
    paper = select_and_fit(X, y, C_grid=GRID, selection="paper", seed=2)
    assert one.C_ == paper.C_ and one.val_auc_ == paper.val_auc_
    assert one.val_auc_ != a.val_auc_


def test_schema_selection_splits_default_and_validation():
    from pipeline.experiment.schema import SCHEMA

    key = SCHEMA["svm"]["selection_splits"]
    assert key.default == 0 and key.minimum == 0 and key.kind == "int"
