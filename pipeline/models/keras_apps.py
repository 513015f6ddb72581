"""Builders of the Keras-application networks of the registry (``pipeline.models.registry``).

``build_vgg16``: ``keras.applications.VGG16`` with its top (features ``fc2``), or the same layout
and layer names at another width (Keras' VGG16 has no width option). ``backbone_builder``: a Keras
application without top, then ``avg_pool`` (global average pooling, the feature layer in every
backbone) and a softmax ``predictions`` head. A builder gets ``weights_file`` (a local ImageNet
file) or ``None`` (Keras' default init; the caller then applies the no-transfer init).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.models.initializers import init_no_transfer

_VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def build_vgg16(spec: Any, input_size: int, width: float, classes: int,
                weights_file: Path | None, seed: int) -> Any:
    """VGG-16 with its fully connected top, ``classes`` outputs.

    At width 1 this is ``keras.applications.VGG16`` (loading ``weights_file`` if given); at another
    width the same layers, narrower, loading ``weights_file`` with ``load_weights`` (a file of
    another layout fails loudly there).
    """
    import keras

    if width == 1.0:
        return keras.applications.VGG16(
            include_top=True, weights=None if weights_file is None else str(weights_file),
            input_shape=(input_size, input_size, 3), classes=classes, name="vgg16")
    L = keras.layers
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = inputs
    for block, (convs, filters) in enumerate(_VGG16_BLOCKS, 1):
        for i in range(1, convs + 1):
            x = L.Conv2D(max(1, round(filters * width)), 3, padding="same", activation="relu",
                         name=f"block{block}_conv{i}")(x)
        x = L.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    x = L.Flatten(name="flatten")(x)
    for name in ("fc1", "fc2"):
        x = L.Dense(spec.width_at(width), activation="relu", name=name)(x)
    x = L.Dense(classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="vgg16")
    if weights_file is not None:
        model.load_weights(str(weights_file))
    return model


def backbone_builder(keras_class: str) -> Callable[..., Any]:
    """The registry builder of ``keras.applications.<keras_class>`` without top."""

    def build(spec: Any, input_size: int, width: float, classes: int, weights_file: Path | None,
              seed: int) -> Any:
        import keras

        inputs = keras.Input((input_size, input_size, 3), name="input")
        base = getattr(keras.applications, keras_class)(
            include_top=False, weights=None if weights_file is None else str(weights_file),
            input_tensor=inputs, pooling=None)
        # pooling="avg" done here so the feature layer has the same name in every backbone
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
        x = keras.layers.Dense(classes, activation="softmax", name="predictions",
                               dtype="float32")(x)
        model = keras.Model(inputs, x, name=spec.name)
        if weights_file is not None:
            init_no_transfer(model.get_layer("predictions"), seed)  # the new head, seeded
        return model

    build.__name__ = f"build_{keras_class.lower()}"
    return build


def efficientnet_imagenet_scaling(model: Any) -> None:
    """Give an EfficientNet loaded from a file what Keras adds for ``weights="imagenet"`` only.

    That is a ``Rescaling(1 / sqrt(std))`` after the ``Normalization`` (TF issue 49930); dividing
    (x - mean) / sqrt(var) by sqrt(std) is the same as normalising with variance var * std.
    """
    import keras

    from pipeline.models.initializers import walk_layers

    norm = next(l for l in walk_layers(model) if isinstance(l, keras.layers.Normalization))
    norm.adapt_variance.assign(norm.adapt_variance.numpy() * np.array([0.229, 0.224, 0.225]))
    norm.finalize_state()
