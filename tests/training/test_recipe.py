"""Tests of Kim & Rocheteau's recipe options (pipeline.training.recipe, .optimizer, .augment,
.train): Adam, early stopping, learning-rate decay on a plateau, every class augmented,
brightness and saturation shifts; Menegola's defaults and cache keys unchanged; deterministic and
resumable."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.experiment.schema import SCHEMA
from pipeline.training.augment import epoch_dataset, epoch_length, epoch_plan
from pipeline.training.optimizer import make_optimizer
from pipeline.training.recipe import EXTENSION_DEFAULTS, TrainRecipe
from pipeline.training.train import CHECKPOINT, decays, stops_early
from tests.training.test_train import squares, tiny_model, train, weights_equal

# Menegola's recipe as it was before these keys existed: its cache keys must not change.
MENEGOLA_KEYS = {"epochs", "batch_size", "learning_rate", "momentum", "nesterov", "l2",
                 "validation_fraction", "augment", "scale_range", "rotation_degrees", "flip",
                 "mixed_precision", "batchnorm"}
KR = TrainRecipe(epochs=8, batch_size=8, learning_rate=0.01, optimizer="adam",
                 early_stopping_patience=2, lr_decay_factor=0.4, lr_decay_patience=1,
                 augment="all", brightness_range=0.2, saturation_range=0.3, rotation_degrees=30.0)


def test_defaults_are_menegolas_and_leave_the_cache_keys_alone():
    recipe = TrainRecipe()
    assert set(recipe.as_dict()) == MENEGOLA_KEYS
    assert (recipe.optimizer, recipe.early_stopping_patience, recipe.lr_decay_factor,
            recipe.brightness_range, recipe.saturation_range) == ("sgd", 0, 1.0, 0.0, 0.0)
    changed = dataclasses.replace(recipe, optimizer="adam").as_dict()
    assert set(changed) == MENEGOLA_KEYS | {"optimizer"} and changed["optimizer"] == "adam"
    for name in EXTENSION_DEFAULTS:  # every key is configurable, defaulting to Menegola's value
        assert SCHEMA["train"][name].default == EXTENSION_DEFAULTS[name]
        assert SCHEMA["finetune"][name].default is None


def test_make_optimizer():
    assert isinstance(make_optimizer(TrainRecipe()), keras.optimizers.SGD)
    adam = make_optimizer(TrainRecipe(optimizer="adam", learning_rate=0.003))
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate.numpy()) == pytest.approx(0.003)
    with pytest.raises(PipelineError, match="sgd, adam"):
        make_optimizer(TrainRecipe(optimizer="rmsprop"))


def test_stopping_and_decay_rules():
    recipe = TrainRecipe(early_stopping_patience=3, lr_decay_factor=0.4, lr_decay_patience=1)
    assert not stops_early(4, 2, recipe) and stops_early(5, 2, recipe)
    assert not stops_early(50, 1, TrainRecipe())  # patience 0: never (Menegola)
    assert decays([], 3, 2, recipe)  # one epoch without improvement
    assert not decays([], 3, 3, recipe)  # this epoch improved
    # counted again from the last decay: decayed after epoch 3, so not after 3 again but after 4
    history = [{"epoch": 3, "lr_decayed": True}]
    assert decays(history, 4, 2, recipe)
    slow = dataclasses.replace(recipe, lr_decay_patience=2)
    assert not decays(history, 4, 2, slow) and decays(history, 5, 2, slow)
    assert not decays([], 9, 1, TrainRecipe())  # factor 1: never


def test_augment_all_transforms_every_training_image_once():
    y = np.repeat([0, 1], [20, 5])
    train_idx = np.arange(0, 25, 1)
    recipe = TrainRecipe(augment="all")
    plan = epoch_plan(y, train_idx, recipe=recipe, seed=0, epoch=1, image_size=(8, 8))
    assert len(plan.index) == epoch_length(y, recipe) == 25  # unbalanced, each image once
    assert np.array_equal(np.sort(plan.index), train_idx)
    assert plan.augment.all()
    assert not np.isclose(plan.transform, [1, 0, 0, 0, 1, 0, 0, 0]).all(axis=1).any()
    assert plan.color is None


def test_colour_factors_are_in_range_and_leave_the_geometry_alone():
    y = np.repeat([0, 1], [20, 5])
    plain = TrainRecipe()
    coloured = TrainRecipe(brightness_range=0.2, saturation_range=0.5)
    a = epoch_plan(y, np.arange(25), recipe=plain, seed=3, epoch=2)
    b = epoch_plan(y, np.arange(25), recipe=coloured, seed=3, epoch=2)
    assert np.array_equal(a.index, b.index) and np.array_equal(a.transform, b.transform)
    assert np.all(b.color[~b.augment] == 1)
    shifted = b.color[b.augment]
    assert np.all(np.abs(shifted[:, 0] - 1) <= 0.2) and np.all(np.abs(shifted[:, 1] - 1) <= 0.5)
    assert shifted[:, 0].std() > 0.05 and shifted[:, 1].std() > 0.1
    again = epoch_plan(y, np.arange(25), recipe=coloured, seed=3, epoch=2)
    assert np.array_equal(again.color, b.color)


def test_colour_shift_applied_to_the_pixels():
    # Identity geometry (no scaling, rotation or flip): only the colour changes.
    recipe = TrainRecipe(augment="all", scale_range=(1.0, 1.0), rotation_degrees=0.0, flip=False,
                         brightness_range=0.3, saturation_range=0.6)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    y = np.array([0, 0, 0, 1, 1, 1])
    plan = epoch_plan(y, np.arange(6), recipe=recipe, seed=1, epoch=1, image_size=(4, 4))
    x = np.concatenate([b[0].numpy() for b in epoch_dataset(images, y, plan, classes=2,
                                                             batch_size=4)])
    source = images[plan.index].astype(np.float64)
    bright = source * plan.color[:, 0, None, None, None]
    grey = (bright * [0.299, 0.587, 0.114]).sum(-1, keepdims=True)
    expected = np.clip(grey + (bright - grey) * plan.color[:, 1, None, None, None], 0, 255)
    np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-3,
                               err_msg="colour-shifted pixels differ from the numpy formula")


@pytest.fixture(scope="module")
def kr_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("kr"), recipe=KR)


def test_kim_rocheteau_recipe_trains_stops_and_decays_by_its_rules(kr_run):
    model, result = kr_run
    history = result.history
    losses = [row["val_loss"] for row in history]
    # Recomputed here from the validation losses: the best epoch, where training had to stop.
    best, stop = 0, None
    for epoch, loss in enumerate(losses, 1):
        if loss < (losses[best - 1] if best else np.inf):
            best = epoch
        if epoch - best >= KR.early_stopping_patience:
            stop = epoch
            break
    assert result.best_epoch == best
    assert len(history) == (stop or KR.epochs)
    # The learning rate starts at 0.01 and is multiplied by 0.4 after each decayed epoch.
    rate = KR.learning_rate
    for row in history:
        assert row["learning_rate"] == pytest.approx(rate, rel=1e-5)
        rate *= KR.lr_decay_factor if row["lr_decayed"] else 1.0
    assert history[0]["val_loss"] > result.best_val_loss or result.best_epoch == 1


def test_kim_rocheteau_recipe_is_deterministic_and_resumable(kr_run, tmp_path):
    model, result = kr_run
    again, again_result = train(tmp_path / "again", recipe=KR)
    assert weights_equal(model, again)

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", recipe=KR, on_epoch_end=interrupt)
    assert (tmp_path / "resumed" / CHECKPOINT).is_file()
    resumed, resumed_result = train(tmp_path / "resumed", recipe=KR)
    assert resumed_result.resumed_from == 2
    assert [r["learning_rate"] for r in resumed_result.history] == \
        [r["learning_rate"] for r in result.history]
    assert [r["val_loss"] for r in resumed_result.history] == \
        [r["val_loss"] for r in result.history]
    assert weights_equal(model, resumed)


def test_bad_recipe_values_are_refused(tmp_path):
    images, y = squares(10, 6)
    from pipeline.training.train import train_classifier
    with pytest.raises(PipelineError, match="lr_decay_factor"):
        train_classifier(tiny_model(), images, y, recipe=TrainRecipe(lr_decay_factor=1.5),
                         preprocess=lambda x: x, seed=0, workdir=tmp_path, progress=False)


def test_a_given_validation_part_replaces_the_recipe_split(tmp_path):
    images, y = squares()
    validation = np.r_[0:8, 44:50]  # 8 dark, 6 bright images
    recipe = TrainRecipe(epochs=2, batch_size=8, learning_rate=0.05, momentum=0.9)
    from pipeline.training.train import train_classifier
    result = train_classifier(tiny_model(), images, y, recipe=recipe, preprocess=lambda x: x / 255,
                              seed=0, workdir=tmp_path / "a", progress=False,
                              validation=validation)
    # majority share of that part: 8 of 14, not the recipe split's 2/3
    assert result.val_majority == pytest.approx(8 / 14)
    # the training epoch is built from the other 52 images: 36 dark and 16 bright, balanced
    assert result.steps == 2 * int(np.ceil(2 * 36 / 8))
    with pytest.raises(PipelineError, match="distinct positions"):
        train_classifier(tiny_model(), images, y, recipe=recipe, preprocess=lambda x: x,
                         seed=0, workdir=tmp_path / "b", progress=False,
                         validation=np.array([70]))
