"""Differentiable targets for attributions: from pixels to one score per image.

``svm_target`` is the paper's classifier seen through the network: pixels (0-255 RGB) ->
the network's preprocessing -> the feature layer -> L2 normalisation -> ``w . f + b``, the linear
SVM's decision score (``pipeline.classifiers.svm``), differentiable end to end. ``linear_svm``
reads ``w`` and ``b`` from a fitted ``make_svm`` pipeline.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from pipeline.errors import PipelineError


def linear_svm(model: Any) -> tuple[np.ndarray, float]:
    """The weights of a fitted 2-class linear SVM on L2-normalised features.

    Args:
        model: a fitted ``pipeline.classifiers.svm.make_svm`` pipeline (``Normalizer`` then a
            linear SVM with ``coef_`` of shape (1, n_features)).

    Returns:
        ``(w, b)``: array of shape (n_features,) and the intercept, so that the decision score of
        features ``x`` is ``w . x / |x| + b``.
    """
    svm = model[-1] if hasattr(model, "steps") else model
    coef = np.asarray(getattr(svm, "coef_", np.empty((0, 0))), dtype=np.float64)
    if coef.ndim != 2 or coef.shape[0] != 1:
        raise PipelineError(f"attributions need a fitted 2-class linear SVM (coef_ of shape "
                            f"(1, n_features)); got coef_ of shape {coef.shape}.")
    return coef[0], float(np.asarray(svm.intercept_).ravel()[0])


def svm_score(w: np.ndarray, b: float) -> Callable:
    """Features (tensor of shape (n, d)) -> decision scores ``w . f / |f| + b``, shape (n,)."""
    import tensorflow as tf

    w_t = tf.constant(np.asarray(w, dtype=np.float32)[:, None])

    def score(features):
        flat = tf.reshape(tf.cast(features, tf.float32), [tf.shape(features)[0], -1])
        return tf.reshape(tf.matmul(tf.math.l2_normalize(flat, axis=1), w_t), [-1]) + b

    return score


def svm_target(feature_model: Any, preprocess: Callable, w: np.ndarray, b: float) -> Callable:
    """Pixels -> the SVM's decision score through the network.

    Args:
        feature_model: ``keras.Model`` from network input to the feature layer
            (``pipeline.models.build.feature_model``).
        preprocess: pixels (float32 tensor (n, h, w, 3), RGB 0-255) -> network input, as the
            features were made (``pipeline.models.preprocessing.preprocess`` with the entry's
            spec and mean).
        w, b: from ``linear_svm``.

    Returns:
        A function from a float32 tensor of shape (n, h, w, 3) to scores of shape (n,).
    """
    score = svm_score(w, b)

    def target(pixels):
        return score(feature_model(preprocess(pixels), training=False))

    return target
