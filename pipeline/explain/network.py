"""Attributions of a network + linear SVM for a batch of images (what ``explain`` computes).

``explain_svm`` takes the stored network's feature model, its preprocessing, the SVM's ``w, b`` and
uint8 images, and returns per image and method an ``Attribution``: integrated gradients in pixel
space (the black image 0 as baseline; the preprocessing is part of the differentiated function)
and Grad-CAM on the last 4-D layer of the feature model.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from pipeline.errors import PipelineError
from pipeline.explain.attributions import (
    DEFAULT_STEPS,
    METHODS,
    Attribution,
    grad_cam,
    integrated_gradients,
    last_conv_layer,
)
from pipeline.explain.targets import svm_score, svm_target


def explain_svm(feature_model: Any, preprocess: Callable, w: np.ndarray, b: float,
                images: np.ndarray, methods: Sequence[str] = METHODS, *,
                steps: int = DEFAULT_STEPS, batch_size: int = 16,
                layer: str | None = None) -> dict[str, list[Attribution]]:
    """Attributions of the SVM's decision score through the network, per method and image.

    Args:
        feature_model: ``keras.Model`` from network input to the features.
        preprocess: pixels (float32 tensor (n, h, w, 3), RGB 0-255) -> network input.
        w, b: the linear SVM on L2-normalised features (``pipeline.explain.targets.linear_svm``).
        images: uint8 array of shape (n_images, h, w, 3), RGB.
        methods: any of ``"ig"``, ``"gradcam"``.
        steps, batch_size: integrated gradients' trapezoid intervals and points per batch.
        layer: Grad-CAM's layer (default: the feature model's last 4-D layer).

    Returns:
        method -> one ``Attribution`` per image.
    """
    import tensorflow as tf

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise PipelineError(f"attribution methods {list(methods)}: choose from "
                            f"{', '.join(METHODS)}.")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise PipelineError(f"images must be an array of shape (n, h, w, 3); got {images.shape}.")
    out: dict[str, list[Attribution]] = {}
    if "ig" in methods:
        target = tf.function(svm_target(feature_model, preprocess, w, b), reduce_retracing=True)
        out["ig"] = [integrated_gradients(target, image, steps=steps, batch_size=batch_size)
                     for image in images.astype(np.float32)]
    if "gradcam" in methods:
        layer = layer or last_conv_layer(feature_model)
        score = svm_score(w, b)
        inputs = np.asarray(preprocess(tf.constant(images.astype(np.float32))))
        out["gradcam"] = [grad_cam(feature_model, layer, score, x) for x in inputs]
    return out
