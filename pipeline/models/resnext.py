"""ResNeXt-50 32x4d in Keras, laid out like torchvision's ``resnext50_32x4d``.

Layout from ``torchvision/models/resnet.py`` (torchvision 0.29.1; ``ResNet(Bottleneck, [3, 4, 6, 3],
groups=32, width_per_group=4)``): ``conv1`` (7x7/2, padding 3, no bias), ``bn1``, ReLU, ``maxpool``
(3x3/2, padding 1), ``layer1``-``layer4`` of 3, 4, 6, 3 ``Bottleneck`` blocks, average pool, ``fc``.
A block is ``conv1`` (1x1 to ``width = planes * 4 / 64 * 32``), ``bn1``, ReLU, ``conv2`` (3x3 with
**32 groups**, padding 1, carrying the block's stride: "ResNet V1.5"), ``bn2``, ReLU, ``conv3``
(1x1 to ``planes * 4``), ``bn3``, plus the shortcut (``downsample.0`` 1x1 conv with the stride and
``downsample.1`` BN in each layer's first block), ReLU. BN eps is PyTorch's default 1e-5. Keras
``Conv2D(groups=32)`` splits input and output channels into contiguous groups as PyTorch does, and
its kernel (3, 3, width / 32, width) is PyTorch's (width, width / 32, 3, 3) transposed (kind
``conv``). Keras layer names are the state-dict prefixes with ``.`` -> ``_``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.models import torchvision_layout as tv
from pipeline.models.torch_weights import TorchLayer

TORCHVISION_NAME = "resnext50_32x4d"
WEIGHTS_FILE = "resnext50_32x4d-7cdf4587.pth"  # ResNeXt50_32X4D_Weights.IMAGENET1K_V1
WEIGHTS_URL = tv.DOWNLOAD_ROOT + WEIGHTS_FILE
PREPROCESSING = tv.imagenet_preprocessing()
TORCH_IGNORE: tuple[str, ...] = ()
FEATURE_LAYER = "avg_pool"
FEATURE_WIDTH = 2048
HEAD_INPUT = "avg_pool"  # torchvision has no dropout before fc

GROUPS, WIDTH_PER_GROUP, EXPANSION = 32, 4, 4
LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (planes, blocks, stride)


def feature_map_size(input_size: int) -> int:
    """Side of the last feature map for a square input (0 if some layer would be empty)."""
    n = tv.conv_size(tv.conv_size(input_size, 7, 2, 3), 3, 2, 1)  # conv1, maxpool
    for _, _, stride in LAYERS:
        n = tv.conv_size(n, 3, stride, 1)
    return max(n, 0)


MIN_INPUT_SIZE = next(n for n in range(1, 512) if feature_map_size(n) >= 1)


def bottleneck(x: Any, planes: int, stride: int, prefix: str, groups: int = GROUPS,
               width_per_group: int = WIDTH_PER_GROUP) -> Any:
    """torchvision's ``Bottleneck`` at ``prefix`` (e.g. ``"layer2.0"``).

    Args:
        x: input tensor, channels last.
        planes: the block's ``planes`` (output channels ``planes * 4``).
        stride: stride of ``conv2`` and of the shortcut conv.
        prefix: the block's state-dict prefix.
        groups: groups of the 3x3 conv (cardinality).
        width_per_group: channels per group at ``planes=64``.

    Returns:
        ``relu(bn3(conv3(...)) + shortcut)``; the shortcut is ``downsample`` when the stride or the
        width changes, else the input.
    """
    import keras

    name = tv.keras_name(prefix)
    width = int(planes * (width_per_group / 64.0)) * groups
    out_ch = planes * EXPANSION
    y = tv.relu(tv.bn(tv.conv(x, width, 1, f"{prefix}.conv1"), f"{prefix}.bn1"), name + "_relu1")
    y = tv.conv(y, width, 3, f"{prefix}.conv2", stride=stride, padding=1, groups=groups)
    y = tv.relu(tv.bn(y, f"{prefix}.bn2"), name + "_relu2")
    y = tv.bn(tv.conv(y, out_ch, 1, f"{prefix}.conv3"), f"{prefix}.bn3")
    shortcut = x
    if stride != 1 or int(x.shape[-1]) != out_ch:
        shortcut = tv.conv(x, out_ch, 1, f"{prefix}.downsample.0", stride=stride)
        shortcut = tv.bn(shortcut, f"{prefix}.downsample.1")
    y = keras.layers.Add(name=name + "_add")([y, shortcut])
    return tv.relu(y, name + "_relu3")


def build(input_size: int = 224, classes: int = 1000) -> Any:
    """Keras ResNeXt-50 32x4d with torchvision's layer layout.

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
    x = tv.conv(inputs, 64, 7, "conv1", stride=2, padding=3)
    x = tv.relu(tv.bn(x, "bn1"), "relu")
    x = tv.max_pool(x, 3, 2, "maxpool", padding=1)
    for i, (planes, blocks, stride) in enumerate(LAYERS, 1):
        for j in range(blocks):
            x = bottleneck(x, planes, stride if j == 0 else 1, f"layer{i}.{j}")
    return keras.Model(inputs, tv.head(x, classes), name="resnext50_32x4d")


def torch_layers(model: Any) -> list[TorchLayer]:
    """The mapping of ``model`` (from ``build``) onto torchvision's ``resnext50_32x4d``.

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
