"""Precise batch-normalisation statistics (pipeline.training.batchnorm) and the recipe's
``batchnorm = "precise"``: the statistics are those of the training images, computed independently
here, validation images never enter them, and a network without BatchNormalization is untouched."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.training.augment import epoch_dataset, plain_plan
from pipeline.training.batchnorm import batchnorm_layers, recompute_statistics
from pipeline.training.recipe import TrainRecipe
from pipeline.training.train import split_validation, train_classifier

SIZE = 16
RECIPE = TrainRecipe(epochs=3, batch_size=8, learning_rate=0.05, momentum=0.9,
                     validation_fraction=0.25, augment="none")


def bn_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dropout(0.2)(h)  # after the last BN: it must not disturb the statistics
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))


def data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    images = rng.integers(0, 120, (n, SIZE, SIZE, 3)).astype(np.uint8)
    images[y == 1, 4:12, 4:12] = rng.integers(150, 256, ((y == 1).sum(), 8, 8, 3))
    return images, y


def scale(x):
    return x / 255.0 - 0.5


def conv_statistics(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) variance of the conv layer's outputs over every image and pixel."""
    conv = keras.Model(model.inputs, model.get_layer("conv").output)
    out = np.asarray(conv(scale(images.astype(np.float32)), training=False), np.float64)
    return out.mean(axis=(0, 1, 2)), out.var(axis=(0, 1, 2))


def batches(images, y, index, batch_size):
    return epoch_dataset(images, y, plain_plan(index), classes=2, batch_size=batch_size,
                         preprocess=scale)


def test_statistics_are_those_of_every_image_pooled_over_uneven_batches():
    images, y = data(n=10)
    model = bn_model()
    weights = [w.copy() for w in model.get_weights()]
    count = recompute_statistics(model, batches(images, y, np.arange(10), 4))  # 4 + 4 + 2
    assert count == 10
    mean, variance = conv_statistics(model, images)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-6)
    # only the moving statistics changed
    after = model.get_weights()
    changed = [i for i, (a, b) in enumerate(zip(weights, after)) if not np.array_equal(a, b)]
    names = [v.path for v in model.weights]
    assert sorted(names[i].split("/")[-1] for i in changed) == ["moving_mean", "moving_variance"]


def test_dropout_before_a_batchnorm_layer_does_not_enter_its_statistics():
    # EfficientNet's drop-connect sits before BatchNormalization layers: at inference every
    # branch is present, so the statistics must be taken without dropping any.
    images, y = data(n=12)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.Dropout(0.5, noise_shape=(None, 1, 1, 1))(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    recompute_statistics(model, batches(images, y, np.arange(12), 4))
    mean, variance = conv_statistics(model, images)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-6)
    assert model.layers[2].rate == 0.5  # restored


def test_a_network_without_batchnorm_is_untouched():
    images, y = data(n=8)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    before = [w.copy() for w in model.get_weights()]
    assert batchnorm_layers(model) == []
    assert recompute_statistics(model, batches(images, y, np.arange(8), 4)) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_precise_training_uses_the_training_images_only(tmp_path):
    images, y = data()
    recipe = dataclasses.replace(RECIPE, batchnorm="precise")
    model = bn_model()
    train_classifier(model, images, y, recipe=recipe, preprocess=scale, seed=1,
                     workdir=tmp_path / "precise", progress=False)
    train_idx, val_idx = split_validation(y, recipe.validation_fraction, 1)
    bn = model.get_layer("bn")
    mean, variance = conv_statistics(model, images[train_idx])
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-6)
    with_validation, _ = conv_statistics(model, images)
    assert np.abs(bn.moving_mean.numpy() - with_validation).max() > 1e-4  # the check can fail
    # the default keeps Keras's moving averages, which are not these statistics
    moving = bn_model()
    train_classifier(moving, images, y, recipe=RECIPE, preprocess=scale, seed=1,
                     workdir=tmp_path / "moving", progress=False)
    mean, _ = conv_statistics(moving, images[train_idx])
    assert np.abs(moving.get_layer("bn").moving_mean.numpy() - mean).max() > 1e-3


def test_precise_training_is_deterministic_and_resumes(tmp_path):
    images, y = data()
    recipe = dataclasses.replace(RECIPE, batchnorm="precise")

    def run(workdir, **kwargs):
        model = bn_model()
        result = train_classifier(model, images, y, recipe=recipe, preprocess=scale, seed=2,
                                  workdir=workdir, progress=False, **kwargs)
        return model, result

    first, first_result = run(tmp_path / "a")
    second, _ = run(tmp_path / "b")
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights()))

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "c", on_epoch_end=interrupt)
    resumed, resumed_result = run(tmp_path / "c")
    assert resumed_result.resumed_from == 2
    assert [r["val_loss"] for r in resumed_result.history] == \
        [r["val_loss"] for r in first_result.history]
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), resumed.get_weights()))


def test_an_unknown_mode_is_refused(tmp_path):
    images, y = data()
    recipe = dataclasses.replace(RECIPE, batchnorm="running")
    with pytest.raises(PipelineError, match=r"recipe.batchnorm must be one of moving, precise"):
        train_classifier(bn_model(), images, y, recipe=recipe, preprocess=scale, seed=0,
                         workdir=tmp_path, progress=False)
