"""Balancing and augmentation of the training epochs, and the ``tf.data`` pipeline that feeds them.

The paper augments only the minority classes, to balance them: each epoch shows every training
image once as it is and, for each minority class, randomly scaled, rotated and flipped extra copies
until the class has as many examples as the majority class. Every random choice is a function of
(seed, epoch) and each copy's transformation of (seed, epoch, image index, copy number), never of
the batch position (the reference code's augmentation depended on it). Kim & Rocheteau (2020)
instead transform every training image each epoch (``augment = "all"``) and shift brightness and
saturation too (``brightness_range``, ``saturation_range``). Used by ``pipeline.training.train``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from pipeline.training.recipe import TrainRecipe


@dataclass(frozen=True)
class EpochPlan:
    """The examples of one epoch, in order.

    Attributes:
        index: int64 array of shape (n_examples,), positions into ``images``.
        augment: bool array of shape (n_examples,), whether the example is a transformed copy.
        transform: float32 array of shape (n_examples, 8), the projective transform mapping output
            to input pixel coordinates (``tf.raw_ops.ImageProjectiveTransformV3``); identity where
            ``augment`` is False.
        color: float32 array of shape (n_examples, 2), the brightness and saturation factors
            (1 = unchanged), or None when the recipe shifts neither.
    """

    index: np.ndarray
    augment: np.ndarray
    transform: np.ndarray
    color: np.ndarray | None = None


_IDENTITY = np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32)


def plain_plan(index: np.ndarray) -> EpochPlan:
    """An epoch of ``index`` in the given order, nothing augmented (validation)."""
    index = np.asarray(index, np.int64)
    return EpochPlan(index, np.zeros(len(index), bool), np.tile(_IDENTITY, (len(index), 1)))


def epoch_length(y_train: np.ndarray, recipe: TrainRecipe) -> int:
    """Examples per training epoch: classes x majority count when balancing, else the images."""
    counts = np.unique(y_train, return_counts=True)[1]  # "all" and "none": each image once
    return int(len(counts) * counts.max()) if recipe.augment == "minority" else len(y_train)


def epoch_plan(y: np.ndarray, train_idx: np.ndarray, *, recipe: TrainRecipe, seed: int,
               epoch: int, image_size: tuple[int, int] = (224, 224)) -> EpochPlan:
    """Which images one training epoch shows, in which order, and how each copy is transformed.

    With ``recipe.augment == "minority"`` every training image appears once as it is (minority
    classes included, so the network sees every real image unaltered once per epoch, as the
    majority class's images); each minority class then gets ``majority count - class count`` extra
    copies, whole rounds over its images plus a random subset for the remainder, and only these
    copies are transformed: scaling uniform in ``recipe.scale_range``, rotation uniform in
    ±``recipe.rotation_degrees``, horizontal and vertical flips each with probability 1/2 (when
    ``recipe.flip``). With ``"all"`` every training image appears once, transformed (as copy 1),
    unbalanced. With ``"none"`` every training image appears once, unaltered, unbalanced.
    A transformed example's brightness and saturation factors (uniform in 1 ± the recipe's
    ranges, when either is > 0) come from ``default_rng([seed, epoch, image index, 1])``, a
    stream apart from the geometry's, so the geometry is the same with or without them.

    The choice of copies and the order come from ``default_rng([seed, epoch])``. The
    transformations of an image's copies come from ``default_rng([seed, epoch, image index])``,
    row j for copy j, so a copy's transformation depends on the seed, the epoch, the image and the
    copy number only, not on the batch size or on the example's position.

    Args:
        y: int array of shape (n_images,), class of every image.
        train_idx: int array, positions of the training images.
        recipe: the augmentation settings.
        seed: the run's seed.
        epoch: 1-based epoch number.
        image_size: (height, width) of the images, the centre of rotation and scaling.

    Returns:
        The epoch's ``EpochPlan``.
    """
    train_idx = np.asarray(train_idx, np.int64)
    rng = np.random.default_rng([seed, epoch])
    first = np.ones if recipe.augment == "all" else np.zeros
    index, copy = [train_idx], [first(len(train_idx), np.int64)]
    if recipe.augment == "minority":
        members = {c: train_idx[y[train_idx] == c] for c in np.unique(y[train_idx])}
        majority = max(len(m) for m in members.values())
        for images in members.values():
            rounds, remainder = divmod(majority - len(images), len(images))
            extra = np.concatenate([np.tile(images, rounds),
                                    np.sort(rng.choice(images, remainder, replace=False))])
            index.append(extra)
            # copy number j >= 1 of an image: how many times it already appeared among the extras
            copy.append(np.repeat(np.arange(1, rounds + 2), len(images))[:len(extra)])
    index, copy = np.concatenate(index), np.concatenate(copy)
    order = rng.permutation(len(index))
    index, copy = index[order], copy[order]
    augment = copy > 0
    transform = np.tile(_IDENTITY, (len(index), 1))
    rows = np.flatnonzero(augment)
    rows = rows[np.lexsort((copy[rows], index[rows]))]  # by image, then copy number
    if len(rows):
        images, counts = np.unique(index[rows], return_counts=True)
        draws = np.concatenate([np.random.default_rng([seed, epoch, int(image)]).random((n, 4))
                                for image, n in zip(images, counts)])
        transform[rows] = _transforms(recipe, draws, image_size)
    color = None
    if recipe.brightness_range > 0 or recipe.saturation_range > 0:
        color = np.ones((len(index), 2), np.float32)
        if len(rows):
            draws = np.concatenate([np.random.default_rng([seed, epoch, int(image), 1]).random((n, 2))
                                    for image, n in zip(images, counts)])
            ranges = np.array([recipe.brightness_range, recipe.saturation_range])
            color[rows] = 1 + ranges * (2 * draws - 1)
    return EpochPlan(index, augment, transform, color)


def _transforms(recipe: TrainRecipe, draws: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scaling + rotation + flips about the image centre from uniform draws of shape (n, 4).

    Returns:
        float32 array of shape (n, 8), projective transforms (output to input coordinates).
    """
    low, high = recipe.scale_range
    scale = low + (high - low) * draws[:, 0]
    angle = np.deg2rad(recipe.rotation_degrees * (2 * draws[:, 1] - 1))
    flip_x, flip_y = (np.where(draws[:, 2:] < 0.5, -1.0, 1.0) if recipe.flip
                      else np.ones((len(draws), 2))).T
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # output pixel p comes from input pixel c + A (p - c), A = rotation @ diag(flips) / scale
    a00, a01, a10, a11 = cos * flip_x, -sin * flip_y, sin * flip_x, cos * flip_y
    cx, cy = (size[1] - 1) / 2, (size[0] - 1) / 2
    zero = np.zeros(len(draws))
    return np.stack([a00, a01, cx - a00 * cx - a01 * cy, a10, a11, cy - a10 * cx - a11 * cy,
                     zero, zero], axis=1).astype(np.float32)


