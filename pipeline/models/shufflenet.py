"""ShuffleNet V2 x1.0 in Keras, laid out like torchvision's ``shufflenet_v2_x1_0``.

Layout from ``torchvision/models/shufflenetv2.py`` (torchvision 0.29.1): ``conv1`` (3x3/2 conv, BN,
ReLU), ``maxpool`` (3x3/2, padding 1), ``stage2``-``stage4`` of 4, 8, 4 ``InvertedResidual`` units
(116, 232, 464 channels), ``conv5`` (1x1 to 1024, BN, ReLU), mean over H and W, ``fc``. A unit with
stride 2 runs ``branch1`` (depthwise 3x3/2, BN, 1x1, BN, ReLU) and ``branch2`` on the whole input;
a unit with stride 1 splits the channels in halves (``x.chunk(2, dim=1)``), keeps the first and
runs ``branch2`` on the second. Both concatenate and then ``channel_shuffle(out, 2)``. BN eps is
PyTorch's default 1e-5. Keras layer names are the state-dict prefixes with ``.`` -> ``_``.

The split and the shuffle are two small Keras layers (``ChannelSplit``, ``ChannelShuffle``),
registered for saving like ``matconvnet.LocalResponseNorm``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pipeline.models import torchvision_layout as tv
from pipeline.models.torch_weights import TorchLayer

TORCHVISION_NAME = "shufflenet_v2_x1_0"
WEIGHTS_FILE = "shufflenetv2_x1-5666bf0f80.pth"  # ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1
WEIGHTS_URL = tv.DOWNLOAD_ROOT + WEIGHTS_FILE
PREPROCESSING = tv.imagenet_preprocessing()
TORCH_IGNORE: tuple[str, ...] = ()
FEATURE_LAYER = "avg_pool"
FEATURE_WIDTH = 1024
HEAD_INPUT = "avg_pool"  # torchvision has no dropout before fc

STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = (24, 116, 232, 464, FEATURE_WIDTH)  # conv1, stage2-4, conv5


def feature_map_size(input_size: int) -> int:
    """Side of the last feature map for a square input (0 if some layer would be empty)."""
    n = tv.conv_size(tv.conv_size(input_size, 3, 2, 1), 3, 2, 1)  # conv1, maxpool
    for _ in STAGE_REPEATS:
        n = tv.conv_size(n, 3, 2, 1)
    return max(n, 0)


MIN_INPUT_SIZE = next(n for n in range(1, 512) if feature_map_size(n) >= 1)


@functools.cache
def layer_classes() -> tuple[type, type]:
    """The Keras layers ``ChannelSplit`` and ``ChannelShuffle``, registered for saving."""
    import keras

    @keras.saving.register_keras_serializable(package="pipeline")
    class ChannelSplit(keras.layers.Layer):
        """``x.chunk(2, dim=1)`` channels last: the first and the second half of the channels."""

        def call(self, inputs: Any) -> list:
            half = inputs.shape[-1] // 2
            return [inputs[..., :half], inputs[..., half:]]

        def compute_output_shape(self, input_shape: Any) -> list:
            half = (*input_shape[:-1], input_shape[-1] // 2)
            return [half, half]

    @keras.saving.register_keras_serializable(package="pipeline")
    class ChannelShuffle(keras.layers.Layer):
        """torchvision's ``channel_shuffle``: output channel ``j * groups + g`` is input channel
        ``g * (c // groups) + j``."""

        def __init__(self, groups: int = 2, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.groups = int(groups)

        def call(self, inputs: Any) -> Any:
            from keras import ops

            h, w, c = inputs.shape[1:]
            x = ops.reshape(inputs, (-1, h, w, self.groups, c // self.groups))
            x = ops.transpose(x, (0, 1, 2, 4, 3))
            return ops.reshape(x, (-1, h, w, c))

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict:
            return {**super().get_config(), "groups": self.groups}

    return ChannelSplit, ChannelShuffle


def _branch2(x: Any, out_ch: int, stride: int, prefix: str) -> Any:
    """``<prefix>.branch2``: 1x1, BN, ReLU, depthwise 3x3, BN, 1x1, BN, ReLU."""
    p = f"{prefix}.branch2"
    x = tv.relu(tv.bn(tv.conv(x, out_ch, 1, f"{p}.0"), f"{p}.1"), tv.keras_name(f"{p}.2"))
    x = tv.bn(tv.depthwise(x, 3, f"{p}.3", stride=stride, padding=1), f"{p}.4")
    return tv.relu(tv.bn(tv.conv(x, out_ch, 1, f"{p}.5"), f"{p}.6"), tv.keras_name(f"{p}.7"))


def shuffle_unit(x: Any, out_ch: int, stride: int, prefix: str) -> Any:
    """torchvision's ``InvertedResidual`` (ShuffleNet V2 unit) at ``prefix``.

    Args:
        x: input tensor, channels last.
        out_ch: output channels (each branch gives half).
        stride: 1 (channel split, identity half) or 2 (both branches on the whole input).
        prefix: the unit's state-dict prefix, e.g. ``"stage2.0"``.

    Returns:
        The unit's output after the channel shuffle.
    """
    import keras

    split, shuffle = layer_classes()
    name = tv.keras_name(prefix)
    half = out_ch // 2
    if stride == 1:
        left, right = split(name=name + "_split")(x)
        right = _branch2(right, half, 1, prefix)
    else:
        p = f"{prefix}.branch1"
        left = tv.bn(tv.depthwise(x, 3, f"{p}.0", stride=stride, padding=1), f"{p}.1")
        left = tv.relu(tv.bn(tv.conv(left, half, 1, f"{p}.2"), f"{p}.3"), tv.keras_name(f"{p}.4"))
        right = _branch2(x, half, stride, prefix)
    x = keras.layers.Concatenate(name=name + "_concat")([left, right])
    return shuffle(2, name=name + "_shuffle")(x)


def build(input_size: int = 224, classes: int = 1000) -> Any:
    """Keras ShuffleNet V2 x1.0 with torchvision's layer layout.

    Args:
        input_size: side of the square input, at least ``MIN_INPUT_SIZE``.
        classes: outputs of ``predictions`` (torchvision's ``fc``).

    Returns:
        A ``keras.Model`` from images preprocessed as ``PREPROCESSING`` says, shape
        (n, input_size, input_size, 3) float32, to probabilities (n, classes); features
        (n, ``FEATURE_WIDTH``) at layer ``avg_pool``.

    Raises:
        PipelineError: for an input smaller than ``MIN_INPUT_SIZE``.
    """
    import keras

    tv.check_input_size(TORCHVISION_NAME, input_size, MIN_INPUT_SIZE)
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = tv.conv(inputs, STAGE_CHANNELS[0], 3, "conv1.0", stride=2, padding=1)
    x = tv.relu(tv.bn(x, "conv1.1"), "conv1_2")
    x = tv.max_pool(x, 3, 2, "maxpool", padding=1)
    for stage, (repeats, out_ch) in enumerate(zip(STAGE_REPEATS, STAGE_CHANNELS[1:-1]), 2):
        for i in range(repeats):
            x = shuffle_unit(x, out_ch, 2 if i == 0 else 1, f"stage{stage}.{i}")
    x = tv.conv(x, FEATURE_WIDTH, 1, "conv5.0")
    x = tv.relu(tv.bn(x, "conv5.1"), "conv5_2")
    return keras.Model(inputs, tv.head(x, classes), name="shufflenet_v2_x1_0")


def torch_layers(model: Any) -> list[TorchLayer]:
    """The mapping of ``model`` (from ``build``) onto torchvision's ``shufflenet_v2_x1_0``.

    Args:
        model: a model from ``build`` (any input size and number of classes).

    Returns:
        One ``TorchLayer`` per Keras layer with weights, for ``assign_torch_weights``.
    """
    return tv.torch_layers_by_name(model, "fc")


def load_imagenet(path: str | Path, input_size: int = 224) -> Any:
    """This network with torchvision's ImageNet weights (``WEIGHTS_FILE``, from ``WEIGHTS_URL``).

    Args:
        path: the downloaded ``.pth`` file.
        input_size: side of the square input, at least ``MIN_INPUT_SIZE``.

    Returns:
        ``build(input_size, 1000)`` with the file's weights (inputs as ``PREPROCESSING`` says).

    Raises:
        PipelineError: the file cannot be read or does not fit this network.
    """
    model = build(input_size, classes=1000)
    return tv.load_torch_file(model, path, torch_layers(model), TORCH_IGNORE)
