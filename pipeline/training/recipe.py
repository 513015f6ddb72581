"""The training recipe of Menegola et al. (2017), as a value object shared by every training run.

Kim & Rocheteau's (2020) recipe is the same object with other values: ``optimizer = "adam"``,
early stopping (patience 3, at most 15 epochs), learning-rate step decay 0.4 on a plateau of 1
epoch, augmentation of every class, brightness and saturation shifts. Their keys default to
Menegola's behaviour (SGD, no early stopping, no decay, minority augmentation, no colour shifts),
and ``as_dict`` leaves them out while they hold those defaults, so every cache key and checkpoint
of a Menegola run stays what it was.

Kept apart from ``pipeline.training.train`` so that the config can build and validate it without importing
TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

OPTIMIZERS = ("sgd", "adam")
AUGMENTATIONS = ("minority", "all", "none")
# Keys added for Kim & Rocheteau (2020), and XLA, with the default that reproduces Menegola's
# behaviour (left out of cache keys at that default).
EXTENSION_DEFAULTS = {"optimizer": "sgd", "early_stopping_patience": 0, "lr_decay_factor": 1.0,
                      "lr_decay_patience": 1, "brightness_range": 0.0, "saturation_range": 0.0,
                      "jit_compile": False}


@dataclass(frozen=True)
class TrainRecipe:
    """Hyper-parameters of one training run (training from scratch, fine-tuning, Retinopathy).

    Defaults are the paper's: SGD with Nesterov momentum 0.1, learning rate 1e-3, L2 5e-3, 60 epochs,
    10% stratified validation split, weights with the lowest validation loss kept, minority classes
    augmented (random scaling, rotation, flipping) until the classes are balanced. The batch size
    (48) is the reference code's; the paper does not state one.

    Attributes:
        epochs: number of epochs (paper 60; the reference code runs 80).
        batch_size: images per SGD step.
        learning_rate: the optimizer's (initial) learning rate.
        momentum: Nesterov momentum (SGD only).
        nesterov: use Nesterov momentum (the paper does; SGD only).
        l2: L2 regularisation factor on every kernel (added to the loss as ``l2 * sum(w**2)``).
        validation_fraction: stratified fraction of the training images held out to pick the epoch.
        augment: ``"minority"`` (the paper: augment only the minority classes to balance them),
            ``"all"`` (Kim & Rocheteau: every training image transformed each epoch, classes left
            unbalanced) or ``"none"``.
        scale_range: random scaling factor range of the augmentation.
        rotation_degrees: random rotation range (±) of the augmentation.
        flip: random horizontal and vertical flips in the augmentation.
        mixed_precision: float16 compute on a GPU (an option; off in the paper; a CPU ignores
            it and trains in float32, logged).
        jit_compile: compile the training and validation steps with XLA
            (``tf.function(jit_compile=True)``); off (the default) leaves TensorFlow's own
            choice, as before the option existed. XLA fuses ops and rounds floats differently, so
            it joins the trained network's cache key when on.
        batchnorm: the inference statistics of BatchNormalization layers: ``"moving"`` (Keras's
            moving averages) or ``"precise"`` (recomputed over the training images after every
            epoch, ``pipeline.training.batchnorm``). The paper's VGG has no BatchNormalization.
        optimizer: ``"sgd"`` (Menegola) or ``"adam"`` (Kim & Rocheteau).
        early_stopping_patience: stop after this many epochs without a lower validation loss
            (Kim & Rocheteau: 3, with ``epochs = 15`` as the maximum); 0 runs every epoch.
        lr_decay_factor: multiply the learning rate by this after ``lr_decay_patience`` epochs
            without a lower validation loss (Kim & Rocheteau: 0.4 after 1); 1 never decays.
        lr_decay_patience: epochs without improvement before a decay (counted again from each
            decay).
        brightness_range: augmented copies' brightness multiplied by a factor uniform in
            [1 - r, 1 + r]; 0: unchanged.
        saturation_range: augmented copies' saturation multiplied likewise (blend with the
            grey image); 0: unchanged.
    """

    epochs: int = 60
    batch_size: int = 48
    learning_rate: float = 1e-3
    momentum: float = 0.1
    nesterov: bool = True
    l2: float = 5e-3
    validation_fraction: float = 0.1
    augment: str = "minority"
    scale_range: tuple[float, float] = (0.8, 1.2)
    rotation_degrees: float = 180.0
    flip: bool = True
    mixed_precision: bool = False
    batchnorm: str = "moving"
    optimizer: str = "sgd"
    early_stopping_patience: int = 0
    lr_decay_factor: float = 1.0
    lr_decay_patience: int = 1
    brightness_range: float = 0.0
    saturation_range: float = 0.0
    jit_compile: bool = False

    def as_dict(self) -> dict:
        """The recipe as a plain dict (for cache keys and manifests); the Kim & Rocheteau keys
        only where they differ from Menegola's defaults (``EXTENSION_DEFAULTS``)."""
        return {k: v for k, v in asdict(self).items()
                if k not in EXTENSION_DEFAULTS or v != EXTENSION_DEFAULTS[k]}


assert all(getattr(TrainRecipe(), k) == v for k, v in EXTENSION_DEFAULTS.items())
assert set(EXTENSION_DEFAULTS) <= {f.name for f in fields(TrainRecipe)}
