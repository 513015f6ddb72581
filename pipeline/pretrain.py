"""Stage ``pretrain``: one source network per transfer source, each built at most once.

``python -m pipeline pretrain --config EXP`` reads the experiment, builds the source network of every
transfer source its cells use and writes ``networks.json`` (source -> cache entry, or why it could
not run):

- ``none``: no transfer: orthogonal weights (gain 1), biases 0.05, seeded.
- ``imagenet``: ImageNet weights (VGG-M converted from MatConvNet, VGG-16 from Keras).
- ``retinopathy``: the ``none`` initialisation trained on Kaggle Diabetic Retinopathy (5 grades).
- ``double``: ImageNet weights fine-tuned on Retinopathy.

Entries live in ``features_cache/networks/`` keyed by content (``pipeline.netstore``), so every
design and fold reuses them and a rerun trains nothing that has not changed. Missing ImageNet
weights never fall back to random weights: the ImageNet-derived sources are recorded as not run,
with the reason and the fix, and the rest of the experiment goes on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline import artifacts, netstore
from pipeline.cache import entry_complete, hash_json, write_json
from pipeline.config import Config, load_config
from pipeline.errors import WeightsUnavailable

RETINOPATHY_CLASSES = 5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def initial_network(config: Config, source: str, classes: int = 1000):
    """The network a source starts from: orthogonal init (``none``, ``retinopathy``) or ImageNet
    weights (``imagenet``, ``double``). Returns ``(model, spec, mean, pretrained)``: the mean is the
    one that comes with ImageNet weights (``None`` for Keras backbones, whose ``preprocess_input``
    applies) and is computed from the training set when not ``pretrained``."""
    from pipeline.networks import build_network, get_network
    from pipeline.weights import imagenet_mean

    arch = netstore.architecture(config)
    spec = get_network(arch["network"])
    pretrained = source in ("imagenet", "double")
    # Only the ImageNet-derived sources load the weights file; the others start from the paper's
    # no-transfer init whatever `network.imagenet_weights` says.
    weights_path = (config["network"]["imagenet_weights"] or None) if pretrained else None
    model = build_network(arch["network"], weights="imagenet" if pretrained else None,
                          input_size=arch["input_size"], width=arch["width"], classes=classes,
                          weights_path=weights_path, seed=config.seed)
    mean = imagenet_mean(spec.name, weights_path) if pretrained else None
    return model, spec, mean, pretrained


def train_on_retinopathy(config: Config, model, spec, mean, pretrained: bool, init_digest: str,
                         source: str) -> Path:
    """Train ``model`` (head replaced by a 5-way softmax) on the Retinopathy source task."""
    from pipeline.image_cache import build_image_cache
    from pipeline.networks import replace_head
    from pipeline.train import compute_mean

    table = artifacts.retinopathy_manifest(config)
    arch = netstore.architecture(config)
    size = arch["input_size"]
    images = build_image_cache(table, config.cache_dir / "images", (size, size),
                               crop_black_frame=False)
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
                  "mean": None if mean is None else np.asarray(mean).tolist()}
    entry = netstore.entry_dir(config, key_inputs)
    if entry_complete(entry):
        log(f"pretrain {source}: cached in {entry}")
        return entry
    model = replace_head(model, spec, RETINOPATHY_CLASSES, seed=config.seed)
    log(f"pretrain {source}: training on {len(y)} Retinopathy images "
        f"({np.bincount(y, minlength=5).tolist()} per grade), {recipe.epochs} epochs")
    netstore.train_and_save(entry, model, spec, pixels, y, mean, recipe, config.seed, key_inputs)
    return entry


def pretrain_source(config: Config, source: str) -> Path:
    """Build (or find in the cache) the source network of one transfer source."""
    from pipeline.train import compute_mean

    model, spec, mean, pretrained = initial_network(config, source)
    init_digest = netstore.weights_digest(model)
    if source in ("retinopathy", "double"):
        return train_on_retinopathy(config, model, spec, mean, pretrained, init_digest, source)
    arch = netstore.architecture(config)
    if not pretrained:
        # Untrained network used as a feature extractor: centre on the target images' mean (an
        # unsupervised statistic of the whole dataset, the only training set this network has).
        table = artifacts.manifest(config)
        mean = compute_mean(artifacts.target_images(config, table).images)  # memmap, in chunks
    key_inputs = {**arch, "stage": "pretrain", "source": source, "init": init_digest,
                  "mean": None if mean is None else np.asarray(mean).tolist()}
    entry = netstore.entry_dir(config, key_inputs)
    if entry_complete(entry):
        log(f"pretrain {source}: cached in {entry}")
        return entry
    log(f"pretrain {source}: {'ImageNet weights' if source == 'imagenet' else 'orthogonal init'}")
    return netstore.save(entry, model, mean, key_inputs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment file, e.g. experiments/demo.toml")


def run(args: argparse.Namespace) -> int:
    from pipeline.networks import select_device

    config = load_config(args.config)
    select_device()
    result: dict[str, dict] = {}
    # ImageNet first: double transfer needs the same weights, and one message explains both.
    for source in sorted(config.sources, key=("imagenet", "none", "retinopathy", "double").index):
        if source == "double" and result.get("imagenet", {}).get("status") == "not_run":
            result[source] = dict(result["imagenet"])
            continue
        try:
            entry = pretrain_source(config, source)
        except WeightsUnavailable as exc:
            log(f"pretrain {source}: NOT RUN. {exc}")
            result[source] = {"status": "not_run", "reason": exc.reason, "fix": exc.fix}
            continue
        result[source] = {"status": "ok", "entry": str(entry)}
    write_json(config.path_of("networks.json"), result)
    return 0
