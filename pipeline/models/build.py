"""Building a registered network with its weights, cutting it at its feature layer, and
replacing its head.

``build_network`` reads everything network-specific from the spec (``pipeline.models.registry``):
which weights exist, which widths and input sizes they allow, the head the file includes and any
fix-up after loading.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import PipelineError
from pipeline.models.initializers import init_no_transfer
from pipeline.models.registry import NETWORKS, NetworkSpec, get_network
from pipeline.models.weights import imagenet_weights_file


def build_network(name: str, *, weights: str | None, input_size: int | None = None,
                  width: float = 1.0, classes: int = 1000,
                  weights_path: str | os.PathLike | None = None, seed: int = 0) -> Any:
    """Build a registered network with its weights.

    Args:
        name: registry name (``NETWORKS``).
        weights: ``None``/``"none"`` (orthogonal init, biases 0.05, seeded) or ``"imagenet"``.
        input_size: side of the square input in px; default the network's.
        width: multiplier on every layer width (vgg-m and vgg16 with weights ``none`` only).
        classes: outputs of the softmax head (with ImageNet weights a new head replaces the
            1000-way one when they differ).
        weights_path: local ImageNet weights (``network.imagenet_weights``); vgg-m needs one.
        seed: fixes the init, the new head and the dropout.

    Returns:
        A ``keras.Model`` from images of shape (n, size, size, 3) to probabilities (n, classes).
    """
    spec = get_network(name)
    source = "none" if weights is None else str(weights)
    if source not in spec.weights:
        raise PipelineError(f"weights {weights!r} are not available for {name}: it has "
                            f"{', '.join(spec.weights)}.")
    size = int(input_size or spec.input_size)
    if size < spec.min_input_size:
        raise PipelineError(f"{name} needs an input of at least {spec.min_input_size} px; got "
                            f"input_size={size}.")
    if width != 1.0 and not spec.scalable:
        scalable = [s for s in NETWORKS if NETWORKS[s].scalable]
        raise PipelineError(f"width={width} needs a network that scales ({scalable}); got {name}. "
                            "Use width 1.0.")
    if source == "none":
        if weights_path is not None:
            raise PipelineError(f"weights_path {weights_path} is set but weights is none, so it "
                                "would be ignored; remove it or use weights imagenet.")
        model = spec.builder(spec, size, width, classes, None, seed)
        init_no_transfer(model, seed)
        return model
    imagenet = spec.imagenet
    if weights_path is None and imagenet.input_size and size != imagenet.input_size:
        raise PipelineError(f"{name}'s published ImageNet weights include a fully connected top "
                            f"that needs {imagenet.input_size} px input; got input_size={size}. "
                            f"Use input_size {imagenet.input_size}, or a local file made for "
                            f"{size} px (`network.imagenet_weights`).")
    path = imagenet_weights_file(spec, size, weights_path)  # WeightsUnavailable when missing
    if width != 1.0 and not (imagenet.local_file_sets_shape and weights_path is not None):
        raise PipelineError(f"width={width} with ImageNet weights needs a local file of that "
                            f"width (`network.imagenet_weights`); {name}'s published weights are "
                            "at width 1.0. Use width 1.0 or weights none.")
    try:
        model = spec.builder(spec, size, width, imagenet.head_classes or classes, path, seed)
        if imagenet.post_load is not None:
            imagenet.post_load(model)
    except PipelineError:
        raise
    except Exception as exc:  # a truncated or wrong file must not look like a missing one
        raise PipelineError(f"could not load {name} ImageNet weights from {path} "
                            f"({type(exc).__name__}: {exc}). Delete or replace the file with "
                            f"{imagenet.file_name(size)}.") from exc
    if model.output.shape[-1] != classes:
        model = replace_head(model, spec, classes, seed)
    return model


def feature_model(model: Any, spec: NetworkSpec) -> Any:
    """The model cut at the feature layer.

    Args:
        model: a model from ``build_network`` (or ``replace_head``).
        spec: its registry entry.

    Returns:
        A ``keras.Model`` from images to features of shape (n, feature width).
    """
    import keras

    return keras.Model(model.input, model.get_layer(spec.feature_layer).output)


def replace_head(model: Any, spec: NetworkSpec, classes: int, seed: int = 0) -> Any:
    """Swap the classification head for a new ``classes``-way softmax (for fine-tuning).

    Args:
        model: a model from ``build_network``.
        spec: its registry entry.
        classes: outputs of the new head.
        seed: seed of the new Dense (orthogonal kernel, biases 0.05).

    Returns:
        A ``keras.Model`` sharing every layer up to ``spec.head_input`` (the feature layer and its
        weights included) with ``model``, then the new head.
    """
    import keras

    x = model.get_layer(spec.head_input).output
    dense = keras.layers.Dense(classes, activation=None if len(spec.head) == 2 else "softmax",
                               name=spec.head[0], dtype="float32" if len(spec.head) == 1 else None)
    x = dense(x)
    if len(spec.head) == 2:
        x = keras.layers.Softmax(name=spec.head[1], dtype="float32")(x)
    init_no_transfer(dense, seed)
    return keras.Model(model.input, x, name=model.name)
