"""Stage ``pretrain``: one source network per transfer source, each built at most once.

``python -m pipeline pretrain --config EXP`` reads the experiment, builds the source network of every
transfer source its cells use and writes ``networks.json`` (source -> cache entry, or why it could
not run):

- ``none``: no transfer: orthogonal weights (gain 1), biases 0.05, seeded.
- ``imagenet``: ImageNet weights (VGG-M converted from MatConvNet, VGG-16 from Keras).
- ``retinopathy``: the ``none`` initialisation trained on Kaggle Diabetic Retinopathy (5 grades).
- ``double``: ImageNet weights fine-tuned on Retinopathy.

Entries live in ``features_cache/networks/`` keyed by content (``pipeline.training.netstore``), so every
design and fold reuses them and a rerun trains nothing that has not changed. Missing ImageNet
weights never fall back to random weights: the ImageNet-derived sources are recorded as not run,
with the reason and the fix, and the rest of the experiment goes on. Each source is one task
(``pipeline.compute.farm``): in this process, or on the workers of the ``[compute]`` cluster.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline.cache.entries import claim
from pipeline.cache.files import hash_json, write_json
from pipeline.compute.cluster import open_client
from pipeline.compute.farm import Task, run_tasks
from pipeline.console import log
from pipeline.errors import WeightsUnavailable
from pipeline.experiment import artifacts
from pipeline.experiment.config import Config, add_config_arguments, config_from_args
from pipeline.models.device import device_kind
from pipeline.protocol import IMAGENET_SOURCES, RETINOPATHY_SOURCES, pretrain_order
from pipeline.training import netstore

RETINOPATHY_CLASSES = 5


def initial_network(config: Config, source: str, classes: int = 1000):
    """The network a source starts from: orthogonal init (``none``, ``retinopathy``) or ImageNet
    weights (``imagenet``, ``double``). Returns ``(model, spec, mean, pretrained)``: the mean is the
    one that comes with ImageNet weights (``None`` for Keras backbones, whose ``preprocess_input``
    applies) and is computed from the training set when not ``pretrained``."""
    from pipeline.models.build import build_network
    from pipeline.models.registry import get_network
    from pipeline.models.weights import imagenet_mean

    arch = artifacts.architecture(config)
    spec = get_network(arch["network"])
    pretrained = source in IMAGENET_SOURCES
    # Only the ImageNet-derived sources load the weights file; the others start from the paper's
    # no-transfer init whatever `network.imagenet_weights` says.
    weights_path = (config["network"]["imagenet_weights"] or None) if pretrained else None
    model = build_network(arch["network"], weights="imagenet" if pretrained else None,
                          input_size=arch["input_size"], width=arch["width"], classes=classes,
                          weights_path=weights_path, seed=config.seed)
    mean = imagenet_mean(spec, weights_path) if pretrained else None
    return model, spec, mean, pretrained


def train_on_retinopathy(config: Config, model, spec, mean, pretrained: bool, init_digest: str,
                         source: str) -> Path:
    """Train ``model`` (head replaced by a 5-way softmax) on the Retinopathy source task."""
    from pipeline.models.build import replace_head
    from pipeline.training.train import compute_mean

    table = artifacts.retinopathy_manifest(config)
    arch = artifacts.architecture(config)
    images = artifacts.image_cache(config, table, "retinopathy")
    # Train straight from the memory-mapped cache, in its row order, so the source task (35k
    # images for Kaggle Retinopathy) is never copied into memory.
    pixels = images.images
    y = table.set_index("image").loc[images.ids, "category"].astype(int).to_numpy()
    if not pretrained:
        mean = compute_mean(pixels)
    recipe = config.recipe("pretrain")
    key_inputs = {**arch, "stage": "pretrain", "source": source, "init": init_digest,
                  "images": images.key, "ids_labels": hash_json([images.ids, y.tolist()]),
                  "recipe": recipe.as_dict(), "seed": config.seed,
                  "mean": None if mean is None else np.asarray(mean).tolist(),
                  "device": device_kind()}
    if config.devices("pretrain") == "all":  # replicas round sums differently: another entry
        key_inputs["devices"] = "all"
    entry = artifacts.network_entry(config, key_inputs)
    with claim(entry) as todo:
        if not todo:
            log(f"pretrain {source}: cached in {entry}")
            return entry
        model = replace_head(model, spec, RETINOPATHY_CLASSES, seed=config.seed)
        log(f"pretrain {source}: training on {len(y)} Retinopathy images "
            f"({np.bincount(y, minlength=5).tolist()} per grade), {recipe.total_epochs} epochs")
        netstore.train_and_save(entry, model, spec, pixels, y, mean, recipe, config.seed,
                                key_inputs, devices=config.devices("pretrain"))
    return entry


def pretrain_source(config: Config, source: str) -> Path:
    """Build (or find in the cache) the source network of one transfer source."""
    model, spec, mean, pretrained = initial_network(config, source)
    init_digest = netstore.weights_digest(model)
    if source in RETINOPATHY_SOURCES:
        return train_on_retinopathy(config, model, spec, mean, pretrained, init_digest, source)
    arch = artifacts.architecture(config)
    # The untrained network (``none``) stores no mean: the features stage centres it on each
    # run's training half, so no test image sets the features of a run.
    key_inputs = {**arch, "stage": "pretrain", "source": source, "init": init_digest,
                  "mean": None if mean is None else np.asarray(mean).tolist()}
    entry = artifacts.network_entry(config, key_inputs)
    with claim(entry) as todo:
        if not todo:
            log(f"pretrain {source}: cached in {entry}")
            return entry
        log(f"pretrain {source}: "
            f"{'ImageNet weights' if source in IMAGENET_SOURCES else 'orthogonal init'}")
        return netstore.save(entry, model, mean, key_inputs)


def pretrain_task(config: Config, source: str) -> dict:
    """One source network (a task: in the stage's process or on a worker); returns its
    ``networks.json`` record. Its key hashes the built network's initial weights, so the task
    itself builds it and looks whether the entry exists (cached: no training)."""
    try:
        entry = pretrain_source(config, source)
    except WeightsUnavailable as exc:
        log(f"pretrain {source}: NOT RUN. {exc}")
        return {"status": "not_run", "reason": exc.reason, "fix": exc.fix}
    return {"status": "ok", "entry": str(entry)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    order = pretrain_order(config.sources)
    with open_client(artifacts.compute_settings(config)) as client:
        if client is None:
            from pipeline.models.device import select_device

            select_device()
        # imagenet first and alone (it only loads weights): without them, double is not tried,
        # so one message explains both; the others (two Retinopathy trainings) run side by side.
        result: dict[str, dict] = {}
        for batch in (order[:1], order[1:]) if order[:1] == ["imagenet"] else (order,):
            if "double" in batch and result.get("imagenet", {}).get("status") == "not_run":
                batch = [s for s in batch if s != "double"]
                result["double"] = dict(result["imagenet"])
            tasks = [Task(s, pretrain_task, (config, s)) for s in batch]
            result.update(zip(batch, run_tasks(client, tasks, "pretrain")))
    result = {s: result[s] for s in order}
    write_json(config.path_of("networks.json"), result)
    return 0
