"""The SVM under a hold-out (Kim & Rocheteau's 60/20/20 split): C is chosen on the split's
validation part (half 3), not on a split of the training part."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.classifiers.svm import decision_scores, select_and_fit

GRID = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]


def _data(seed=1, n=40, d=30):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3 * n, d))
    w = rng.normal(size=d)
    y_train = np.where(X[:n] @ w + rng.normal(scale=3.0, size=n) > 0, "melanoma", "benign")
    return X, y_train, n


def _by_hand(X_train, y_train, X_val, y_val):
    """Each C fitted on the training part alone, its AUC on the validation part."""
    aucs = []
    for C in GRID:
        fit = select_and_fit(X_train, y_train, C_grid=[C], classes=["benign", "melanoma"])
        aucs.append(roc_auc_score(y_val == "melanoma", decision_scores(fit, X_val)))
    aucs = np.array(aucs)
    return GRID[int(np.flatnonzero(aucs >= aucs.max() - 1e-9)[0])], aucs


def _val_labels(X, y_train, n, C):
    """Validation labels that the model of ``C`` ranks perfectly (its scores above their median)."""
    fit = select_and_fit(X[:n], y_train, C_grid=[C], classes=["benign", "melanoma"])
    scores = decision_scores(fit, X[n:2 * n])
    return np.where(scores > np.median(scores), "melanoma", "benign")


def test_select_and_fit_picks_c_on_a_given_validation_part():
    X, y_train, n = _data()
    for C_label in (GRID[0], GRID[-1]):
        y_val = _val_labels(X, y_train, n, C_label)
        fit = select_and_fit(X[:n], y_train, C_grid=GRID, classes=["benign", "melanoma"],
                             validation=(X[n:2 * n], y_val))
        expected, aucs = _by_hand(X[:n], y_train, X[n:2 * n], y_val)
        assert fit.C_ == expected
        assert np.allclose([fit.val_auc_[C] for C in GRID], aucs, atol=1e-6)


def test_svm_stage_chooses_c_on_the_holdout_validation_part(tmp_path):
    """Only the validation part's labels differ between the two runs: the chosen C follows them
    (a C chosen on a split of the training part, the old behaviour, could not change)."""
    from pipeline.cache.entries import finish_entry
    from pipeline.stages.svm import Run, run_one

    X, y_train, n = _data()
    ids = [f"img{i:03d}" for i in range(3 * n)]
    entry = tmp_path / "f"
    entry.mkdir()
    np.save(entry / "features.npy", X.astype(np.float32))
    (entry / "images.txt").write_text("\n".join(ids) + "\n")
    finish_entry(entry, {"test": "holdout svm"}, ["features.npy", "images.txt"])
    # the folds table of a hold-out run: 1 = train, 3 = validation, 2 = test
    folds = pd.DataFrame({"image": ids, "repeat": 1, "half": [1] * n + [3] * n + [2] * n})
    rng = np.random.default_rng(7)
    y_test = np.array(["benign", "melanoma"] * (n // 2))[rng.permutation(n)]
    svm = {"C_grid": GRID, "selection": "paper", "validation_fraction": 0.3}
    run = Run("imagenet", True, "melanoma_vs_benign", 1, 2, str(entry))
    X32 = X.astype(np.float32).astype(np.float64)
    chosen = []
    for C_label in (GRID[0], GRID[-1]):
        y_val = _val_labels(X32, y_train, n, C_label)
        labels = pd.Series(np.concatenate([y_train, y_val, y_test]), index=ids)
        row, predictions, _ = run_one(run, folds, labels, svm, 0, 0.0)
        expected, _ = _by_hand(X32[:n], y_train, X32[n:2 * n], y_val)
        assert row["C"] == expected and row["n_train"] == n and row["n_test"] == n
        assert list(predictions["image"]) == ids[2 * n:]  # never a validation image
        chosen.append(row["C"])
    assert chosen[0] != chosen[1], chosen
