"""The training recipe of Menegola et al. (2017), as a value object shared by every training run.

Kept apart from ``pipeline.training.train`` so that the config can build and validate it without importing
TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
        learning_rate: SGD learning rate.
        momentum: Nesterov momentum.
        nesterov: use Nesterov momentum (the paper does).
        l2: L2 regularisation factor on every kernel (added to the loss as ``l2 * sum(w**2)``).
        validation_fraction: stratified fraction of the training images held out to pick the epoch.
        augment: ``"minority"`` (the paper: augment only the minority classes to balance them) or
            ``"none"``.
        scale_range: random scaling factor range of the augmentation.
        rotation_degrees: random rotation range (±) of the augmentation.
        flip: random horizontal and vertical flips in the augmentation.
        mixed_precision: float16 compute on a GPU (an option; off in the paper).
        batchnorm: the inference statistics of BatchNormalization layers: ``"moving"`` (Keras's
            moving averages) or ``"precise"`` (recomputed over the training images after every
            epoch, ``pipeline.training.batchnorm``). The paper's VGG has no BatchNormalization.
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

    def as_dict(self) -> dict:
        """The recipe as a plain dict (for cache keys and manifests)."""
        return asdict(self)
