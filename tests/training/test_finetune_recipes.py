"""The fine-tuning recipes (pipeline.training.recipe, .optimizer, .train): ``batchnorm = "frozen"``,
``head_epochs`` (linear probing, then fine-tuning), ``head_learning_rate`` and the cosine
learning-rate schedule. Each mechanism is checked against what it promises: frozen statistics and
a training pass equal to inference, a body bit-identical through the head epochs, a head update
exactly the ratio of the rates, the schedule's rates by hand; keys change only when on."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.experiment.config import validate
from pipeline.training.recipe import TrainRecipe
from pipeline.training.train import epoch_rates, split_validation, train_classifier
from tests.training.test_batchnorm import SIZE, data, scale

RECIPE = TrainRecipe(epochs=3, batch_size=8, learning_rate=0.05, momentum=0.9,
                     validation_fraction=0.25, augment="none")
HEAD = ("head",)


def model_with_bn(seed: int = 0, dropout: float = 0.0) -> keras.Model:
    """conv -> BN -> ReLU -> pool [-> dropout] -> a softmax head named ``head``."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    if dropout:
        h = keras.layers.Dropout(dropout, name="body_dropout")(h)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(h))


def layer_weights(model, names) -> list[np.ndarray]:
    return [np.array(w) for name in names for w in model.get_layer(name).weights]


def train(model, recipe, tmp_path, name="run", **kwargs):
    images, y = data()
    return train_classifier(model, images, y, recipe=recipe, preprocess=scale, seed=3,
                            workdir=tmp_path / name, progress=False, head=HEAD, **kwargs)


def test_frozen_batchnorm_keeps_the_source_statistics_and_trains_in_inference_mode(tmp_path):
    model = model_with_bn()
    bn = model.get_layer("bn")
    # source statistics that are not Keras's initial ones, as a pretrained network's
    bn.moving_mean.assign(np.full(4, 0.3, np.float32))
    bn.moving_variance.assign(np.full(4, 2.0, np.float32))
    before = layer_weights(model, ["bn"])
    conv_before = layer_weights(model, ["conv"])
    images, _ = data()
    x = scale(images[:8].astype(np.float32))
    gaps = []

    def check(row):  # during the run: a training-mode pass is the inference pass
        gaps.append(float(np.abs(np.asarray(model(x, training=True))
                                 - np.asarray(model(x, training=False))).max()))

    recipe = dataclasses.replace(RECIPE, batchnorm="frozen")
    train(model, recipe, tmp_path, on_epoch_end=check)
    assert gaps and max(gaps) < 1e-6
    for a, b in zip(before, layer_weights(model, ["bn"])):  # scale, offset, mean, variance
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(conv_before, layer_weights(model, ["conv"]))) \
        > 1e-4  # the other weights trained
    assert bn.trainable  # restored on return
    # the paper's recipe ("moving") moves the statistics and its training pass uses the batch's
    moving = model_with_bn()
    train(moving, RECIPE, tmp_path, "moving")
    assert np.abs(moving.get_layer("bn").moving_mean.numpy()).max() > 1e-4
    assert np.abs(np.asarray(moving(x, training=True))
                  - np.asarray(moving(x, training=False))).max() > 1e-4


def test_head_epochs_leave_the_body_bit_identical_then_train_it(tmp_path):
    model = model_with_bn(dropout=0.5)
    body = ["conv", "bn"]
    start_body, start_head = layer_weights(model, body), layer_weights(model, HEAD)
    seen = {}

    def snapshot(row):
        seen[row["epoch"]] = (layer_weights(model, body), layer_weights(model, HEAD), row)

    recipe = dataclasses.replace(RECIPE, head_epochs=2, epochs=2)
    result = train(model, recipe, tmp_path, on_epoch_end=snapshot)
    assert [row["phase"] for row in result.history] == ["head", "head", "all", "all"]
    for epoch in (1, 2):  # every body weight, BN statistics included, untouched
        for a, b in zip(start_body, seen[epoch][0]):
            np.testing.assert_array_equal(a, b)
        assert max(np.abs(a - b).max() for a, b in zip(start_head, seen[epoch][1])) > 1e-4
    assert max(np.abs(a - b).max() for a, b in zip(start_body, seen[4][0])) > 1e-4
    assert result.steps == 4 * math.ceil(30 / 8)  # 40 images, 10 held out, every epoch counted


def test_head_epochs_probe_a_body_in_inference_mode(tmp_path):
    """In the head epochs the body's dropout is off and BN uses its statistics: the head step's
    loss over an epoch is the one computed here from the fixed features."""
    model = model_with_bn(dropout=0.9)
    recipe = dataclasses.replace(RECIPE, head_epochs=1, epochs=1, learning_rate=1e-9)
    images, y = data()
    train_idx, _ = split_validation(y, recipe.validation_fraction, 3)
    probs = np.asarray(model(scale(images[train_idx].astype(np.float32)), training=False))
    expected = -np.mean(np.log(probs[np.arange(len(train_idx)), y[train_idx]]))
    expected += recipe.l2 * sum(float(np.sum(np.square(w))) for w in
                                [model.get_layer("conv").kernel, model.get_layer("head").kernel])
    result = train(model, recipe, tmp_path)
    assert result.history[0]["loss"] == pytest.approx(expected, rel=1e-4)


