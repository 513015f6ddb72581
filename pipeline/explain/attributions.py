"""Integrated gradients and Grad-CAM on ``tf.GradientTape``.

``integrated_gradients`` (Sundararajan et al. 2017) integrates the gradient of a target along the
straight path from a baseline (a black image by default) to the image, by the trapezoid rule on
``steps`` equal intervals, evaluating the gradients ``batch_size`` interpolation points at a time;
completeness (the attributions sum to ``f(x) - f(baseline)``) holds up to the quadrature error,
which ``Attribution`` reports. ``grad_cam`` (Selvaraju et al. 2017) weighs a convolutional layer's
channels by the spatial mean of the target's gradient, keeps the positive part of the weighted sum
and resizes it to the image. Both run wherever TensorFlow places them (the GPU when it sees one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pipeline.errors import PipelineError

DEFAULT_STEPS = 64
METHODS = ("ig", "gradcam")  # integrated gradients, Grad-CAM


@dataclass(frozen=True)
class Attribution:
    """One image's attribution.

    Attributes:
        values: array of the image's shape (h, w, 3) for integrated gradients, (h, w) for Grad-CAM.
        f_x: the target at the image.
        f_baseline: the target at the baseline (integrated gradients; NaN for Grad-CAM).
        attribution_sum: the sum of ``values`` (for integrated gradients ~ f_x - f_baseline).
    """

    values: np.ndarray
    f_x: float
    f_baseline: float
    attribution_sum: float

    @property
    def completeness_error(self) -> float:
        """|sum - (f_x - f_baseline)| relative to |f_x - f_baseline| (integrated gradients)."""
        delta = self.f_x - self.f_baseline
        return abs(self.attribution_sum - delta) / max(abs(delta), 1e-12)


def _check_image(image: Any) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3 or not np.all(np.isfinite(x)):
        raise PipelineError(f"an image to explain must be a finite array of shape (h, w, c); got "
                            f"shape {x.shape}.")
    return x


def trapezoid_weights(steps: int) -> np.ndarray:
    """Weights of the trapezoid rule on ``steps`` equal intervals of [0, 1]: shape (steps + 1,)."""
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise PipelineError(f"integrated gradients need steps >= 1 (an int); got {steps!r}.")
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] /= 2
    return weights


def integrated_gradients(target: Callable, image: Any, baseline: Any | None = None, *,
                         steps: int = DEFAULT_STEPS, batch_size: int = 16) -> Attribution:
    """Integrated gradients of ``target`` for one image.

    Args:
        target: maps a float32 tensor of shape (n, h, w, c) to a tensor of shape (n,), one score
            per image, differentiably (e.g. ``pipeline.explain.targets.svm_target``).
        image: array of shape (h, w, c), in the units ``target`` takes (e.g. pixels 0-255).
        baseline: array of the image's shape; default zeros (a black image).
        steps: intervals of the trapezoid rule (``steps + 1`` gradient evaluations).
        batch_size: interpolation points per gradient evaluation.

    Returns:
        ``Attribution`` with ``values`` of shape (h, w, c).
    """
    import tensorflow as tf

    x = _check_image(image)
    base = np.zeros_like(x) if baseline is None else np.asarray(baseline, dtype=np.float32)
    if base.shape != x.shape:
        raise PipelineError(f"the baseline must have the image's shape {x.shape}; got {base.shape}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise PipelineError(f"batch_size must be an int >= 1; got {batch_size!r}.")
    weights = trapezoid_weights(steps)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    x_t, base_t = tf.constant(x), tf.constant(base)
    total = np.zeros(x.shape, dtype=np.float64)
    ends = {}
    for start in range(0, steps + 1, batch_size):
        a = tf.constant(alphas[start:start + batch_size])[:, None, None, None]
        points = base_t[None] + a * (x_t - base_t)[None]
        with tf.GradientTape() as tape:
            tape.watch(points)
            values = tf.reshape(target(points), [-1])
        if values.shape[0] != points.shape[0]:
            raise PipelineError(f"the target must give one score per image; got "
                                f"{values.shape[0]} for {points.shape[0]} images.")
        grads = tape.gradient(values, points)
        if grads is None:
            raise PipelineError("the target's score does not depend on its input (no gradient).")
        w = weights[start:start + batch_size]
        total += np.tensordot(w, grads.numpy().astype(np.float64), axes=1)
        for i, value in zip(range(start, start + len(w)), values.numpy()):
            if i in (0, steps):
                ends[i] = float(value)
    attribution = (x - base).astype(np.float64) * total
    return Attribution(values=attribution.astype(np.float32), f_x=ends[steps],
                       f_baseline=ends[0], attribution_sum=float(attribution.sum()))


def grad_cam(model: Any, layer: str, score: Callable, image: Any) -> Attribution:
    """Grad-CAM of one image on one convolutional layer.

    Args:
        model: a ``keras.Model`` from (n, h, w, c) inputs to an output ``score`` reads.
        layer: the name of a layer of ``model`` with 4-D output (n, h', w', channels).
        score: maps ``model``'s output tensor to one score per image, shape (n,), differentiably
            (e.g. an SVM's decision function on the features).
        image: array of shape (h, w, c), the model's input (already preprocessed).

    Returns:
        ``Attribution`` with ``values`` of shape (h, w), in [0, 1] (0 everywhere when no part of
        the layer raises the score), ``f_baseline`` NaN.
    """
    import keras
    import tensorflow as tf

    x = _check_image(image)
    names = [l.name for l in model.layers]
    if layer not in names:
        raise PipelineError(f"No such layer: {layer}. Existing layers are: {names}.")
    inner = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    if len(inner.outputs[0].shape) != 4:
        raise PipelineError(f"Grad-CAM needs a layer with 4-D output (n, h, w, channels); "
                            f"{layer} gives shape {inner.outputs[0].shape}.")
    with tf.GradientTape() as tape:
        activations, output = inner(tf.constant(x[None]), training=False)
        value = tf.reshape(score(output), [-1])[0]
    grads = tape.gradient(value, activations)
    channel_weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(channel_weights * activations, axis=-1))[0]
    cam = tf.image.resize(cam[..., None], x.shape[:2], method="bilinear")[..., 0].numpy()
    top = float(cam.max())
    cam = cam / top if top > 0 else np.zeros_like(cam)
    return Attribution(values=cam.astype(np.float32), f_x=float(value.numpy()),
                       f_baseline=float("nan"), attribution_sum=float(cam.sum()))


def last_conv_layer(model: Any) -> str:
    """The name of the last layer of ``model`` with a 4-D output (Grad-CAM's usual layer)."""
    import keras

    candidates = [l.name for l in model.layers if not isinstance(l, keras.layers.InputLayer)
                  and len(l.output.shape) == 4]
    if not candidates:
        raise PipelineError(f"model {model.name} has no layer with 4-D output for Grad-CAM.")
    return candidates[-1]
