"""MnasNet 1.0 (B1 variant) in Keras, laid out like torchvision's ``mnasnet1_0``.

Layout from ``torchvision/models/mnasnet.py`` (torchvision 0.29.1, model version 2, which is the
same as version 1 at width 1.0): ``layers`` is one ``nn.Sequential`` (stem conv, depthwise-separable
conv, six stacks of ``_InvertedResidual`` at indices 8-13, a 1x1 conv to 1280 at 14-16), then
``classifier`` = ``Dropout(0.2)`` + ``Linear(1280, classes)``. Every BN has PyTorch's default eps
1e-5 (torchvision only changes the momentum, which inference does not use). Keras layer names are
the state-dict prefixes with ``.`` -> ``_`` (``layers.8.0.layers.3`` -> ``layers_8_0_layers_3``);
see ``pipeline.models.torchvision_layout``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.models import torchvision_layout as tv
from pipeline.models.torch_weights import TorchLayer

TORCHVISION_NAME = "mnasnet1_0"
WEIGHTS_FILE = "mnasnet1.0_top1_73.512-f206786ef8.pth"  # MNASNet1_0_Weights.IMAGENET1K_V1
WEIGHTS_URL = tv.DOWNLOAD_ROOT + WEIGHTS_FILE
PREPROCESSING = tv.imagenet_preprocessing()
TORCH_IGNORE: tuple[str, ...] = ()
FEATURE_LAYER = "avg_pool"
FEATURE_WIDTH = 1280
HEAD_INPUT = "dropout"  # torchvision's classifier.0; replace_head builds the new Dense on it
DROPOUT = 0.2

STEM = (32, 16)  # _get_depths(1.0)[:2]
# _stack(in, out, kernel, stride, expansion, repeats) at layers.8 ... layers.13
STACKS = ((16, 24, 3, 2, 3, 3), (24, 40, 5, 2, 3, 3), (40, 80, 5, 2, 6, 3),
          (80, 96, 3, 1, 6, 2), (96, 192, 5, 2, 6, 4), (192, 320, 3, 1, 6, 1))


def feature_map_size(input_size: int) -> int:
    """Side of the last feature map for a square input (0 if some layer would be empty)."""
    n = tv.conv_size(input_size, 3, 2, 1)
    for _, _, kernel, stride, _, _ in STACKS:
        n = tv.conv_size(n, kernel, stride, kernel // 2)
    return max(n, 0)


MIN_INPUT_SIZE = next(n for n in range(1, 512) if feature_map_size(n) >= 1)


def inverted_residual(x: Any, out_ch: int, kernel: int, stride: int, expansion: int,
                      prefix: str) -> Any:
    """torchvision's ``_InvertedResidual`` at ``prefix`` (keys ``<prefix>.layers.0`` ... ``.7``).

    Args:
        x: input tensor, channels last.
        out_ch: output channels.
        kernel: depthwise kernel size (3 or 5; padding ``kernel // 2``).
        stride: depthwise stride.
        expansion: expansion factor of the first 1x1 conv.
        prefix: the block's state-dict prefix, e.g. ``"layers.8.0"``.

    Returns:
        The block's output; the input is added when shapes allow (``in == out`` and stride 1).
    """
    import keras

    in_ch = int(x.shape[-1])
    p = f"{prefix}.layers"
    y = tv.conv(x, in_ch * expansion, 1, f"{p}.0")
    y = tv.relu(tv.bn(y, f"{p}.1"), tv.keras_name(f"{p}.2"))
    y = tv.depthwise(y, kernel, f"{p}.3", stride=stride, padding=kernel // 2)
    y = tv.relu(tv.bn(y, f"{p}.4"), tv.keras_name(f"{p}.5"))
    y = tv.bn(tv.conv(y, out_ch, 1, f"{p}.6"), f"{p}.7")  # linear bottleneck: no ReLU
    if in_ch == out_ch and stride == 1:
        y = keras.layers.Add(name=tv.keras_name(prefix) + "_add")([y, x])
    return y


def build(input_size: int = 224, classes: int = 1000) -> Any:
    """Keras MnasNet 1.0 with torchvision's layer layout.

    Args:
        input_size: side of the square input, at least ``MIN_INPUT_SIZE``.
        classes: outputs of ``predictions`` (torchvision's ``classifier.1``).

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
    x = tv.conv(inputs, STEM[0], 3, "layers.0", stride=2, padding=1)
    x = tv.relu(tv.bn(x, "layers.1"), "layers_2")
    x = tv.depthwise(x, 3, "layers.3", padding=1)
    x = tv.relu(tv.bn(x, "layers.4"), "layers_5")
    x = tv.bn(tv.conv(x, STEM[1], 1, "layers.6"), "layers.7")  # no ReLU in torchvision either
    for i, (_, out_ch, kernel, stride, expansion, repeats) in enumerate(STACKS):
        for j in range(repeats):
            x = inverted_residual(x, out_ch, kernel, stride if j == 0 else 1, expansion,
                                  f"layers.{8 + i}.{j}")
    x = tv.conv(x, FEATURE_WIDTH, 1, "layers.14")
    x = tv.relu(tv.bn(x, "layers.15"), "layers_16")
    return keras.Model(inputs, tv.head(x, classes, DROPOUT), name="mnasnet1_0")


def torch_layers(model: Any) -> list[TorchLayer]:
    """The mapping of ``model`` (from ``build``) onto torchvision's ``mnasnet1_0`` state dict.

    Args:
        model: a model from ``build`` (any input size and number of classes).

    Returns:
        One ``TorchLayer`` per Keras layer with weights, for ``assign_torch_weights``.
    """
    return tv.torch_layers_by_name(model, "classifier.1")


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
