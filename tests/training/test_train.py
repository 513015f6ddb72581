"""Tests for pipeline.training.train and pipeline.training.augment: tiny Keras models on 32x32 synthetic images."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.training.augment import epoch_dataset, epoch_length, epoch_plan
from pipeline.errors import PipelineError
from pipeline.training.recipe import TrainRecipe
from pipeline.training.train import CHECKPOINT, compute_mean, split_validation, train_classifier

SIZE = 32
# Faster than the paper's recipe (lr 1e-3, momentum 0.1) so a few epochs learn the toy task; the
# high momentum also makes a resume that lost the optimizer state end elsewhere.
RECIPE = TrainRecipe(epochs=6, batch_size=8, learning_rate=0.05, momentum=0.9,
                     rotation_degrees=30.0)


def squares(n_dark: int = 44, n_bright: int = 22, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark noise (class 0) vs dark noise with a bright 16x16 square (class 1), imbalanced 2:1."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n_dark + n_bright, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n_dark, n_dark + n_bright):
        r, c = rng.integers(0, SIZE - 16, 2)
        images[i, r:r + 16, c:c + 16] = rng.integers(180, 256, (16, 16, 3))
    return images, np.repeat([0, 1], [n_dark, n_bright])


def tiny_model(classes: int = 2, seed: int = 0, size: int = SIZE) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dropout(0.3)(h)  # dropout's random state must be reproducible too
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(h))


def scale(x):
    return x / 255.0 - 0.5


def train(workdir, *, seed=0, model_seed=0, recipe=RECIPE, **kwargs):
    images, y = squares()
    model = tiny_model(seed=model_seed)
    result = train_classifier(model, images, y, recipe=recipe, preprocess=scale, seed=seed,
                              workdir=workdir, progress=False, **kwargs)
    return model, result


def weights_equal(a: keras.Model, b: keras.Model) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights(), strict=True))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, shared by the learning, determinism and resume tests."""
    return train(tmp_path_factory.mktemp("reference"))


