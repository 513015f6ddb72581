"""The checks of a training call's arguments (``pipeline.training.train.train_classifier``):
images, labels, seed, recipe values and the model's input and softmax, each failure a
``PipelineError`` that says what was expected and what to do."""

from __future__ import annotations

import keras
import numpy as np

from pipeline.errors import PipelineError
from pipeline.training.recipe import AUGMENTATIONS, BATCHNORM_MODES, OPTIMIZERS, TrainRecipe


def check_images(images) -> None:
    """Refuse anything but a non-empty uint8 array of shape (n, height, width, 3)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[-1] != 3:
        raise PipelineError(
            "images must be a uint8 array of shape (n_images, height, width, 3) (the image cache); "
            f"got {type(images).__name__} of dtype {getattr(images, 'dtype', None)} and shape "
            f"{getattr(images, 'shape', None)}. Build them with `python -m pipeline images`.")
    if len(images) == 0:
        raise PipelineError("images is empty; training needs at least two images per class.")


def check_inputs(model, images, y, recipe: TrainRecipe, seed) -> int:
    """Validate the call; returns the number of classes k (the model's softmax width)."""
    check_images(images)
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise PipelineError(f"y must be a 1-D int array of class indices; got dtype {y.dtype} and "
                            f"shape {y.shape}.")
    if len(y) != len(images):
        raise PipelineError(f"images has {len(images)} rows but y has {len(y)} labels; they must "
                            "describe the same images in the same order.")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise PipelineError(f"seed must be an int in [0, 2**32); got {seed!r}.")
    if recipe.augment not in AUGMENTATIONS or recipe.optimizer not in OPTIMIZERS:
        raise PipelineError(f"recipe.augment must be one of {', '.join(AUGMENTATIONS)} and "
                            f"recipe.optimizer one of {', '.join(OPTIMIZERS)}; got "
                            f"{recipe.augment!r}, {recipe.optimizer!r}.")
    if not (recipe.early_stopping_patience >= 0 and 0 < recipe.lr_decay_factor <= 1
            and recipe.lr_decay_patience >= 1
            and 0 <= recipe.brightness_range <= 1 and 0 <= recipe.saturation_range <= 1):
        raise PipelineError("recipe needs early_stopping_patience >= 0, 0 < lr_decay_factor <= 1, "
                            "lr_decay_patience >= 1 and brightness/saturation ranges in [0, 1]; "
                            f"got {recipe.early_stopping_patience}, {recipe.lr_decay_factor}, "
                            f"{recipe.lr_decay_patience}, {recipe.brightness_range}, "
                            f"{recipe.saturation_range}.")
    if recipe.batchnorm not in BATCHNORM_MODES:
        raise PipelineError(f"recipe.batchnorm must be one of {', '.join(BATCHNORM_MODES)}; got "
                            f"{recipe.batchnorm!r}.")
    if recipe.problem():
        raise PipelineError(f"recipe: {recipe.problem()}.")
    if recipe.epochs < 1 or recipe.batch_size < 1 or not 0 < recipe.validation_fraction < 1:
        raise PipelineError("recipe needs epochs >= 1, batch_size >= 1 and 0 < validation_fraction "
                            f"< 1; got {recipe.epochs}, {recipe.batch_size}, "
                            f"{recipe.validation_fraction}.")
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if not isinstance(last, keras.layers.Softmax) and activation is not keras.activations.softmax:
        raise PipelineError(f"the model's last layer {last.name!r} must be a softmax (a Dense with "
                            "activation='softmax'); replace the head with networks.replace_head.")
    classes = int(model.outputs[0].shape[-1])
    expected = tuple(model.inputs[0].shape[1:])
    if any(e is not None and e != g for e, g in zip(expected, images.shape[1:])) \
            or len(expected) != 3:
        raise PipelineError(f"images have shape {images.shape[1:]} per image but the model expects "
                            f"{expected}; build the image cache at the network's input size.")
    if y.min() < 0 or y.max() >= classes:
        raise PipelineError(f"y must hold class indices 0..{classes - 1} (the model's softmax has "
                            f"{classes} outputs); got values {y.min()}..{y.max()}.")
    counts = np.bincount(y, minlength=classes)
    absent = np.flatnonzero(counts == 0).tolist()
    if absent:
        raise PipelineError(f"classes {absent} have no image in y, but the model's softmax has "
                            f"{classes} outputs; give every class images or build the head with "
                            "the number of classes present.")
    short = {c: int(n) for c, n in enumerate(counts) if n < 2}
    if short:
        raise PipelineError("every class needs at least 2 images to stratify the validation "
                            f"split; got class: count {short}. Add images or use a design without "
                            "that class.")
    return classes
