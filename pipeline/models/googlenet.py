"""GoogLeNet (Inception v1) in Keras, laid out like torchvision's ``googlenet`` (inference path).

Layout from ``torchvision/models/googlenet.py`` (torchvision 0.29.1): ``conv1`` (7x7/2, padding 3),
``maxpool1``, ``conv2`` (1x1), ``conv3`` (3x3, padding 1), ``maxpool2``, ``inception3a``/``3b``,
``maxpool3``, ``inception4a``-``4e``, ``maxpool4`` (2x2/2), ``inception5a``/``5b``, average pool,
``Dropout(0.2)``, ``fc``. Every max pool has ``ceil_mode=True``. Each conv is a ``BasicConv2d``
(``<name>.conv`` without bias, ``<name>.bn`` with **eps 0.001**, ReLU). An ``Inception`` module
concatenates ``branch1`` (1x1), ``branch2`` (1x1, 3x3), ``branch3`` (1x1, then 3x3: torchvision's
known 3x3-instead-of-5x5, pytorch/vision#906, which its weights were trained with) and ``branch4``
(3x3/1 max pool, padding 1, then 1x1). Keras layer names are the state-dict prefixes with
``.`` -> ``_``.

**Aux heads.** ``aux1``/``aux2`` (``InceptionAux``) only run in training mode; this model leaves
them out, but torchvision's ImageNet file holds their weights, so ``TORCH_IGNORE`` lists them for
``assign_torch_weights(..., ignore=TORCH_IGNORE)``.

**transform_input.** ``googlenet(weights=IMAGENET1K_V1)`` sets ``transform_input=True``: the model
maps its input, normalised with the usual ImageNet mean and std, to ``(rgb / 255 - 0.5) / 0.5``
(``x * std / 0.5 + (mean - 0.5) / 0.5`` per channel) before ``conv1``; the ported weights expect
that. This Keras model has no such step, so ``PREPROCESSING`` gives the mean and std it needs
(0.5 each), and ``torchvision_mean``/``torchvision_std`` the ones torchvision's transform applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.models import torchvision_layout as tv
from pipeline.models.torch_weights import TorchLayer

TORCHVISION_NAME = "googlenet"
WEIGHTS_FILE = "googlenet-1378be20.pth"  # GoogLeNet_Weights.IMAGENET1K_V1
WEIGHTS_URL = tv.DOWNLOAD_ROOT + WEIGHTS_FILE
PREPROCESSING = tv.imagenet_preprocessing(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), transform_input=True,
    torchvision_mean=tv.IMAGENET_MEAN, torchvision_std=tv.IMAGENET_STD,
    note="transform_input=True folded in: (rgb / 255 - 0.5) / 0.5 equals torchvision's "
         "transform of (rgb / 255 - torchvision_mean) / torchvision_std")
TORCH_IGNORE: tuple[str, ...] = ("aux1.", "aux2.")
FEATURE_LAYER = "avg_pool"
FEATURE_WIDTH = 1024
HEAD_INPUT = "dropout"  # torchvision's self.dropout before fc
DROPOUT = 0.2
BN_EPS = 0.001  # BasicConv2d

# name -> (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3 in torchvision), pool proj), or "pool"
# with (kernel, stride)
BODY = (("inception3a", (64, 96, 128, 16, 32, 32)), ("inception3b", (128, 128, 192, 32, 96, 64)),
        ("maxpool3", (3, 2)),
        ("inception4a", (192, 96, 208, 16, 48, 64)), ("inception4b", (160, 112, 224, 24, 64, 64)),
        ("inception4c", (128, 128, 256, 24, 64, 64)), ("inception4d", (112, 144, 288, 32, 64, 64)),
        ("inception4e", (256, 160, 320, 32, 128, 128)), ("maxpool4", (2, 2)),
        ("inception5a", (256, 160, 320, 32, 128, 128)),
        ("inception5b", (384, 192, 384, 48, 128, 128)))


def feature_map_size(input_size: int) -> int:
    """Side of the last feature map for a square input (0 if some layer would be empty)."""
    n = tv.conv_size(input_size, 7, 2, 3)
    for kernel in (3, 3) + tuple(s[0] for name, s in BODY if name.startswith("maxpool")):
        n = tv.ceil_pool_size(n, kernel, 2) if n >= 1 else 0
    return max(n, 0)


MIN_INPUT_SIZE = next(n for n in range(1, 512) if feature_map_size(n) >= 1)


def basic_conv(x: Any, filters: int, kernel: int, prefix: str, *, stride: int = 1,
               padding: int = 0) -> Any:
    """torchvision's ``BasicConv2d`` at ``prefix``: conv (no bias), BN (eps 0.001), ReLU."""
    x = tv.conv(x, filters, kernel, f"{prefix}.conv", stride=stride, padding=padding)
    return tv.relu(tv.bn(x, f"{prefix}.bn", BN_EPS), tv.keras_name(prefix) + "_relu")