def test_head_learning_rate_scales_exactly_the_head_update(tmp_path):
    """One SGD step from the same weights: the head moves ratio times as far, the body the same."""
    one_step = dataclasses.replace(RECIPE, epochs=1, batch_size=64)

    def deltas(recipe, name):
        model = model_with_bn()
        start = {n: layer_weights(model, [n]) for n in ("conv", "head")}
        train(model, recipe, tmp_path, name)
        return {n: [b - a for a, b in zip(start[n], layer_weights(model, [n]))] for n in start}

    plain = deltas(one_step, "plain")
    faster = deltas(dataclasses.replace(one_step, head_learning_rate=0.15), "faster")
    for a, b in zip(plain["head"], faster["head"]):
        np.testing.assert_allclose(b, 3.0 * a, rtol=1e-4, atol=1e-7)
        assert np.abs(a).max() > 1e-5
    for a, b in zip(plain["conv"], faster["conv"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-8)


def test_cosine_rates_by_hand():
    recipe = dataclasses.replace(RECIPE, epochs=4, head_epochs=1, lr_schedule="cosine",
                                 warmup_epochs=1, learning_rate=0.1)
    assert epoch_rates(recipe, 1, 5) is None  # a head epoch: the optimizer's own rate
    assert epoch_rates(dataclasses.replace(recipe, lr_schedule="constant", warmup_epochs=0),
                       3, 5) is None
    rates = np.concatenate([epoch_rates(recipe, epoch, 5) for epoch in range(2, 6)])
    np.testing.assert_allclose(rates[:5], 0.1 * np.arange(1, 6) / 5)  # linear warm-up
    hand = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 15)) for t in range(15)]
    np.testing.assert_allclose(rates[5:], hand)
    assert rates[5] == pytest.approx(0.1) and rates[-1] < 0.002


def test_cosine_schedule_sets_the_optimizer_rate_and_resumes(tmp_path):
    recipe = dataclasses.replace(RECIPE, epochs=3, head_epochs=1, lr_schedule="cosine",
                                 head_learning_rate=0.1)
    first = model_with_bn()
    result = train(first, recipe, tmp_path, "a")
    per_epoch = math.ceil(30 / 8)
    assert [row.get("learning_rate") for row in result.history][1:] == \
        pytest.approx([float(epoch_rates(recipe, e, per_epoch)[-1]) for e in (2, 3, 4)])
    constant = model_with_bn()
    train(constant, dataclasses.replace(recipe, lr_schedule="constant"), tmp_path, "c")
    assert max(np.abs(a - b).max() for a, b in zip(first.get_weights(),
                                                    constant.get_weights())) > 1e-5

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(model_with_bn(), recipe, tmp_path, "b", on_epoch_end=interrupt)
    resumed = model_with_bn()
    again = train(resumed, recipe, tmp_path, "b")
    assert again.resumed_from == 2
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), resumed.get_weights()))


def test_keys_change_only_when_an_option_is_on():
    base = TrainRecipe().as_dict()
    for change in ({"head_epochs": 2}, {"head_learning_rate": 0.01}, {"batchnorm": "frozen"},
                   {"lr_schedule": "cosine"}, {"lr_schedule": "cosine", "warmup_epochs": 1}):
        changed = dataclasses.replace(TrainRecipe(), **change).as_dict()
        assert {k: v for k, v in changed.items() if base.get(k) != v} == change
    assert "head_epochs" not in base and base["batchnorm"] == "moving"


def test_inconsistent_recipes_are_refused(tmp_path):
    raw = {"experiment": {"name": "x", "cells": ["none", "imagenet+ft"]},
           "data": {"dataset": "derm7pt", "root": "d"},
           "finetune": {"head_learning_rate": 0.01, "optimizer": "adam"}}
    with pytest.raises(PipelineError, match=r"finetune recipe .*head_learning_rate needs "
                                            r"optimizer = \"sgd\""):
        validate(raw, tmp_path / "x.toml")
    raw["finetune"] = {"warmup_epochs": 1}
    with pytest.raises(PipelineError, match="warmup_epochs needs lr_schedule"):
        validate(raw, tmp_path / "x.toml")
    raw["finetune"] = {"lr_schedule": "cosine", "lr_decay_factor": 0.5}
    with pytest.raises(PipelineError, match="two learning-rate rules"):
        validate(raw, tmp_path / "x.toml")
    images, y = data()
    with pytest.raises(PipelineError, match="need the new head's layer names"):
        train_classifier(model_with_bn(), images, y, recipe=dataclasses.replace(
            RECIPE, head_epochs=1), preprocess=scale, seed=0, workdir=tmp_path / "w",
            progress=False)


def test_the_report_header_declares_each_recipe_option(tmp_path):
    from pipeline.experiment.config import load_config
    from pipeline.stages.report import recipe_options

    head = '[experiment]\nname = "x"\ncells = ["none"]\n[data]\ndataset = "derm7pt"\nroot = "r"\n'
    path = tmp_path / "x.toml"
    path.write_text(head + '[train]\nbatchnorm = "frozen"\n[pretrain]\nbatchnorm = "precise"\n'
                    '[finetune]\nhead_epochs = 2\nhead_learning_rate = 0.1\n'
                    'lr_schedule = "cosine"\nwarmup_epochs = 1\n', encoding="utf-8")
    assert recipe_options(load_config(path)) == (
        "pretrain: batchnorm precise; finetune: batchnorm frozen, 2 head-only epochs first "
        "(linear probing), head learning rate 0.1, cosine learning-rate schedule, 1 warm-up epochs")
    plain = tmp_path / "plain.toml"
    plain.write_text(head, encoding="utf-8")
    assert recipe_options(load_config(plain)) == ""