def test_compute_mean_matches_numpy_on_a_memmap(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    mean = compute_mean(mapped, chunk=3)
    assert mean.shape == (3,) and mean.dtype == np.float64
    assert np.allclose(mean, images.astype(np.float64).mean(axis=(0, 1, 2)), rtol=1e-12)


def test_split_validation_is_stratified_seeded_and_disjoint():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    train_idx, val_idx = split_validation(y, 0.1, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(100))
    assert np.bincount(y[val_idx]).tolist() == [5, 3, 2]
    assert np.array_equal(split_validation(y, 0.1, seed=3)[1], val_idx)
    assert not np.array_equal(split_validation(y, 0.1, seed=4)[1], val_idx)


def test_minority_augmentation_balances_each_epoch():
    images = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    y = np.repeat([0, 1, 2], [20, 7, 3])
    train_idx = np.arange(30)
    plan = epoch_plan(y, train_idx, recipe=TrainRecipe(), seed=0, epoch=1, image_size=(8, 8))
    targets = np.concatenate([t for _, t in epoch_dataset(images, y, plan, classes=3,
                                                          batch_size=7).as_numpy_iterator()])
    assert targets.sum(axis=0).tolist() == [20, 20, 20]
    assert len(plan.index) == epoch_length(y, TrainRecipe()) == 60
    # every image once as it is; only minority copies transformed
    assert np.array_equal(np.sort(plan.index[~plan.augment]), train_idx)
    assert np.all(y[plan.index[plan.augment]] > 0)
    assert np.bincount(y[plan.index[plan.augment]]).tolist() == [0, 13, 17]
    # class 1 (7 images) needs 13 copies: one round + 6; class 2 (3 images) 17: 5 rounds + 2
    copies = np.bincount(plan.index[plan.augment], minlength=30)
    assert sorted(copies[20:27].tolist()) == [1] + [2] * 6
    assert sorted(copies[27:].tolist()) == [5, 6, 6]
    # the order is shuffled per epoch, seeded by (seed, epoch)
    again = epoch_plan(y, train_idx, recipe=TrainRecipe(), seed=0, epoch=1, image_size=(8, 8))
    later = epoch_plan(y, train_idx, recipe=TrainRecipe(), seed=0, epoch=2, image_size=(8, 8))
    assert np.array_equal(again.index, plan.index) and np.array_equal(again.transform,
                                                                      plan.transform)
    assert not np.array_equal(later.index, plan.index)


def test_augment_none_shows_each_training_image_once_unaltered():
    y = np.repeat([0, 1], [20, 5])
    recipe = TrainRecipe(augment="none")
    plan = epoch_plan(y, np.arange(25), recipe=recipe, seed=0, epoch=1)
    assert sorted(plan.index.tolist()) == list(range(25)) and not plan.augment.any()
    assert epoch_length(y, recipe) == 25


def test_augmentation_of_an_example_does_not_depend_on_the_batch_size():
    images, y = squares()
    plan = epoch_plan(y, np.arange(len(y)), recipe=TrainRecipe(), seed=5, epoch=3,
                      image_size=(SIZE, SIZE))
    runs = [np.concatenate([x for x, _ in epoch_dataset(images, y, plan, classes=2,
                                                         batch_size=size).as_numpy_iterator()])
            for size in (1, 4, 48)]
    assert np.array_equal(runs[0], runs[1]) and np.array_equal(runs[0], runs[2])
    augmented = runs[0][plan.augment]
    assert not np.array_equal(augmented, images[plan.index[plan.augment]].astype(np.float32))
    assert np.array_equal(runs[0][~plan.augment], images[plan.index[~plan.augment]])


def test_flip_only_augmentation_gives_exact_flips():
    images, y = squares()
    recipe = TrainRecipe(scale_range=(1.0, 1.0), rotation_degrees=0.0)
    plan = epoch_plan(y, np.arange(len(y)), recipe=recipe, seed=0, epoch=1,
                      image_size=(SIZE, SIZE))
    x = np.concatenate([b for b, _ in epoch_dataset(images, y, plan, classes=2,
                                                     batch_size=16).as_numpy_iterator()])
    kinds = set()
    for row in np.flatnonzero(plan.augment):
        source = images[plan.index[row]]
        flips = [source, source[:, ::-1], source[::-1], source[::-1, ::-1]]
        matches = [k for k, f in enumerate(flips) if np.array_equal(x[row], f)]
        assert matches, f"example {row} is not a flip of image {plan.index[row]}"
        kinds.add(matches[0])
    assert len(kinds) > 1


@pytest.mark.slow
def test_training_lowers_validation_loss_and_restores_the_best_weights(reference):
    model, result = reference
    losses = [row["val_loss"] for row in result.history]
    assert len(result.history) == RECIPE.epochs and result.resumed_from == 0
    assert result.best_val_loss == min(losses) < losses[0]
    assert result.history[result.best_epoch - 1]["val_loss"] == result.best_val_loss
    assert result.images_per_second > 0
    images, y = squares()
    _, val_idx = split_validation(y, RECIPE.validation_fraction, seed=0)
    probabilities = model.predict(scale(images[val_idx].astype(np.float32)), verbose=0)
    cross_entropy = -np.mean(np.log(probabilities[np.arange(len(val_idx)), y[val_idx]]))
    assert np.isclose(cross_entropy, result.best_val_loss, rtol=1e-4), "best weights not restored"
    # the kept epoch's accuracy and balanced accuracy (mean recall per class), recomputed
    predicted, truth = probabilities.argmax(axis=1), y[val_idx]
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] == pytest.approx(np.mean(predicted == truth))
    recalls = [np.mean(predicted[truth == k] == k) for k in (0, 1)]
    assert best["val_balanced_accuracy"] == pytest.approx(np.mean(recalls))


@pytest.mark.slow
def test_same_seed_gives_identical_weights(reference, tmp_path):
    model, result = reference
    again, again_result = train(tmp_path / "again")
    assert weights_equal(model, again)
    assert again_result.history[-1]["val_loss"] == result.history[-1]["val_loss"]
    other, _ = train(tmp_path / "other", seed=1)
    assert not weights_equal(model, other)


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(reference, tmp_path):
    model, result = reference

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, on_epoch_end=interrupt)
    assert (tmp_path / CHECKPOINT).is_file()
    told = []
    resumed, resumed_result = train(tmp_path, notify=told.append)
    assert resumed_result.resumed_from == 2
    # the person running the stage is told, not only a logger nobody configured
    assert told == [f"resuming from {tmp_path / CHECKPOINT} after epoch 2 of {RECIPE.epochs}"]
    assert [r["val_loss"] for r in resumed_result.history] == \
        [r["val_loss"] for r in result.history]
    assert weights_equal(model, resumed)
    # a finished run is not trained again: it restores the best weights from the checkpoint
    done, done_result = train(tmp_path, on_epoch_end=interrupt)
    assert done_result.resumed_from == RECIPE.epochs and done_result.best_epoch == result.best_epoch
    assert weights_equal(model, done)


