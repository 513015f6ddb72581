"""The paper's no-transfer initialisation: orthogonal kernels (gain 1), biases 0.05, seeded.

Used for the ``none`` source (and the start of ``retinopathy``) and for every new classification
head. Computed with NumPy, so the weights do not depend on TensorFlow's random streams.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

BIAS_INIT = 0.05


def _orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Orthogonal matrix (Saxe et al. 2014, gain 1) over (prod(shape[:-1]), shape[-1]).

    The Q factor (positive-diagonal R) of a Gaussian matrix, as Keras' ``Orthogonal``. Computed by
    CholeskyQR2 (two passes of Q = A chol(A^T A)^-1), as BLAS-3 products are ~10x faster than
    LAPACK's Householder QR here; float64 unless A is tall enough to be well conditioned.
    """
    rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
    big, small = max(rows, cols), min(rows, cols)
    q = rng.standard_normal((big, small), dtype=np.float32 if big >= 2 * small else np.float64)
    for _ in range(2):
        upper = np.linalg.cholesky(q.T @ q).T
        q = scipy.linalg.solve_triangular(upper, q.T, trans="T", check_finite=False).T
    return np.asarray(q if rows >= cols else q.T, dtype=np.float32).reshape(shape)


def walk_layers(layer: Any) -> list:
    """A layer, or every layer of a model (nested models included), in order."""
    return [l for sub in layer.layers for l in walk_layers(sub)] if hasattr(layer, "layers") else [layer]


def init_no_transfer(model: Any, seed: int = 0) -> None:
    """The paper's "no transfer" init, in place: orthogonal kernels (gain 1), biases 0.05.

    Every Dense/Conv kernel gets an orthogonal matrix over (fan-in, units); a depthwise kernel
    (h, w, c, m) over (h*w, c*m), one filter per column. Seeded: same seed, same weights.

    Args:
        model: a ``keras.Model`` or a single layer.
        seed: seed of ``numpy.random.default_rng``.
    """
    import keras
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    rng = np.random.default_rng(seed)
    # One BLAS thread: OpenBLAS' threading costs more than it gains on the many small kernels
    # (100x on a 2-core machine), and the weights do not depend on the core count.
    with threadpool_limits(limits=1, user_api="blas"):
        for layer in walk_layers(model):
            if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D,
                                      keras.layers.DepthwiseConv2D)):
                continue
            shape = tuple(layer.kernel.shape)
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                value = _orthogonal((shape[0] * shape[1], shape[2] * shape[3]), rng)
            else:
                value = _orthogonal(shape, rng)
            layer.kernel.assign(value.reshape(shape))
            if layer.bias is not None:
                layer.bias.assign(np.full(tuple(layer.bias.shape), BIAS_INIT, np.float32))
