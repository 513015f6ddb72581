"""Shared pieces of the Keras networks laid out like torchvision's (torchvision 0.29.1).

Used by ``mnasnet``, ``shufflenet``, ``squeezenet``, ``googlenet`` and ``resnext``. The conventions
that make a torchvision ImageNet ``.pth`` file load into those Keras models:

* **Names.** A Keras layer with weights is named after its torchvision state-dict prefix with ``.``
  replaced by ``_`` (``layer1.0.downsample.0`` -> ``layer1_0_downsample_0``). No torchvision module
  with weights in these five networks has ``_`` in its name, so ``torch_layers_by_name`` turns the
  names back exactly; only the classifier (Keras ``predictions``) is mapped by hand. Layers without
  weights (padding, ReLU, pooling, concatenation) carry a suffix after the prefix of the module
  they belong to.
* **Padding.** PyTorch pads ``padding`` pixels on every side; Keras ``"same"`` pads asymmetrically
  when the stride is 2. Every padded conv here is an explicit ``ZeroPadding2D`` + ``"valid"`` conv.
* **Max pooling.** PyTorch pads pools with -inf, ``ZeroPadding2D`` with 0. Every padded pool in
  these networks follows a ReLU (inputs >= 0) and every window keeps at least one real element, so
  0 gives the same maximum. ``ceil_mode=True`` (SqueezeNet, GoogLeNet) adds the extra right/bottom
  padding that PyTorch's output size implies.
* **BatchNorm eps.** PyTorch's default is 1e-5 (``TORCH_BN_EPS``), Keras' 1e-3: every module passes
  its eps (GoogLeNet's ``BasicConv2d`` sets 0.001).
* **Head.** Global average pooling named ``avg_pool`` (the feature layer), torchvision's dropout
  if it has one (``dropout``), then ``Dense(classes, softmax)`` named ``predictions``.

Nothing here imports TensorFlow at import time: the layer helpers import Keras when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipeline.errors import PipelineError
from pipeline.models.torch_weights import TorchLayer, assign_torch_weights

TORCHVISION_VERSION = "0.29.1"
DOWNLOAD_ROOT = "https://download.pytorch.org/models/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_BN_EPS = 1e-5

_KINDS = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise", "BatchNormalization": "bn",
          "Dense": "linear"}


def imagenet_preprocessing(**changes: Any) -> dict[str, Any]:
    """What torchvision's ImageNet weights expect (``ImageClassification`` preset), as data.

    Args:
        **changes: entries to add or override (GoogLeNet's mean and std).

    Returns:
        A dict: ``channel_order``, ``scale`` (multiply 0-255 pixels by it), ``mean`` and ``std``
        (per RGB channel, applied after scaling: ``(rgb * scale - mean) / std``), and the resize
        (shorter side, bilinear) and centre crop of torchvision's evaluation transform.
    """
    return {"channel_order": "RGB", "scale": 1 / 255, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "formula": "(rgb / 255 - mean) / std", "resize_size": 256, "crop_size": 224,
            "interpolation": "bilinear", **changes}


def keras_name(prefix: str) -> str:
    """The Keras layer name of torchvision state-dict prefix ``prefix``."""
    return prefix.replace(".", "_")


def conv_size(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """PyTorch's output size of a conv (or floor-mode pool) on ``n`` pixels."""
    return (n + 2 * padding - kernel) // stride + 1


def ceil_pool_size(n: int, kernel: int, stride: int, padding: int = 0) -> int:
    """PyTorch's output size of ``MaxPool2d(..., ceil_mode=True)`` on ``n`` pixels.

    As in ``pooling_output_shape`` (ATen): round up, but drop a last window that would start in
    the right padding.
    """
    out = -(-(n + 2 * padding - kernel) // stride) + 1
    if out > 0 and (out - 1) * stride >= n + padding:
        out -= 1
    return out


def check_input_size(network: str, input_size: int, minimum: int) -> None:
    """Raise ``PipelineError`` unless ``input_size`` is at least ``minimum``."""
    if input_size < minimum:
        raise PipelineError(f"{network} needs an input of at least {minimum} px; got "
                            f"input_size={input_size}.")


def pad(x: Any, padding: int, name: str) -> Any:
    """PyTorch's symmetric zero padding (nothing for ``padding=0``)."""
    import keras

    return keras.layers.ZeroPadding2D(padding, name=name)(x) if padding else x


def conv(x: Any, filters: int, kernel: int, prefix: str, *, stride: int = 1, padding: int = 0,
         groups: int = 1, bias: bool = False) -> Any:
    """``nn.Conv2d(..., kernel, stride, padding, groups=groups, bias=bias)`` at ``prefix``."""
    import keras

    x = pad(x, padding, keras_name(prefix) + "_pad")
    return keras.layers.Conv2D(filters, kernel, strides=stride, groups=groups, use_bias=bias,
                               name=keras_name(prefix))(x)


def depthwise(x: Any, kernel: int, prefix: str, *, stride: int = 1, padding: int = 0) -> Any:
    """``nn.Conv2d(c, c, kernel, stride, padding, groups=c, bias=False)`` at ``prefix``."""
    import keras

    x = pad(x, padding, keras_name(prefix) + "_pad")
    return keras.layers.DepthwiseConv2D(kernel, strides=stride, use_bias=False,
                                        name=keras_name(prefix))(x)


def bn(x: Any, prefix: str, eps: float = TORCH_BN_EPS) -> Any:
    """``nn.BatchNorm2d`` at ``prefix`` (channels last)."""
    import keras

    return keras.layers.BatchNormalization(epsilon=eps, name=keras_name(prefix))(x)


def relu(x: Any, name: str) -> Any:
    """A ReLU layer named ``name`` (already a Keras name)."""
    import keras

    return keras.layers.ReLU(name=name)(x)


def max_pool(x: Any, kernel: int, stride: int, name: str, *, padding: int = 0,
             ceil_mode: bool = False) -> Any:
    """``nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)`` on a post-ReLU map.

    The zero padding stands for PyTorch's -inf only because ``x >= 0`` (see the module docstring).
    """
    import keras

    height, width = int(x.shape[1]), int(x.shape[2])
    extra = [0, 0]
    if ceil_mode:  # right/bottom padding that turns the floor output size into PyTorch's ceil one
        for axis, n in enumerate((height, width)):
            out = ceil_pool_size(n, kernel, stride, padding)
            extra[axis] = max(0, (out - 1) * stride + kernel - (n + 2 * padding))
    if padding or any(extra):
        rows, cols = (padding, padding + extra[0]), (padding, padding + extra[1])
        x = keras.layers.ZeroPadding2D((rows, cols), name=name + "_pad")(x)
    return keras.layers.MaxPooling2D(kernel, strides=stride, name=name)(x)


def head(x: Any, classes: int, dropout: float = 0.0) -> Any:
    """Global average pool ``avg_pool``, torchvision's dropout (if any), softmax ``predictions``."""
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(classes, activation="softmax", name="predictions",
                              dtype="float32")(x)


def torch_layers_by_name(model: Any, head_prefix: str,
                         skip: Sequence[str] = ()) -> list[TorchLayer]:
    """The ``TorchLayer`` rows of a model named by ``keras_name``.

    Args:
        model: a model from one of the torchvision-layout ``build`` functions.
        head_prefix: the state-dict prefix of the classifier that ``predictions`` takes.
        skip: Keras layers with weights that have no torchvision counterpart.

    Returns:
        One row per Keras layer with weights, in model order.

    Raises:
        PipelineError: for a layer with weights of a kind ``torch_weights`` does not know.
    """
    rows = []
    for layer in model.layers:
        if not layer.weights or layer.name in skip:
            continue
        kind = _KINDS.get(type(layer).__name__)
        if kind is None:
            raise PipelineError(f"layer {layer.name!r} ({type(layer).__name__}) of {model.name!r} "
                                "has weights but no torchvision kind.")
        torch = head_prefix if layer.name == "predictions" else layer.name.replace("_", ".")
        rows.append(TorchLayer(layer.name, torch, kind))
    return rows


def load_torch_file(model: Any, path: str | Path, layers: Sequence[TorchLayer],
                    ignore: Sequence[str] = (),
                    prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None) -> Any:
    """Copy a torchvision ``.pth`` state dict into ``model``; returns ``model``.

    Args:
        model: a model from one of the torchvision-layout ``build`` functions.
        path: the ``.pth`` file (read without PyTorch by ``pipeline.models.torch_state``).
        layers: ``torch_layers(model)`` of the network's module.
        ignore: the module's ``TORCH_IGNORE``.
        prepare: the module's ``prepare_torch_state``, if it has one.

    Raises:
        PipelineError: the file cannot be read or does not fit (see ``assign_torch_weights``).
    """
    from pipeline.models.torch_state import read_state_dict

    state = read_state_dict(path)
    if prepare is not None:
        state = prepare(state)
    assign_torch_weights(model, state, layers, source=str(path), ignore=ignore)
    return model