def test_mismatching_checkpoint_names_the_field(tmp_path):
    one_epoch = TrainRecipe(epochs=1, batch_size=16)
    train(tmp_path, recipe=one_epoch)
    with pytest.raises(PipelineError, match=r"'seed' is 0 there and 1 now.*Delete"):
        train(tmp_path, recipe=one_epoch, seed=1)
    with pytest.raises(PipelineError, match="'initial_weights'"):
        train(tmp_path, recipe=one_epoch, model_seed=7)
    with pytest.raises(PipelineError, match="'recipe'"):
        train(tmp_path, recipe=TrainRecipe(epochs=1, batch_size=16, l2=0.0))


def test_mixed_precision_only_on_a_gpu(tmp_path):
    lines = []
    model, _ = train(tmp_path, recipe=TrainRecipe(epochs=1, batch_size=16, mixed_precision=True),
                     log=lines.append)
    expected = "mixed_float16 on the GPU" if tf.config.list_physical_devices("GPU") \
        else "mixed_precision is ignored"
    assert any(expected in line for line in lines), lines
    assert any(line.startswith("epoch 1/1:") for line in lines)
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers), "policy kept"


def _bad(tmp_path, images, y, model=None):
    train_classifier(model or tiny_model(), images, y, recipe=RECIPE, preprocess=scale, seed=0,
                     workdir=tmp_path, progress=False)


@pytest.mark.parametrize("case, message", [
    ("singleton", r"at least 2 images.*\{1: 1\}"),
    ("absent", r"classes \[2\] have no image"),
    ("float", "must be a uint8 array"),
    ("rank", "must be a uint8 array"),
    ("length", "66 rows but y has 65"),
    ("range", r"class indices 0\.\.1"),
    ("size", "model expects"),
    ("logits", "must be a softmax"),
])
def test_bad_input_raises_pipeline_error(tmp_path, case, message):
    images, y = squares()
    model = None
    if case == "singleton":
        y = np.where(np.arange(len(y)) == 0, 1, 0)
    elif case == "absent":
        model = tiny_model(classes=3)
    elif case == "float":
        images = images.astype(np.float32)
    elif case == "rank":
        images = images[..., 0]
    elif case == "length":
        y = y[:-1]
    elif case == "range":
        y = y + 1
    elif case == "size":
        model = tiny_model(size=24)
    elif case == "logits":
        inputs = keras.Input((SIZE, SIZE, 3))
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(PipelineError, match=message):
        _bad(tmp_path, images, y, model)


def test_a_model_trained_again_with_new_weights_ends_as_a_fresh_one_would(reference, tmp_path):
    """Reusing one model (and its compiled steps) for the next run, as the finetune stage does,
    gives the weights a fresh model and optimizer give."""
    model, result = reference
    images, y = squares()
    reused = tiny_model(seed=0)
    start = [w.numpy().copy() for w in reused.weights]
    other = TrainRecipe(epochs=2, batch_size=8, learning_rate=0.05, momentum=0.9,
                        rotation_degrees=30.0)
    train_classifier(reused, images, y, recipe=RECIPE, preprocess=scale, seed=3,
                     workdir=tmp_path / "first", progress=False)  # compiles its steps
    reused.set_weights(start)  # the next run starts from the same initial weights
    second = train_classifier(reused, images, y, recipe=RECIPE, preprocess=scale, seed=0,
                              workdir=tmp_path / "second", progress=False)
    assert weights_equal(reused, model), "a reused model drifted from a fresh one"
    assert [r["val_loss"] for r in second.history] == [r["val_loss"] for r in result.history]
    reused.set_weights(start)  # other optimizer settings: new steps, still the fresh result
    train_classifier(reused, images, y, recipe=other, preprocess=scale, seed=0,
                     workdir=tmp_path / "third", progress=False)
    fresh = tiny_model(seed=0)
    train_classifier(fresh, images, y, recipe=other, preprocess=scale, seed=0,
                     workdir=tmp_path / "fourth", progress=False)
    assert weights_equal(reused, fresh)