def epoch_dataset(images: np.ndarray, y: np.ndarray, plan: EpochPlan, *, classes: int,
                  batch_size: int, preprocess: Callable[[tf.Tensor], tf.Tensor] | None = None,
                  extra: np.ndarray | None = None) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of the plan's batches, read from ``images`` one batch at a time.

    Transformed copies are resampled bilinearly with reflection at the borders (Keras
    ``RandomRotation``'s default), then, when the plan has colour factors, their pixels multiplied
    by the brightness factor and blended away from their grey level by the saturation factor
    (clipped to 0-255); other examples are passed through unchanged.

    Args:
        images: uint8 array of shape (n_images, height, width, 3) (a memmap stays on disk).
        y: int array of shape (n_images,).
        plan: the epoch's examples.
        classes: k, the width of the one-hot targets.
        batch_size: examples per batch (the last batch may be smaller).
        preprocess: applied to each float32 batch (pixel range 0-255); None keeps it as it is.
        extra: float32 array of shape (n_images, d), a second input per image (encoded patient
            metadata, never augmented); ``x`` is then the pair ``(images, extra rows)``.

    Returns:
        Dataset of ``(x, target)``: float32 arrays of shape (batch, height, width, 3) and
        (batch, classes).
    """
    height, width = images.shape[1:3]
    labels = tf.constant(np.asarray(y, np.int64))
    augmenting = bool(plan.augment.any())  # validation and "none" epochs skip the resampling

    def read(index):  # fancy indexing a memmap reads just these rows
        return np.asarray(images[index])

    coloured = plan.color is not None
    side = None if extra is None else tf.constant(np.asarray(extra, np.float32))

    def load(index, augment, transform, color):
        x = tf.numpy_function(read, [index], tf.uint8, stateful=False)
        x = tf.cast(tf.ensure_shape(x, (None, height, width, 3)), tf.float32)
        if augmenting:
            moved = tf.raw_ops.ImageProjectiveTransformV3(
                images=x, transforms=transform, output_shape=tf.constant([height, width]),
                fill_value=tf.constant(0.0), interpolation="BILINEAR", fill_mode="REFLECT")
            if coloured:
                moved = _shift_colour(moved, color)
            x = tf.where(augment[:, None, None, None], moved, x)
        if preprocess is not None:
            x = preprocess(x)
        if side is not None:
            x = (x, tf.gather(side, index))
        return x, tf.one_hot(tf.gather(labels, index), classes)

    color = plan.color if coloured else np.ones((len(plan.index), 2), np.float32)
    data = tf.data.Dataset.from_tensor_slices((plan.index, plan.augment, plan.transform, color))
    return (data.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE,
                                       deterministic=True).prefetch(tf.data.AUTOTUNE))


def _shift_colour(x: tf.Tensor, color: tf.Tensor) -> tf.Tensor:
    """Brightness times ``color[:, 0]``, then saturation times ``color[:, 1]`` (pixels 0-255)."""
    x = x * color[:, 0, None, None, None]
    grey = tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    x = grey + (x - grey) * color[:, 1, None, None, None]
    return tf.clip_by_value(x, 0.0, 255.0)
