"""Turning RGB images (0–255) into a network's input, as its registry spec says.

``preprocess`` works on NumPy arrays and on TensorFlow tensors (inside a ``tf.data`` map), so
training, feature extraction and prediction share one definition.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.models.registry import NetworkSpec

IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)  # Keras "caffe" mode


def preprocess(spec: NetworkSpec, images_uint8: Any, mean: np.ndarray | None = None) -> Any:
    """Turn RGB images (0–255) into network input.

    Args:
        spec: the network.
        images_uint8: array of shape (n, h, w, 3), RGB, values 0–255: a NumPy array, or a
            TensorFlow tensor (e.g. inside a ``tf.data`` map).
        mean: RGB mean of shape (3,) or (h, w, 3) to subtract: ``imagenet_mean`` for ImageNet
            weights, the training set's mean for networks trained from ``none``. ``None``: the
            weights' own preprocessing (vgg16: caffe mean; backbones: ``preprocess_input``).

    Returns:
        float32 array (or tensor, for a tensor) of shape (n, h, w, 3) in the network's channel
        order.
    """
    tf = sys.modules.get("tensorflow")  # a tensor exists only once TensorFlow is imported
    tensor = tf is not None and tf.is_tensor(images_uint8)
    x = tf.cast(images_uint8, tf.float32) if tensor else np.asarray(images_uint8, np.float32)
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise PipelineError(f"images must have shape (n, h, w, 3) RGB; got {shape}.")
    p = spec.preprocessing
    if mean is None:
        if p.mode == "mean":
            raise PipelineError(f"{spec.name} needs a mean: the one of its ImageNet weights "
                                "(pipeline.models.weights.imagenet_mean), else the training "
                                "set's mean.")
        if p.mode == "caffe":
            return x[..., ::-1] - IMAGENET_BGR_MEAN
        if p.mode == "normalize":
            scale = np.float32(p.scale)
            mean_, std = np.asarray(p.mean, np.float32), np.asarray(p.std, np.float32)
            if p.channel_order == "BGR":
                x, mean_, std = x[..., ::-1], mean_[::-1], std[::-1]
            return (x * scale - mean_) / std
        module = importlib.import_module(f"keras.applications.{p.keras_module}")
        out = module.preprocess_input(x)
        return out if tensor else np.asarray(out, dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32)
    if m.shape != (3,) and (m.ndim != 3 or any(
            want not in (got, None) for got, want in zip(m.shape, shape[1:]))):
        raise PipelineError(f"mean must have shape (3,) or {shape[1:]} (RGB); got {m.shape}.")
    if p.channel_order == "BGR":
        x, m = x[..., ::-1], m[..., ::-1]
    return x - m
