"""The "standard CNN" of Kim & Rocheteau (2020), the baseline trained without transfer learning.

What the paper states (Sec. 3.1: "a standard 5-layer CNN with no transfer learning"; Appendix B,
Table 2, final values of a random search): 5 convolution layers, kernel size 4, 11 convolution
filters, pool size 3, dropout 0.4 (and, for training, batch size 8 and learning rate 0.00977 with
Adam, Appendix C). Images are 3 x 224 x 224 (Sec. 3).

What the paper leaves unstated, and what this module chooses. The choices follow the authors'
released code (github.com/aimadeus/Transfer_learning_melanoma, ``train.py``, ``CustomNetwork``)
where it answers, since it is the implementation behind the reported numbers:

* filters per layer: 11 in every conv layer (the table gives one number);
* conv stride 1, no padding ("valid"), with bias; ReLU after every conv; no batch normalisation;
* dropout: one ``Dropout(0.4)`` after every conv's ReLU (the paper says only "dropout 0.4");
* pooling: a single 3x3 max pool with stride 3 (PyTorch's default stride = kernel, floor mode)
  after the fifth conv, not one per layer (five pools of 3 would need inputs of at least 243 px
  for any output at all);
* head: the paper's Fig. 1 concatenates the CNN output with static data (age, sex, body site)
  before one final layer; this pipeline classifies images only, so the head is
  ``Dense(classes, softmax)`` named ``predictions`` on the image features;
* features: the authors flatten the pooled map (69 x 69 x 11 = 52,371 values at 224 px). The
  pipeline's contract is a global average pool named ``avg_pool`` (``FEATURE_WIDTH`` = 11, any
  input size), which is the default here (``pooling="avg"``) and a deviation from their code;
  ``pooling="flatten"`` gives their layout instead (feature layer ``flatten``, width
  ``flatten_width(input_size)``);
* initialisation: Keras' defaults (the registry applies its own no-transfer init).

There are no pretrained weights.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError

LAYERS = 5
KERNEL_SIZE = 4
FILTERS = 11
POOL_SIZE = 3
DROPOUT = 0.4
FEATURE_LAYER = "avg_pool"  # with pooling="avg"; "flatten" otherwise
FEATURE_WIDTH = FILTERS  # with pooling="avg"
HEAD_INPUT = "avg_pool"


def feature_map_size(input_size: int) -> int:
    """Side of the pooled map for a square input (0 if it would be empty)."""
    n = input_size - LAYERS * (KERNEL_SIZE - 1)
    return max(n // POOL_SIZE, 0) if n >= 1 else 0


MIN_INPUT_SIZE = next(n for n in range(1, 512) if feature_map_size(n) >= 1)


def flatten_width(input_size: int) -> int:
    """Features of ``pooling="flatten"``: the pooled map's size, e.g. 52,371 at 224 px."""
    return feature_map_size(input_size) ** 2 * FILTERS


def build(input_size: int = 224, classes: int = 1000, *, pooling: str = "avg",
          seed: int | None = None) -> Any:
    """The standard CNN as a Keras functional model.

    Args:
        input_size: side of the square RGB input, at least ``MIN_INPUT_SIZE``.
        classes: outputs of ``predictions``.
        pooling: ``"avg"`` (global average pool ``avg_pool``, the pipeline's feature layer) or
            ``"flatten"`` (``flatten``, the authors' code).
        seed: seed of the dropout layers (layer ``i`` gets ``seed + i``); ``None``: unseeded.

    Returns:
        A ``keras.Model`` from images of shape (n, input_size, input_size, 3) float32 to
        probabilities (n, classes).

    Raises:
        PipelineError: for an input smaller than ``MIN_INPUT_SIZE`` or an unknown ``pooling``.
    """
    import keras

    if input_size < MIN_INPUT_SIZE:
        raise PipelineError(f"standard-cnn needs an input of at least {MIN_INPUT_SIZE} px; got "
                            f"input_size={input_size}.")
    if pooling not in ("avg", "flatten"):
        raise PipelineError(f"standard-cnn pooling must be 'avg' or 'flatten'; got {pooling!r}.")
    L = keras.layers
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = inputs
    for i in range(1, LAYERS + 1):
        x = L.Conv2D(FILTERS, KERNEL_SIZE, activation="relu", name=f"conv{i}")(x)
        x = L.Dropout(DROPOUT, seed=None if seed is None else seed + i, name=f"dropout{i}")(x)
    x = L.MaxPooling2D(POOL_SIZE, name="pool")(x)  # Keras' default stride = pool size, as PyTorch's
    if pooling == "avg":
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = L.Flatten(name="flatten")(x)
    x = L.Dense(classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, x, name="standard_cnn")
