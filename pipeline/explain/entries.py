"""Attributions in the content-keyed cache: ``<cache>/attributions/<key>/``, one entry per image and
method, each computed by one task (``attribution_task``) of the ``explain`` stage's farm.

An entry holds ``values.npy`` (the attribution map, float32: (h, w, 3) for integrated gradients,
(h, w) for Grad-CAM) and ``manifest.json`` (written last, under the entry's lock: what the key
hashes plus ``f_x``, ``f_baseline`` and ``attribution_sum``). The key hashes the network's weights
digest, the SVM's ``w`` and ``b``, the mean, the image (image cache key and id), the method, the
integrated gradients' steps and the device kind, so a rerun of ``explain`` computes only the
(image, method) pairs it has not seen, and a worker killed mid-task leaves no complete entry.

Nothing here imports TensorFlow at module level: the stage's process plans and reads entries, only
``attribution_task`` (run where the tasks run) imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.cache.entries import claim, finish_entry, verify_entry
from pipeline.cache.files import hash_bytes, read_json, save_npy
from pipeline.explain.attributions import Attribution

IG_BATCH = 16  # integrated gradients' interpolation points per batch (part of the key)


def attribution_key(net_entry: str | Path, w: np.ndarray, b: float, mean, images_key: str,
                    image: str, method: str, steps: int, device: str) -> dict:
    """Everything that determines an attribution entry's bytes (the network by its manifest's
    weights digest, so the key is found without building the network)."""
    digest = read_json(Path(net_entry) / "manifest.json")["digest"]
    key = {"kind": "attribution", "digest": digest,
           "w": hash_bytes(np.ascontiguousarray(w, np.float64).tobytes()), "b": float(b),
           "mean": None if mean is None else [float(v) for v in np.asarray(mean).ravel()],
           "images": images_key, "image": image, "method": method, "device": device}
    if method == "ig":
        key.update(steps=int(steps), batch_size=IG_BATCH)
    return key


def read_attribution(entry: str | Path) -> Attribution:
    """An entry's attribution (its files checked against its manifest first)."""
    manifest = verify_entry(entry)
    return Attribution(values=np.load(Path(entry) / "values.npy"), f_x=manifest["f_x"],
                       f_baseline=manifest["f_baseline"],
                       attribution_sum=manifest["attribution_sum"])


def attribution_task(net_entry: str, w: np.ndarray, b: float, mean, images: str, image: str,
                     method: str, steps: int, key: dict, entry: Path,
                     state: dict | None = None) -> bool:
    """Compute one entry (a task: in the stage's process or on a Dask worker).

    ``images``: the image cache entry's folder; ``mean``: the RGB mean the network's features
    were made with (None: the backbone's own preprocessing). ``state`` keeps the current network
    and one Keras model per architecture between tasks; on a worker it is ``None`` and the worker
    process's own is used. Returns whether this task computed the entry (``False``: it was
    complete, perhaps finished by another worker while this one waited for the lock).
    """
    state = WORKER_STATE if state is None else state
    with claim(entry) as todo:
        if not todo:
            return False
        from pipeline.data.image_cache import open_cached
        from pipeline.explain.network import explain_svm
        from pipeline.models.build import feature_model
        from pipeline.models.device import select_device
        from pipeline.models.preprocessing import preprocess
        from pipeline.training import netstore

        select_device()
        if net_entry not in state["networks"]:
            state["networks"].clear()  # one network in memory at a time
            state["networks"][net_entry] = netstore.load(net_entry, reuse=state["models"])
        net = state["networks"][net_entry]
        centre = np.asarray(mean, np.float32) if mean is not None else None
        pixels = open_cached(images).get([image])
        found = explain_svm(feature_model(net.model, net.spec),
                            lambda p: preprocess(net.spec, p, centre), w, b, pixels, [method],
                            steps=steps, batch_size=IG_BATCH)[method][0]
        entry = Path(entry)
        entry.mkdir(parents=True, exist_ok=True)
        save_npy(entry / "values.npy", np.asarray(found.values, np.float32))
        finish_entry(entry, {**key, "f_x": float(found.f_x), "f_baseline": float(found.f_baseline),
                             "attribution_sum": float(found.attribution_sum)}, ["values.npy"])
    return True


# A worker process's network and models, kept between its tasks as the stage's own are.
WORKER_STATE: dict = {"networks": {}, "models": {}}
