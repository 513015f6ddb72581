"""Tests for pipeline.models.metadata_branch and train_classifier(metadata=...): Kim & Rocheteau's
fusion of patient metadata with the pooled features, trained end to end. A label carried by the
metadata alone (the images are noise) is learned with the branch and not without it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.classifiers.metadata import MetadataEncoder
from pipeline.errors import PipelineError
from pipeline.models.build import build_network
from pipeline.models.metadata_branch import add_metadata_branch
from pipeline.models.registry import get_network
from pipeline.training.recipe import TrainRecipe
from pipeline.training.train import train_classifier

SIZE = 32
RECIPE = TrainRecipe(epochs=12, batch_size=16, learning_rate=0.01, optimizer="adam", l2=0.0,
                     augment="none", early_stopping_patience=4)


def noise_with_metadata(n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)  # no signal at all
    meta = pd.DataFrame({"age": rng.integers(20, 90, n).astype(str),
                         "sex": rng.choice(["male", "female"], n),
                         "site": rng.choice(["torso", "head/neck", "lower extremity"], n)})
    risk = (meta["site"] == "torso").to_numpy() * 1.5 + (meta["age"].astype(float) - 55) / 12
    y = (risk + rng.normal(scale=0.4, size=n) > 0.6).astype(np.int64)
    return images, y, meta


def image_signal_with_noise_metadata(n: int = 240, seed: int = 1):
    """The label is carried by the images only (a brighter centre patch, 10% labels flipped);
    the metadata are independent of it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    images = rng.integers(0, 200, (n, SIZE, SIZE, 3)).astype(np.int64)
    images[y == 1, 10:22, 10:22, :] += 55
    meta = pd.DataFrame({"age": rng.integers(20, 90, n).astype(str),
                         "sex": rng.choice(["male", "female"], n),
                         "site": rng.choice(["torso", "head/neck", "lower extremity"], n)})
    flip = rng.random(n) < 0.1
    return images.astype(np.uint8), np.where(flip, 1 - y, y), meta


def fitted(tmp_path, with_metadata: bool, data=noise_with_metadata):
    images, y, meta = data()
    spec = get_network("standard-cnn")
    base = build_network("standard-cnn", weights=None, input_size=SIZE, classes=2, seed=0)
    train, test = np.arange(180), np.arange(180, 240)
    encoder = MetadataEncoder(["age", "site"]).fit(meta.iloc[train])
    encoded = encoder.transform(meta)
    model = add_metadata_branch(base, spec, encoded.shape[1], 2, seed=0) if with_metadata \
        else base
    train_classifier(model, images[train], y[train], recipe=RECIPE,
                     preprocess=lambda x: x / 255.0 - 0.5, seed=0,
                     workdir=tmp_path / f"{data.__name__}-{with_metadata}", progress=False,
                     metadata=encoded[train] if with_metadata else None)
    x = images[test].astype(np.float32) / 255.0 - 0.5
    inputs = [x, encoded[test]] if with_metadata else x
    probabilities = np.asarray(model(inputs, training=False))
    return roc_auc_score(y[test], probabilities[:, 1])


def test_metadata_only_label_is_learned_with_the_branch_and_not_without(tmp_path):
    with_branch = fitted(tmp_path, True)
    without = fitted(tmp_path, False)
    assert with_branch > 0.85, with_branch
    assert without < 0.7, without


def test_an_image_only_signal_is_not_hurt_much_by_the_branch(tmp_path):
    """The reverse of the test above (classifier.kind = network): metadata without signal, fused
    by the branch, costs the images' signal little."""
    without = fitted(tmp_path, False, image_signal_with_noise_metadata)
    with_branch = fitted(tmp_path, True, image_signal_with_noise_metadata)
    assert without > 0.8, without  # the images' signal is learned
    assert with_branch > without - 0.05, (with_branch, without)


def test_the_branch_shares_the_backbone_and_checks_its_inputs(tmp_path):
    spec = get_network("standard-cnn")
    base = build_network("standard-cnn", weights=None, input_size=SIZE, classes=2, seed=0)
    fused = add_metadata_branch(base, spec, 5, 2)
    assert [tuple(i.shape[1:]) for i in fused.inputs] == [(SIZE, SIZE, 3), (5,)]
    assert fused.get_layer(spec.head_input) is base.get_layer(spec.head_input)
    images, y, _ = noise_with_metadata(40)
    with pytest.raises(PipelineError, match=r"shape \(40, d\)"):
        train_classifier(fused, images, y, recipe=RECIPE, preprocess=lambda x: x, seed=0,
                         workdir=tmp_path / "a", progress=False,
                         metadata=np.zeros((40, 3), np.float32))
    with pytest.raises(PipelineError, match="pass metadata"):
        train_classifier(fused, images, y, recipe=RECIPE, preprocess=lambda x: x, seed=0,
                         workdir=tmp_path / "b", progress=False)
    with pytest.raises(PipelineError, match="n_features >= 1"):
        add_metadata_branch(base, spec, 0, 2)
