"""The feature cache: a network's feature-layer output for a list of images, one entry each.

``extract_features`` runs a network over the image cache and writes
``<cache>/features/<key>/``: ``features.npy`` (float32, one row per image), ``images.txt`` (the
image ids in row order) and ``manifest.json`` (its inputs, written last). The key
(``feature_key``) hashes the network's weights, the feature layer, the preprocessing (network and
mean), the image cache entry and the image list, so an existing key is never recomputed. An
interrupted extraction resumes from its last saved chunk. A thread reads the next batch of the uint8
image cache while the current one is in the network; preprocessing is a traced ``tf.function``
(the ops of ``preprocess``), the network another. ``load_features`` reads an entry without importing TensorFlow.
"""

from __future__ import annotations

import os
import sys
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.cache.entries import claim, entry_complete, finish_entry, verify_entry
from pipeline.cache.files import (
    allocate_npy,
    hash_bytes,
    hash_json,
    read_json,
    short_key,
    write_json,
    write_text,
)
from pipeline.console import log
from pipeline.errors import PipelineError
from pipeline.training import netstore

FEATURES = "features.npy"
PARTIAL = "features.partial.npy"
PROGRESS = "progress.json"
CHUNK_BATCHES = 8  # batches between two progress saves
OUTPUT_LAYER = "softmax output"  # the key's layer for a network's own outputs


def feature_key(net_entry: str | Path, images, ids: list[str], batch_size: int,
                device: str = "cpu", mean: np.ndarray | None = None,
                outputs: bool = False, metadata: np.ndarray | None = None,
                jit_compile: bool = False) -> dict:
    """Everything that determines a feature entry's bytes, read from the network entry's manifest
    (so a cached entry is found without building the network).

    The batch size and the device kind are in the key because they change the float rounding of
    the features (~2e-6 between batch sizes on the CPU), so the same config gives the same numbers
    whatever the cache already held. ``mean`` replaces the network's own (the ``none`` source is
    centred on each run's training half). ``outputs``: the network's own softmax outputs instead
    of the feature layer (``classifier.kind = "network"``); the key's ``layer`` is then
    ``OUTPUT_LAYER``. ``metadata``: the encoded metadata rows fed to a network with a metadata
    branch (their digest joins the key). ``jit_compile``: the forward pass XLA-compiled
    (``extract.jit_compile``; in the key only when on, so default keys are unchanged).
    """
    from pipeline.models.registry import get_network

    net_entry = Path(net_entry)
    info = read_json(net_entry / "manifest.json")
    key = {"digest": info["digest"], "network": info["network"],
            "layer": OUTPUT_LAYER if outputs else get_network(info["network"]).feature_layer,
            "input_size": info["input_size"],
            "width": info["width"],
            "mean": _listed(netstore.load_mean(net_entry) if mean is None else mean),
            "images": images.key, "ids": hash_json(ids), "batch_size": int(batch_size),
            "device": device}
    if metadata is not None:
        key["metadata"] = hash_bytes(np.ascontiguousarray(metadata, np.float32).tobytes())
    if jit_compile:
        key["jit_compile"] = True
    return key


def extract_features(net: netstore.StoredNetwork, images, ids: list[str], entry: Path, *,
                     batch_size: int = 32, device: str = "cpu", mean: np.ndarray | None = None,
                     train_ids: str | None = None, progress: bool = True,
                     stop_after_chunks: int | None = None, outputs: bool = False,
                     metadata: np.ndarray | None = None, jit_compile: bool = False) -> bool:
    """Compute the feature layer's output for ``ids`` into the cache entry ``entry``.

    Args:
        net: the network (``pipeline.training.netstore.load``).
        images: the image cache (``pipeline.data.image_cache.CachedImages``) holding every id.
        ids: image ids, in the row order of the result.
        entry: the entry folder; resumed when a partial result from an interrupted run is there.
        batch_size: images per forward pass.
        device: ``"cpu"`` or ``"gpu"``, the kind of device computing (part of the key).
        mean: RGB mean subtracted instead of the network's own (part of the key).
        train_ids: the digest of the training images this entry's features depend on (through
            ``mean``), recorded in its manifest; default the network's own.
        progress: show a progress bar.
        stop_after_chunks: test hook: raise ``KeyboardInterrupt`` after this many saved chunks.
        outputs: store the network's softmax outputs, shape (len(ids), classes), instead of the
            feature layer's (the network as the classifier).
        metadata: float32 array of shape (len(ids), d), the encoded metadata of each image, for
            a network with a metadata branch (only with ``outputs``).
        jit_compile: XLA-compile the forward pass (``tf.function(jit_compile=True)``; part of
            the key when on).

    Returns:
        Whether this call computed the entry (``False``: it was complete already, perhaps made by
        another process while this one waited for its lock). On return the entry is complete:
        ``features.npy`` of shape (len(ids), feature width), float32; its manifest records the
        training images of the network (``train_ids``), when it has them.
    """
    inputs = feature_key(net.entry, images, ids, batch_size, device, mean, outputs, metadata,
                         jit_compile)
    with claim(entry) as todo:
        if todo:
            _extract_into(net, images, ids, entry, inputs, batch_size, progress,
                          stop_after_chunks, net.mean if mean is None else mean,
                          train_ids or net.info.get("train_ids"), outputs, metadata, jit_compile)
    return todo


