"""The per-channel mean of uint8 images, without TensorFlow.

Stages compute it in the parent process to key a cache entry (the mean a network is centred on)
before any training or extraction task runs, possibly on another machine, so it must not import
TensorFlow; ``pipeline.training.train`` re-exports it.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError

MEAN_CHUNK = 256  # images read at a time (memmaps stay on disk)


def compute_mean(images: np.ndarray, chunk: int = MEAN_CHUNK) -> np.ndarray:
    """Per-channel mean of uint8 images, summed in float64 chunk by chunk (memmaps stay on disk).

    Args:
        images: uint8 array of shape (n_images, height, width, 3), e.g. the image cache's memmap.
        chunk: images read at a time.

    Returns:
        Array of shape (3,), float64, in the 0-255 pixel range.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[-1] != 3 or len(images) == 0:
        raise PipelineError(
            "images must be a non-empty uint8 array of shape (n_images, height, width, 3) (the "
            f"image cache); got {type(images).__name__} of dtype {getattr(images, 'dtype', None)} "
            f"and shape {getattr(images, 'shape', None)}. Build them with `python -m pipeline "
            "images`.")
    total = np.zeros(images.shape[-1], np.float64)
    for start in range(0, len(images), chunk):
        total += np.asarray(images[start:start + chunk]).sum(axis=(0, 1, 2), dtype=np.float64)
    return total / (len(images) * images.shape[1] * images.shape[2])
