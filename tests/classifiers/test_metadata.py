"""Tests for pipeline.classifiers.metadata: the encoding (unknown and missing values, training-part
statistics only), the SVM on features joined with metadata (a label carried by the metadata alone
is learned with fusion and not without; an image-only signal is not hurt much), the config check
of ``classifier.metadata`` against the dataset, and the svm stage's run with metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.classifiers.metadata import MetadataEncoder, join_metadata
from pipeline.classifiers.svm import decision_scores, select_and_fit
from pipeline.errors import PipelineError
from pipeline.experiment.config import validate

TRAIN = pd.DataFrame({"age": ["40", "60", "", "50"], "sex": ["male", "female", "male", ""],
                      "site": ["torso", "head/neck", "unknown", "torso"]},
                     index=["a", "b", "c", "d"])


def test_encoding_with_training_statistics_unknown_and_missing():
    enc = MetadataEncoder(["site", "age", "sex"]).fit(TRAIN)
    assert enc.feature_names_ == ["age", "age_missing", "sex=female", "sex=male", "sex=unknown",
                                  "site=head/neck", "site=torso", "site=unknown"]
    test = pd.DataFrame({"age": ["90", "n/a"], "sex": ["MALE ", "other"],
                         "site": ["palms/soles", "torso"]})
    out = enc.transform(test)
    # Age standardised with the training part's known ages (40, 60, 50), never the test part's.
    mean, std = 50.0, np.std([40.0, 60.0, 50.0])
    np.testing.assert_allclose(out[:, 0], [(90 - mean) / std, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], [0, 1])
    # A value the training part never saw goes to "unknown", as do spellings of unknown.
    np.testing.assert_array_equal(out[:, 2:5], [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(out[:, 5:8], [[0, 0, 1], [0, 1, 0]])
    train = enc.transform(TRAIN)
    np.testing.assert_array_equal(train[:, 7], [0, 0, 1, 0])  # the literal "unknown" site
    np.testing.assert_array_equal(train[:, 4], [0, 0, 0, 1])  # the empty sex
    # Refitting on other rows changes the statistics: they come from the fitted part only.
    other = MetadataEncoder(["age"]).fit(TRAIN.iloc[:2])
    assert other.age_mean_ == 50.0 and other.age_scale_ == 10.0


def test_encoding_errors_name_the_key_and_fix():
    with pytest.raises(PipelineError, match="'age'.*none of the 2 training images"):
        MetadataEncoder(["age"]).fit(pd.DataFrame({"age": ["", "unknown"]}))
    with pytest.raises(PipelineError, match="'forty'"):
        MetadataEncoder(["age"]).fit(pd.DataFrame({"age": ["forty", "3"]}, index=["x", "y"]))
    with pytest.raises(PipelineError, match="no column 'site'"):
        MetadataEncoder(["site"]).fit(pd.DataFrame({"age": ["3"]}))
    with pytest.raises(PipelineError, match="distinct values"):
        MetadataEncoder(["height"]).fit(TRAIN)
    with pytest.raises(PipelineError, match="before fit"):
        MetadataEncoder(["sex"]).transform(TRAIN)


def test_joined_blocks_have_comparable_norms():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4096)) * 30
    enc = MetadataEncoder(["age", "sex", "site"])
    meta = pd.DataFrame({"age": rng.integers(20, 80, 50).astype(str),
                         "sex": rng.choice(["male", "female"], 50),
                         "site": rng.choice(["torso", "head", "leg"], 50)})
    joined = join_metadata(X, enc.fit_transform(meta), 3)
    image_norm = np.linalg.norm(joined[:, :4096], axis=1)
    meta_norm = np.linalg.norm(joined[:, 4096:], axis=1)
    np.testing.assert_allclose(image_norm, 1.0, rtol=1e-5)
    assert 0.5 < meta_norm.mean() < 1.5, meta_norm.mean()


def _patients(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"age": rng.integers(20, 90, n).astype(str),
                         "sex": rng.choice(["male", "female", ""], n, p=[.45, .45, .1]),
                         "site": rng.choice(["torso", "head/neck", "lower extremity",
                                             "upper extremity"], n)})


def _test_auc(X, y, meta, keys, n_train):
    X_train, X_test = X[:n_train], X[n_train:]
    if keys:
        enc = MetadataEncoder(keys).fit(meta.iloc[:n_train])
        X_train = join_metadata(X_train, enc.transform(meta.iloc[:n_train]), len(keys))
        X_test = join_metadata(X_test, enc.transform(meta.iloc[n_train:]), len(keys))
    fit = select_and_fit(X_train, y[:n_train], C_grid=[0.1, 1.0, 10.0, 100.0], seed=0,
                         classes=["benign", "melanoma"])
    return roc_auc_score(y[n_train:] == "melanoma", decision_scores(fit, X_test))


def test_a_label_carried_by_metadata_alone_is_learned_only_with_fusion():
    rng = np.random.default_rng(1)
    n = 400
    meta = _patients(n, rng)
    risk = ((meta["site"] == "torso").to_numpy() * 1.5 + (meta["sex"] == "male").to_numpy()
            + (meta["age"].astype(float).to_numpy() - 55) / 15)
    y = np.where(risk + rng.normal(scale=0.5, size=n) > 1.0, "melanoma", "benign")
    X = rng.normal(size=(n, 256)).astype(np.float32)  # images without any signal
    without = _test_auc(X, y, meta, [], 300)
    with_meta = _test_auc(X, y, meta, ["age", "sex", "site"], 300)
    assert without < 0.65, without
    assert with_meta > 0.85, with_meta


def test_an_image_only_signal_is_not_hurt_much_by_metadata():
    # Mean over 3 datasets of 400 training and 400 test images: one test AUC on 400 images has a
    # standard error of about 0.025, so a single split could not tell "not hurt much" from noise.
    drops = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        n = 800
        y = np.where(rng.random(n) < 0.3, "melanoma", "benign")
        X = rng.normal(size=(n, 256)) + 0.5 * (y == "melanoma")[:, None] * (np.arange(256) < 16)
        meta = _patients(n, rng)  # metadata independent of the label
        without = _test_auc(X, y, meta, [], 400)
        assert without > 0.75, without
        drops.append(without - _test_auc(X, y, meta, ["age", "sex", "site"], 400))
    assert np.mean(drops) < 0.03, drops


def _raw(tmp_path, dataset, keys):
    return {"experiment": {"name": "x", "cells": ["none+ft"]},
            "data": {"dataset": dataset, "root": str(tmp_path)},
            "network": {"name": "standard-cnn"}, "classifier": {"metadata": keys}}


def test_config_refuses_metadata_the_dataset_lacks(tmp_path):
    assert validate(_raw(tmp_path, "isic2020", ["age", "site"]),
                    tmp_path / "x.toml")["classifier"]["metadata"] == ("age", "site")
    assert validate(_raw(tmp_path, "isic2020", []), tmp_path / "x.toml")["classifier"][
        "metadata"] == ()  # the default: images only, Menegola's protocol
    with pytest.raises(PipelineError, match=r"\['age'\].*'derm7pt'.*'sex', 'site'"):
        validate(_raw(tmp_path, "derm7pt", ["age", "sex"]), tmp_path / "x.toml")
    with pytest.raises(PipelineError, match="'isic2016'.*none"):
        validate(_raw(tmp_path, "isic2016", ["sex"]), tmp_path / "x.toml")
    with pytest.raises(PipelineError, match="classifier.metadata"):
        validate(_raw(tmp_path, "isic2020", ["height"]), tmp_path / "x.toml")


def test_svm_stage_run_joins_metadata(tmp_path):
    from pipeline.cache.entries import finish_entry
    from pipeline.stages.svm import Run, run_one

    rng = np.random.default_rng(4)
    n = 240
    ids = [f"img{i:03d}" for i in range(n)]
    meta = _patients(n, rng).set_index(pd.Index(ids))
    y = np.where((meta["site"] == "torso").to_numpy() ^ (rng.random(n) < 0.1), "melanoma",
                 "benign")
    entry = tmp_path / "f"
    entry.mkdir()
    np.save(entry / "features.npy", rng.normal(size=(n, 64)).astype(np.float32))
    (entry / "images.txt").write_text("\n".join(ids) + "\n")
    finish_entry(entry, {"test": "metadata"}, ["features.npy", "images.txt"])
    folds = pd.DataFrame({"image": ids, "repeat": 0, "half": [1] * 160 + [2] * 80})
    labels = pd.Series(y, index=ids)
    svm = {"C_grid": [0.1, 1.0, 10.0], "selection": "paper", "validation_fraction": 0.2}
    run = Run("none", True, "melanoma_vs_benign", 0, 2, str(tmp_path / "f"))
    plain, _, _ = run_one(run, folds, labels, svm, 0, 0.0)
    fused, predictions, _ = run_one(run, folds, labels, svm, 0, 0.0, metadata=meta[["site"]])
    assert plain["auc"] < 0.7 < 0.85 < fused["auc"], (plain["auc"], fused["auc"])
    assert list(predictions["image"]) == ids[160:]
