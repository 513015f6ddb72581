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
BATCHNORM_MODES = ("moving", "precise", "frozen")
LR_SCHEDULES = ("constant", "cosine")
# Keys added for Kim & Rocheteau (2020), and XLA, with the default that reproduces Menegola's
# behaviour (left out of cache keys at that default).
EXTENSION_DEFAULTS = {"optimizer": "sgd", "early_stopping_patience": 0, "lr_decay_factor": 1.0,
                      "lr_decay_patience": 1, "brightness_range": 0.0, "saturation_range": 0.0,
                      "jit_compile": False, "head_epochs": 0, "head_learning_rate": 0.0,
                      "lr_schedule": "constant", "warmup_epochs": 0}


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
        batchnorm: BatchNormalization layers: ``"moving"`` (the paper's SGD on every layer:
            batch statistics in training, Keras's moving averages at inference), ``"precise"``
            (the same, the inference statistics recomputed over the training images after every
            epoch, ``pipeline.training.batchnorm``) or ``"frozen"`` (every BatchNormalization
            layer in inference mode with the source network's statistics, its scale and offset
            not trained, while the other weights train: the Keras transfer-learning guide's
            recipe for fine-tuning a network with BatchNormalization). The paper's VGG has no
            BatchNormalization.
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
        head_epochs: linear probing, then fine-tuning (Kumar et al., ICLR 2022): the new head
            alone trains for this many epochs, every other layer frozen and in inference mode,
            before every layer trains for ``epochs``; 0 (the paper) trains every layer from the
            first step. The weights of the lowest validation loss over all epochs are kept.
        head_learning_rate: the new head's learning rate (SGD only: its gradients are scaled by
            ``head_learning_rate / learning_rate``, which for SGD with momentum is exactly a
            learning rate of its own); 0 (the paper): ``learning_rate``.
        lr_schedule: ``"constant"`` (the paper) or ``"cosine"``: the learning rate (the head's
            too) falls from its value to 0 over the steps of the ``epochs`` fine-tuning epochs
            on a half cosine, after a linear warm-up over the first ``warmup_epochs`` of them
            (Goyal et al. 2017; Loshchilov & Hutter, SGDR, 2017). The head epochs run at the
            constant head learning rate.
        warmup_epochs: epochs of linear warm-up from 0 of the cosine schedule.
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
    head_epochs: int = 0
    head_learning_rate: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: int = 0

    @property
    def total_epochs(self) -> int:
        """Epochs of the run: the head epochs, then the ``epochs`` of every layer."""
        return self.head_epochs + self.epochs

    @property
    def head_rate(self) -> float:
        """The new head's learning rate (``learning_rate`` unless ``head_learning_rate``)."""
        return self.head_learning_rate or self.learning_rate

    def problem(self) -> str:
        """What is inconsistent between the recipe's keys ('' if nothing), e.g. a head learning
        rate with Adam; the config and ``train_classifier`` refuse such a recipe."""
        if self.head_learning_rate and self.optimizer != "sgd":
            return ("head_learning_rate needs optimizer = \"sgd\" (it scales the head's "
                    "gradients, which Adam's update ignores); remove it or use SGD")
        if self.lr_schedule not in LR_SCHEDULES:
            return f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}"
        if self.lr_schedule != "constant" and self.lr_decay_factor < 1:
            return ("lr_schedule = \"cosine\" with lr_decay_factor < 1: two learning-rate rules; "
                    "keep one")
        if self.warmup_epochs and self.lr_schedule == "constant":
            return "warmup_epochs needs lr_schedule = \"cosine\""
        if self.warmup_epochs >= self.epochs and self.warmup_epochs:
            return (f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs "
                    f"({self.epochs})")
        if self.head_epochs < 0 or self.warmup_epochs < 0 or self.head_learning_rate < 0:
            return "head_epochs, warmup_epochs and head_learning_rate must be >= 0"
        return ""

    def as_dict(self) -> dict:
        """The recipe as a plain dict (for cache keys and manifests); the Kim & Rocheteau keys
        only where they differ from Menegola's defaults (``EXTENSION_DEFAULTS``)."""
        return {k: v for k, v in asdict(self).items()
                if k not in EXTENSION_DEFAULTS or v != EXTENSION_DEFAULTS[k]}


assert all(getattr(TrainRecipe(), k) == v for k, v in EXTENSION_DEFAULTS.items())
assert set(EXTENSION_DEFAULTS) <= {f.name for f in fields(TrainRecipe)}
