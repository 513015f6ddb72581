"""Batch-normalisation statistics recomputed over the training images ("precise BN").

A BatchNormalization layer normalises with the current batch's statistics while training and with
moving averages of them at inference (validation, feature extraction). With Keras's momentum 0.99
the averages forget their start slowly: after a short run of a few dozen SGD steps ~70% of them is
still their initial value (0 and 1 for a network trained from scratch, ImageNet's statistics for a
pretrained one), so the network evaluated at inference is not the network that was trained, and its
validation accuracy can sit at the majority-class share while its training loss falls.

``recompute_statistics`` replaces the averages by the statistics of the training images under the
current weights (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, section 3: PreciseBN): the
model runs in training mode over the training images, unaugmented, batch by batch, and each layer's
mean and variance are pooled over every image. Dropout layers (EfficientNet's drop-connect among
them) are switched off meanwhile: at inference every residual branch is present, so statistics
taken with branches randomly dropped would not be those the network sees. The training recipe calls it after every epoch
when ``batchnorm = "precise"``; the weights SGD learns are untouched, and a network without
BatchNormalization (VGG) is unaffected. Validation images never enter the statistics.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from pipeline.models.initializers import walk_layers

from pipeline.training.recipe import BATCHNORM_MODES  # noqa: F401  (re-exported)

# model -> (its BatchNormalization layers, the compiled statistics step)
_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def set_trainable(layers, trainable: bool) -> list:
    """Set ``layer.trainable`` on each of ``layers``; returns ``(layer, previous)`` pairs for
    ``restore_trainable``. A BatchNormalization layer that is not trainable runs in inference
    mode (its moving statistics, not the batch's) even when the model is called with
    ``training=True``, and its scale and offset leave the trainable variables (Keras 3)."""
    changed = [(layer, layer.trainable) for layer in layers]
    for layer in layers:
        layer.trainable = trainable
    return changed


def restore_trainable(changed: list) -> None:
    """Undo ``set_trainable`` (in reverse order)."""
    for layer, previous in reversed(changed):
        layer.trainable = previous


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of ``model`` (nested models included), in order."""
    return [layer for layer in walk_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _statistics_step(model):
    """The model's layers and a compiled step giving each layer's batch mean and variance.

    Keras updates ``moving = momentum * moving + (1 - momentum) * batch`` in training mode; with
    the moving values set to 0 first, ``batch = moving / (1 - momentum)`` after the forward pass.
    """
    if model not in _STEPS:
        layers = batchnorm_layers(model)

        @tf.function(reduce_retracing=True)
        def step(x):
            for layer in layers:
                layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
                layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
            model(x, training=True)
            return ([tf.cast(l.moving_mean, tf.float32) / (1.0 - l.momentum) for l in layers],
                    [tf.cast(l.moving_variance, tf.float32) / (1.0 - l.momentum) for l in layers])

        _STEPS[model] = (layers, step)
    return _STEPS[model]


def recompute_statistics(model, data) -> int:
    """Set every BatchNormalization layer's moving mean and variance to the statistics of ``data``.

    Args:
        model: a Keras model (unchanged but for the moving statistics).
        data: batches ``(x, anything)`` of preprocessed training images (a ``tf.data`` dataset).

    Returns:
        The number of images pooled (0 and nothing changed for a model without
        BatchNormalization or empty ``data``).
    """
    layers, step = _statistics_step(model)
    if not layers:
        return 0
    # Keras's Dropout reads its rate when called (traced): 0 while the statistics are taken.
    dropouts = [l for l in walk_layers(model) if isinstance(l, keras.layers.Dropout)]
    rates = [l.rate for l in dropouts]
    for layer in dropouts:
        layer.rate = 0.0
    try:
        return _pool(layers, step, data)
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate


def _pool(layers, step, data) -> int:
    saved = [(l.moving_mean.numpy(), l.moving_variance.numpy()) for l in layers]
    first = [np.zeros(l.moving_mean.shape, np.float64) for l in layers]
    second = [np.zeros(l.moving_mean.shape, np.float64) for l in layers]
    count = 0
    for x, _ in data:
        n = int(tf.nest.flatten(x)[0].shape[0])  # x may be (images, metadata)
        means, variances = step(x)
        for i, (mean, variance) in enumerate(zip(means, variances)):
            mean = mean.numpy().astype(np.float64)
            first[i] += n * mean
            second[i] += n * (variance.numpy().astype(np.float64) + mean ** 2)
        count += n
    for layer, (mean, variance), (s1, s2) in zip(layers, saved, zip(first, second)):
        if count:
            pooled_mean = s1 / count
            mean, variance = pooled_mean, np.maximum(s2 / count - pooled_mean ** 2, 0.0)
        layer.moving_mean.assign(np.asarray(mean, layer.moving_mean.dtype))
        layer.moving_variance.assign(np.asarray(variance, layer.moving_variance.dtype))
    return count
