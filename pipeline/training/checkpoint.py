"""Resumable checkpoints of a training run: one ``checkpoint.npz`` written atomically per epoch.

It holds the model and optimizer variables, the best weights so far, the history and the run's
fingerprint (recipe, seed, data shape, labels' hash, initial weights); ``load_checkpoint`` resumes
only a checkpoint whose fingerprint matches. Used by ``pipeline.training.train``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from pipeline.cache.files import atomic_path, hash_bytes
from pipeline.errors import PipelineError

FORMAT = 1


def fingerprint(model, images, y, recipe, seed, classes) -> dict:
    """What a checkpoint must have been written for to be resumed (the run's identity)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.shape}{value.dtype}".encode())  # not the path: names are counters
        digest.update(value.data)
    return {"format": FORMAT, "recipe": recipe.as_dict(), "seed": int(seed),
            "n_images": len(images), "image_shape": list(images.shape[1:]), "classes": classes,
            "labels": hash_bytes(np.asarray(y, np.int64).tobytes()),
            "initial_weights": digest.hexdigest()}


def assign_all(variables, values) -> None:
    """Assign ``values`` to ``variables`` pairwise (the lists must have the same length)."""
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def save_checkpoint(path: Path, fingerprint, model, optimizer, state, current) -> None:
    """Write model, optimizer, best weights and history to one file (a crash leaves the old one)."""
    meta = {"fingerprint": fingerprint, "epoch": state["epoch"], "history": state["history"],
            "best_epoch": state["best_epoch"], "best_val_loss": state["best_val_loss"],
            "best_is_current": state["best"] is None}
    arrays = {f"model_{i}": value for i, value in enumerate(current)}
    arrays.update({f"optimizer_{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
    if state["best"] is not None:
        arrays.update({f"best_{i}": value for i, value in enumerate(state["best"])})
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)


def load_checkpoint(path: Path, fingerprint, model, optimizer) -> dict:
    """Restore a matching checkpoint into ``model`` and ``optimizer``; returns the run's state."""
    state = {"epoch": 0, "history": [], "best_epoch": 0, "best_val_loss": math.inf, "best": None,
             "previous": None, "resumed_from": 0}
    if not path.exists():
        return state
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        stored = meta["fingerprint"]
        for key in sorted(set(stored) | set(fingerprint)):
            if stored.get(key) != fingerprint.get(key):
                raise PipelineError(
                    f"the checkpoint {path} was written for another run: {key!r} is "
                    f"{stored.get(key)!r} there and {fingerprint.get(key)!r} now. Delete "
                    f"{path.parent} to start this run afresh.")
        current = [data[f"model_{i}"] for i in range(len(model.weights))]
        assign_all(model.weights, current)
        assign_all(optimizer.variables, [data[f"optimizer_{i}"]
                                      for i in range(len(optimizer.variables))])
        best = None if meta["best_is_current"] else \
            [data[f"best_{i}"] for i in range(len(model.weights))]
    state.update(epoch=meta["epoch"], history=meta["history"], best_epoch=meta["best_epoch"],
                 best_val_loss=meta["best_val_loss"], best=best, previous=current,
                 resumed_from=meta["epoch"])
    return state