def inception(x: Any, widths: tuple[int, ...], prefix: str) -> Any:
    """torchvision's ``Inception`` at ``prefix`` (e.g. ``"inception3a"``).

    Args:
        x: input tensor, channels last (a post-ReLU map, as everywhere in GoogLeNet).
        widths: ``ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj``.
        prefix: the module's state-dict prefix.

    Returns:
        The four branches concatenated (``1x1 + 3x3 + "5x5" + pool_proj`` channels).
    """
    import keras

    ch1, red3, ch3, red5, ch5, proj = widths
    b1 = basic_conv(x, ch1, 1, f"{prefix}.branch1")
    b2 = basic_conv(basic_conv(x, red3, 1, f"{prefix}.branch2.0"), ch3, 3, f"{prefix}.branch2.1",
                    padding=1)
    b3 = basic_conv(basic_conv(x, red5, 1, f"{prefix}.branch3.0"), ch5, 3, f"{prefix}.branch3.1",
                    padding=1)
    # MaxPool2d(3, 1, padding=1, ceil_mode=True): ceil_mode changes nothing at stride 1, and Keras'
    # "same" pads 1 on each side here, ignoring the padding like PyTorch's -inf.
    b4 = keras.layers.MaxPooling2D(3, strides=1, padding="same",
                                   name=tv.keras_name(prefix) + "_branch4_0")(x)
    b4 = basic_conv(b4, proj, 1, f"{prefix}.branch4.1")
    return keras.layers.Concatenate(name=tv.keras_name(prefix) + "_concat")([b1, b2, b3, b4])


def build(input_size: int = 224, classes: int = 1000) -> Any:
    """Keras GoogLeNet with torchvision's layer layout, without aux heads and transform_input.

    Args:
        input_size: side of the square input, at least ``MIN_INPUT_SIZE``.
        classes: outputs of ``predictions`` (torchvision's ``fc``).

    Returns:
        A ``keras.Model`` from images preprocessed as ``PREPROCESSING`` says (mean and std 0.5),
        shape (n, input_size, input_size, 3) float32, to probabilities (n, classes); features
        (n, ``FEATURE_WIDTH``) at layer ``avg_pool``.

    Raises:
        PipelineError: for an input smaller than ``MIN_INPUT_SIZE``.
    """
    import keras

    tv.check_input_size(TORCHVISION_NAME, input_size, MIN_INPUT_SIZE)
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = basic_conv(inputs, 64, 7, "conv1", stride=2, padding=3)
    x = tv.max_pool(x, 3, 2, "maxpool1", ceil_mode=True)
    x = basic_conv(x, 64, 1, "conv2")
    x = basic_conv(x, 192, 3, "conv3", padding=1)
    x = tv.max_pool(x, 3, 2, "maxpool2", ceil_mode=True)
    for name, spec in BODY:
        if name.startswith("maxpool"):
            x = tv.max_pool(x, *spec, name, ceil_mode=True)
        else:
            x = inception(x, spec, name)
    return keras.Model(inputs, tv.head(x, classes, DROPOUT), name="googlenet")


def torch_layers(model: Any) -> list[TorchLayer]:
    """The mapping of ``model`` (from ``build``) onto torchvision's ``googlenet`` state dict.

    Use it with ``assign_torch_weights(..., ignore=TORCH_IGNORE)``: the aux heads are not mapped.

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
