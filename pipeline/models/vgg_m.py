"""VGG-M as MatConvNet lays it out in ``imagenet-vgg-m.mat``: the layout, the Keras model, and
the converted weights file.

VGG-M (Chatfield et al., "Return of the Devil in the Details", BMVC 2014) is the network of
Menegola et al. (2017). MatConvNet's file lists 21 layers: conv1 relu1 norm1 pool1 conv2 relu2
norm2 pool2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 fc6 relu6 fc7 relu7 fc8 prob. ``relu7`` is the
paper's "Layer 19", whose output are the features. ``VGG_M`` below is that layout as data; the
Keras builder and the converter's checks (``pipeline.models.matconvnet``) both read it, and Keras
layers carry MatConvNet's names.

Keras layout: explicit ``ZeroPadding2D`` (``<name>_pad``) then a ``valid`` conv or max pool, so
MatConvNet's symmetric conv padding and asymmetric pool padding [top bottom left right] = [0 1 0 1]
are exact; fc6 (a 6×6×512→4096 convolution over the whole pool5 map at 224 px) is ``Flatten`` +
``Dense`` so any input size works; Keras adds ``drop6``/``drop7`` (dropout 0.5, inactive at
inference) after relu6/relu7, which the deployed ``.mat`` does not list.

The converted file (``.npz``, written by ``convert-matconvnet``) holds ``<layer>/kernel``,
``<layer>/bias``, ``average_image``, ``mean`` and ``meta``; ``read_converted`` reads it and
``set_vgg_m_weights`` copies it into a model.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

LRN_PARAM = (5, 2.0, 1e-4, 0.75)  # MatConvNet norm param [N kappa alpha beta] of VGG-M


@dataclass(frozen=True)
class MatLayer:
    """One layer of the MatConvNet layout.

    Attributes:
        name: MatConvNet's (and Keras') layer name.
        type: ``conv``, ``relu``, ``norm``, ``pool``, ``softmax`` or ``dropout`` (Keras only).
        size: kernel or pool size (square); ``0`` for a convolution over the whole input map (fc).
        channels: output channels at width 1.0 (conv/fc; ``0`` for fc8 = the number of classes).
        stride: stride (both directions).
        pad: padding [top, bottom, left, right].
    """

    name: str
    type: str
    size: int = 0
    channels: int = 0
    stride: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)


def _conv(name: str, size: int, channels: int, stride: int = 1, pad: int = 0) -> MatLayer:
    return MatLayer(name, "conv", size, channels, stride, (pad,) * 4)


def _pool(name: str) -> MatLayer:
    return MatLayer(name, "pool", 3, 0, 2, (0, 1, 0, 1))


VGG_M: tuple[MatLayer, ...] = (
    _conv("conv1", 7, 96, 2), MatLayer("relu1", "relu"), MatLayer("norm1", "norm"), _pool("pool1"),
    _conv("conv2", 5, 256, 2, 1), MatLayer("relu2", "relu"), MatLayer("norm2", "norm"),
    _pool("pool2"),
    _conv("conv3", 3, 512, 1, 1), MatLayer("relu3", "relu"),
    _conv("conv4", 3, 512, 1, 1), MatLayer("relu4", "relu"),
    _conv("conv5", 3, 512, 1, 1), MatLayer("relu5", "relu"), _pool("pool5"),
    _conv("fc6", 0, 4096), MatLayer("relu6", "relu"), MatLayer("drop6", "dropout"),
    _conv("fc7", 0, 4096), MatLayer("relu7", "relu"), MatLayer("drop7", "dropout"),
    _conv("fc8", 0, 0), MatLayer("prob", "softmax"),
)


WEIGHTED = tuple(layer.name for layer in VGG_M if layer.type == "conv")


def scaled(channels: int, width: float) -> int:
    """Channels of a layer at a width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def out_size(n: int, size: int, stride: int, lo: int, hi: int) -> int:
    """Output side of a conv or pool of ``size``, ``stride`` and padding ``lo``/``hi`` on ``n``."""
    return (n + lo + hi - size) // stride + 1


def pool5_size(input_size: int) -> int:
    """Side of the pool5 map for a square input of ``input_size`` pixels (< 1: too small)."""
    n = input_size
    for layer in VGG_M:
        if layer.type in ("conv", "pool") and layer.size:
            n = out_size(n, layer.size, layer.stride, layer.pad[0], layer.pad[1])
    return n


MIN_INPUT_SIZE = next(n for n in range(8, 256) if pool5_size(n) >= 1)


