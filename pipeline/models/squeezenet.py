"""SqueezeNet 1.1 in Keras, laid out like torchvision's ``squeezenet1_1``.

Layout from ``torchvision/models/squeezenet.py`` (torchvision 0.29.1, ``version="1_1"``):
``features`` = 3x3/2 conv (64, with bias), ReLU, ``MaxPool2d(3, 2, ceil_mode=True)``, Fire 3-4,
pool, Fire 6-7, pool, Fire 9-12 (indices in ``features``); a ``Fire`` is ``squeeze`` (1x1 + ReLU)
then ``expand1x1`` (1x1 + ReLU) and ``expand3x3`` (3x3, padding 1, + ReLU) concatenated in that
order. No BatchNorm. ``classifier`` = ``Dropout(0.5)``, ``Conv2d(512, classes, 1)`` (index 1), ReLU,
``AdaptiveAvgPool2d(1)``. Keras layer names are the state-dict prefixes with ``.`` -> ``_``.

**Feature layer and head (a choice).** torchvision's classifier is convolutional, so it has no
pooled feature vector. Here ``avg_pool`` is the global average pool of the last Fire module's
output (``features.12``, 512 channels): the input of torchvision's classifier, pooled, which is the
only representation before any class-specific weights, of the same width for every ``classes``,
and what the paper's "replace the last layer" transfer keeps. ``predictions`` is a ``Dense`` on it
with the weights of ``classifier.1`` (a 1x1 conv is a linear map of each position, and averaging
commutes with it). The one thing this changes is torchvision's ReLU between that conv and the
pool: ``pool(relu(conv(x)))`` becomes ``softmax(conv(pool(x)))``, so with ImageNet weights the 1000
ImageNet probabilities differ somewhat from torchvision's (the features are identical).
``torch_weights`` has no kind for a 1x1 conv onto a Dense, so ``prepare_torch_state`` reshapes
``classifier.1.weight`` from (classes, 512, 1, 1) to (classes, 512) before ``assign_torch_weights``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.models import torchvision_layout as tv
from pipeline.models.torch_weights import TorchLayer

TORCHVISION_NAME = "squeezenet1_1"
WEIGHTS_FILE = "squeezenet1_1-b8a52dc0.pth"  # SqueezeNet1_1_Weights.IMAGENET1K_V1
WEIGHTS_URL = tv.DOWNLOAD_ROOT + WEIGHTS_FILE
PREPROCESSING = tv.imagenet_preprocessing()
TORCH_IGNORE: tuple[str, ...] = ()
FEATURE_LAYER = "avg_pool"
FEATURE_WIDTH = 512
HEAD_INPUT = "dropout"  # torchvision's classifier.0 (here on the pooled features)
DROPOUT = 0.5
CLASSIFIER = "classifier.1"

# features index -> ("fire", squeeze, expand1x1, expand3x3) or ("pool",)
FEATURES = {3: ("fire", 16, 64, 64), 4: ("fire", 16, 64, 64), 5: ("pool",),
            6: ("fire", 32, 128, 128), 7: ("fire", 32, 128, 128), 8: ("pool",),
            9: ("fire", 48, 192, 192), 10: ("fire", 48, 192, 192),
            11: ("fire", 64, 256, 256), 12: ("fire", 64, 256, 256)}


def feature_map_size(input_size: int) -> int:
    """Side of the last feature map for a square input (0 if some layer would be empty)."""
    n = tv.conv_size(input_size, 3, 2)
    for _ in range(3):  # features.2, .5, .8
        n = tv.ceil_pool_size(n, 3, 2) if n >= 1 else 0
    return max(n, 0)


MIN_INPUT_SIZE = next(n for n in range(1, 512) if feature_map_size(n) >= 1)


def fire(x: Any, squeeze: int, expand1x1: int, expand3x3: int, prefix: str) -> Any:
    """torchvision's ``Fire`` at ``prefix`` (e.g. ``"features.3"``).

    Args:
        x: input tensor, channels last.
        squeeze: channels of the 1x1 squeeze conv.
        expand1x1: channels of the 1x1 expand conv.
        expand3x3: channels of the 3x3 expand conv (padding 1).
        prefix: the module's state-dict prefix.

    Returns:
        ``concat([relu(expand1x1(s)), relu(expand3x3(s))])`` with ``s = relu(squeeze(x))``.
    """
    import keras

    name = tv.keras_name(prefix)
    s = tv.relu(tv.conv(x, squeeze, 1, f"{prefix}.squeeze", bias=True), name + "_squeeze_relu")
    a = tv.relu(tv.conv(s, expand1x1, 1, f"{prefix}.expand1x1", bias=True),
                name + "_expand1x1_relu")
    b = tv.relu(tv.conv(s, expand3x3, 3, f"{prefix}.expand3x3", padding=1, bias=True),
                name + "_expand3x3_relu")
    return keras.layers.Concatenate(name=name + "_concat")([a, b])


def build(input_size: int = 224, classes: int = 1000) -> Any:
    """Keras SqueezeNet 1.1 with torchvision's layer layout (head: see the module docstring).

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
    x = tv.relu(tv.conv(inputs, 64, 3, "features.0", stride=2, bias=True), "features_1")
    x = tv.max_pool(x, 3, 2, "features_2", ceil_mode=True)
    for index, spec in FEATURES.items():
        if spec[0] == "pool":
            x = tv.max_pool(x, 3, 2, f"features_{index}", ceil_mode=True)
        else:
            x = fire(x, *spec[1:], f"features.{index}")
    return keras.Model(inputs, tv.head(x, classes, DROPOUT), name="squeezenet1_1")


def prepare_torch_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with ``classifier.1.weight`` as a linear weight (classes, 512).

    ``torch_layers`` maps ``classifier.1`` onto the Dense ``predictions``, which needs this first.

    Args:
        state: a torchvision ``squeezenet1_1`` state dict (as NumPy arrays).

    Returns:
        A shallow copy; the conv weight (classes, 512, 1, 1) is reshaped, anything else (a weight
        already 2-D, or one of another shape, which ``assign_torch_weights`` then reports) is kept.
    """
    out = dict(state)
    key = f"{CLASSIFIER}.weight"
    if key in out:
        value = np.asarray(out[key])
        if value.ndim == 4 and value.shape[2:] == (1, 1):
            out[key] = value.reshape(value.shape[:2])
    return out


def torch_layers(model: Any) -> list[TorchLayer]:
    """The mapping of ``model`` (from ``build``) onto ``prepare_torch_state(state)``.

    Args:
        model: a model from ``build`` (any input size and number of classes).

    Returns:
        One ``TorchLayer`` per Keras layer with weights, for ``assign_torch_weights``.
    """
    return tv.torch_layers_by_name(model, CLASSIFIER)


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
    return tv.load_torch_file(model, path, torch_layers(model), TORCH_IGNORE, prepare_torch_state)
