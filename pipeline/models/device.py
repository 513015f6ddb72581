"""Which device TensorFlow runs networks on: a GPU when it sees one, else the CPU."""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)

def select_device() -> str:
    """Log whether TensorFlow sees a GPU; TensorFlow then places ops there, else on the CPU.

    Returns:
        ``"/GPU:0"`` or ``"/CPU:0"``.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised: growth cannot change
            tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        log.info("TensorFlow sees %d GPU(s) (%s); networks run on /GPU:0", len(gpus),
                 ", ".join(g.name for g in gpus))
        return "/GPU:0"
    log.info("TensorFlow sees no GPU; networks run on the CPU (%d cores)", os.cpu_count() or 1)
    return "/CPU:0"


def device_kind() -> str:
    """``"gpu"`` when TensorFlow sees a GPU, else ``"cpu"``: part of the cache keys of trained
    networks and features, since the two compute different float roundings."""
    return "gpu" if select_device() == "/GPU:0" else "cpu"