@functools.cache
def lrn_layer_class() -> type:
    """The Keras layer for MatConvNet's ``norm`` (cross-channel LRN), registered for saving.

    MatConvNet's ``vl_nnnormalize`` computes ``y = x (kappa + alpha sum_{G(k)} x^2)^-beta`` over
    ``G(k) = [k - floor((N-1)/2), k + ceil((N-1)/2)]`` without dividing alpha by N (unlike Caffe),
    i.e. TensorFlow's ``local_response_normalization`` with ``depth_radius = (N-1)/2`` (odd N).
    """
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="pipeline")
    class LocalResponseNorm(keras.layers.Layer):
        """Cross-channel local response normalisation, MatConvNet param [N kappa alpha beta]."""

        def __init__(self, size: int = 5, kappa: float = 2.0, alpha: float = 1e-4,
                     beta: float = 0.75, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.size, self.kappa, self.alpha, self.beta = int(size), kappa, alpha, beta

        def call(self, inputs: Any) -> Any:
            # float32 even under mixed precision: sums of squared activations overflow float16.
            return tf.nn.local_response_normalization(
                tf.cast(inputs, tf.float32), depth_radius=(self.size - 1) // 2,
                bias=self.kappa, alpha=self.alpha, beta=self.beta)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict:
            return {**super().get_config(), "size": self.size, "kappa": self.kappa,
                    "alpha": self.alpha, "beta": self.beta}

    return LocalResponseNorm


def build_vgg_m(input_size: int = 224, width: float = 1.0, classes: int = 1000,
                seed: int = 0) -> Any:
    """Keras functional VGG-M laid out like MatConvNet's ``imagenet-vgg-m.mat``.

    Args:
        input_size: side of the square RGB input, in pixels (at least ``MIN_INPUT_SIZE``).
        width: multiplier on every conv/fc width (fc7 then has ``round(4096 * width)`` units).
        classes: outputs of fc8 / prob.
        seed: seed of the dropout layers.

    Returns:
        A ``keras.Model`` with Keras' default init (``networks.build_network`` sets the paper's)
        from images of shape (n, input_size, input_size, 3) to probabilities of shape (n, classes).
    """
    import keras

    if pool5_size(input_size) < 1:
        raise PipelineError(f"vgg-m needs an input of at least {MIN_INPUT_SIZE} px; got "
                            f"input_size={input_size}.")
    L = keras.layers
    lrn = lrn_layer_class()
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = inputs
    for i, layer in enumerate(VGG_M):
        t, b, left, r = layer.pad
        if layer.type == "conv" and layer.size == 0:
            if len(x.shape) == 4:
                x = L.Flatten(name=f"{layer.name}_flatten")(x)
            units = classes if layer.channels == 0 else scaled(layer.channels, width)
            x = L.Dense(units, name=layer.name)(x)
            continue
        if layer.type in ("conv", "pool") and any(layer.pad):
            # MatConvNet pads convs with 0 and pools with -inf; 0 is the same for these pools:
            # they follow a ReLU (inputs >= 0) and every window holds a real element.
            x = L.ZeroPadding2D(((t, b), (left, r)), name=f"{layer.name}_pad")(x)
        if layer.type == "conv":
            x = L.Conv2D(scaled(layer.channels, width), layer.size, strides=layer.stride,
                         name=layer.name)(x)
        elif layer.type == "pool":
            x = L.MaxPooling2D(layer.size, strides=layer.stride, name=layer.name)(x)
        elif layer.type == "relu":
            x = L.ReLU(name=layer.name)(x)
        elif layer.type == "norm":
            x = lrn(*LRN_PARAM, name=layer.name, dtype="float32")(x)
        elif layer.type == "dropout":
            x = L.Dropout(0.5, seed=seed + i, name=layer.name)(x)
        else:
            x = L.Softmax(name=layer.name, dtype="float32")(x)
    return keras.Model(inputs, x, name="vgg_m")


def set_vgg_m_weights(model: Any, path: str | Path) -> dict:
    """Copy converted weights into a Keras VGG-M built with the file's width and classes.

    Args:
        model: from ``build_vgg_m`` with the file's width, classes and input size.
        path: the ``.npz`` written by ``convert``.

    Returns:
        The file's metadata.
    """
    arrays, meta = read_converted(path)
    for name in WEIGHTED:
        layer = model.get_layer(name)
        for var, key in ((layer.kernel, f"{name}/kernel"), (layer.bias, f"{name}/bias")):
            if key not in arrays or tuple(arrays[key].shape) != tuple(var.shape):
                got = arrays[key].shape if key in arrays else "nothing"
                raise PipelineError(
                    f"{path}: {key} has shape {got}, the Keras vgg-m expects {tuple(var.shape)}. "
                    f"The file was converted at width {meta.get('width')} for "
                    f"{meta.get('input_size')} px input with {meta.get('classes')} classes; build "
                    "the network with those settings.")
            var.assign(arrays[key].astype(np.float32))
    return meta


def read_converted(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by ``convert``.

    Args:
        path: the ``.npz`` file.

    Returns:
        ``(arrays, meta)``: arrays by name (``conv1/kernel``, …, ``average_image``, ``mean``) and
        the metadata dict (``width``, ``input_size``, ``classes``, ``source``, ``sha256``, …).
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"converted VGG-M weights file {path} does not exist. Write it with "
                            "`python -m pipeline convert-matconvnet --mat imagenet-vgg-m.mat --out "
                            f"{path}` (set `network.imagenet_weights` to that file).")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:
        raise PipelineError(f"{path} is not a VGG-M weights file written by convert-matconvnet "
                            f"({exc}); convert imagenet-vgg-m.mat again.") from exc
    return arrays, meta


def build_registered(spec: Any, input_size: int, width: float, classes: int,
                     weights_file: Path | None, seed: int) -> Any:
    """The registry's builder of ``vgg-m``: ``build_vgg_m``, with a converted file's weights.

    A converted file fixes the width and the number of classes (its fc8); the input size must be
    the one it was converted for when fc6 depends on it.
    """
    if weights_file is None:
        return build_vgg_m(input_size, width, classes, seed)
    meta = read_converted(weights_file)[1]
    if width != meta["width"]:
        raise PipelineError(f"{weights_file} holds VGG-M at width {meta['width']}; got "
                            f"width={width}. Build with width={meta['width']}.")
    model = build_vgg_m(input_size, width, meta["classes"], seed)
    set_vgg_m_weights(model, weights_file)
    return model