def _extract_into(net, images, ids, entry, inputs, batch_size, progress, stop_after_chunks,
                  mean, train_ids, outputs=False, metadata=None, jit_compile=False):
    import tensorflow as tf

    entry.mkdir(parents=True, exist_ok=True)
    fmodel, infer = _inference(net, outputs, jit_compile)
    width = int(fmodel.output_shape[-1])
    rows = images.index_of(ids)
    n = len(ids)
    done = 0
    partial = entry / PARTIAL
    if partial.exists() and (entry / PROGRESS).exists():
        state = read_json(entry / PROGRESS)
        if state.get("key") == short_key(inputs) and state.get("shape") == [n, width]:
            done = int(state["done"])
    if done == 0:
        out = allocate_npy(partial, np.float32, (n, width))
    else:
        out = np.load(partial, mmap_mode="r+")
        log(f"  resuming at image {done} of {n}")

    prep = _preprocessing(net.spec, mean, images.images.shape[1:])
    starts = range(done, n, batch_size)

    def read(start):  # uint8 rows of the next batch, in a thread while the network runs
        return np.asarray(images.images[rows[start:start + batch_size]])

    def batches():
        # A plain thread reads one batch ahead: tf.data (from_generator + a parallel map +
        # prefetch) stalled whole calls by seconds at random on 2 cores (issue 15).
        with ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(read, starts[0]) if starts else None
            for i, start in enumerate(starts):
                pixels = ahead.result()
                if i + 1 < len(starts):
                    ahead = pool.submit(read, starts[i + 1])
                x = prep(pixels)
                yield x if metadata is None else (  # a metadata branch's second input
                    x, tf.constant(np.asarray(metadata[start:start + batch_size], np.float32)))

    position, chunks = done, 0
    bar = tqdm(total=n, initial=done, unit="img", desc="  extract", disable=not progress,
               file=sys.stderr)
    for step, batch in enumerate(batches(), start=1):
        values = infer(batch).numpy().astype(np.float32, copy=False)
        out[position:position + len(values)] = values
        position += len(values)
        bar.update(len(values))
        if step % CHUNK_BATCHES == 0 or position == n:
            out.flush()
            write_json(entry / PROGRESS, {"key": short_key(inputs), "shape": [n, width],
                                          "done": position})
            chunks += 1
            if stop_after_chunks is not None and chunks >= stop_after_chunks and position < n:
                bar.close()
                raise KeyboardInterrupt(f"test hook: stopped after {chunks} chunks")
    bar.close()
    if position != n:
        raise PipelineError(f"feature extraction into {entry} wrote {position} of {n} rows; rerun "
                            "`make features` to resume.")
    del out
    os.replace(partial, entry / FEATURES)
    write_text(entry / "images.txt", "\n".join(ids) + "\n")
    (entry / PROGRESS).unlink()
    finish_entry(entry, {**inputs, "n_images": n, "width": width, "train_ids": train_ids},
                 [FEATURES, "images.txt"])


# model -> {outputs?: (feature model, its traced call)}: a model reloaded with another entry's
# weights (the features stage reuses one per architecture) keeps them, which saves tracing.
_INFERENCE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _inference(net: netstore.StoredNetwork, outputs: bool = False, jit_compile: bool = False):
    """``(feature model, its traced call)``; with ``jit_compile`` the call is XLA-compiled (else
    ``jit_compile`` is left unset: TensorFlow's default, as before the option existed)."""
    import tensorflow as tf

    from pipeline.models.build import feature_model

    cached = _INFERENCE.setdefault(net.model, {})
    if (outputs, jit_compile) not in cached:
        fmodel = (cached[outputs, not jit_compile][0] if (outputs, not jit_compile) in cached
                  else net.model if outputs else feature_model(net.model, net.spec))
        cached[outputs, jit_compile] = (fmodel, tf.function(
            lambda x: fmodel(x, training=False), reduce_retracing=True,
            jit_compile=True if jit_compile else None))
    return cached[outputs, jit_compile]


# (spec name, mean, image shape) -> traced preprocessing: the same ops as the tf.data map had.
_PREPROCESSING: dict = {}


def _preprocessing(spec, mean, shape):
    """``preprocess(spec, ., mean)`` traced once over uint8 batches of any length."""
    import tensorflow as tf

    from pipeline.models.preprocessing import preprocess

    key = (spec.name, None if mean is None else np.asarray(mean, np.float32).tobytes(),
           tuple(shape))
    if key not in _PREPROCESSING:
        _PREPROCESSING[key] = tf.function(
            lambda x: preprocess(spec, x, mean),
            input_signature=[tf.TensorSpec((None, *shape), tf.uint8)])
    return _PREPROCESSING[key]


def load_features(entry: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read a feature entry: (array of shape (n_images, width), image ids in row order).

    Memory-mapped, so a cell reads only the rows it needs. Does not import TensorFlow.
    """
    entry = Path(entry)
    if not entry_complete(entry):
        raise PipelineError(f"feature entry {entry} is missing or incomplete; run `make features`.")
    verify_entry(entry)
    ids = (entry / "images.txt").read_text(encoding="utf-8").split()
    return np.load(entry / FEATURES, mmap_mode="r"), ids


def _listed(mean: np.ndarray | None) -> list | None:
    return None if mean is None else np.asarray(mean).tolist()
