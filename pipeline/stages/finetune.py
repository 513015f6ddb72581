"""Stage ``finetune``: one fine-tuned network per (source, design, repeat, training half).

``python -m pipeline finetune --config EXP`` takes every cell with fine-tuning (``<source>+ft``),
and for every design and fold strips the source network's last layer, adds a softmax with 2 or 3
outputs and retrains the whole network on the fold's training half with the paper's recipe
(``pipeline.training.train``). ``none+ft`` is therefore training from scratch on the target. Entries are
keyed by the source network's weights, the training images and labels, the recipe and the seed
(``pipeline.training.netstore``); finished ones are never retrained, and an interrupted run resumes from its
last completed epoch. Each missing entry is one task (``pipeline.compute.farm``), run in this
process or, with ``[compute]`` naming a cluster, on its workers (TensorFlow is imported there
only). Writes ``finetuned.csv``: ``source, design, repeat, train_half, train_ids,
entry`` (``train_ids``: the digest of the training images, which the ``svm`` stage checks against
the current folds). On a hold-out (``folds.scheme = "holdout"``) each repeat is one independent
run: its own seed (``pipeline.folds.holdout.run_seeds``) and the split's validation part to pick
the epoch and to stop early. With ``classifier.kind = "network"`` and ``classifier.metadata``,
the network gets a metadata branch (``pipeline.models.metadata_branch``) fed with the metadata
encoded on the run's training part; the encoding is recorded in the entry.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cache.entries import claim, entry_complete
from pipeline.cache.files import hash_json, read_json, write_csv
from pipeline.compute.cluster import open_client
from pipeline.compute.farm import Task, call, run_tasks
from pipeline.console import log
from pipeline.data.designs import apply_design, get_design
from pipeline.data.image_cache import open_cached
from pipeline.experiment import artifacts
from pipeline.experiment.config import Config, add_config_arguments, config_from_args
from pipeline.classifiers.metadata import MetadataEncoder
from pipeline.folds.holdout import run_seeds
from pipeline.folds.table import VALIDATION_PART, fold_runs, half_ids, is_holdout, train_ids_digest
from pipeline.models.device import device_kind
from pipeline.protocol import IMAGENET_SOURCES
from pipeline.training import netstore
from pipeline.training.mean import compute_mean


def plan_one(config: Config, source_entry: Path, images, table: pd.DataFrame,
             train_ids: list[str], design: str, device: str, seed: int | None = None,
             validation_ids: list[str] | None = None) -> dict:
    """The cache entry of one fine-tuning run and everything its task needs.

    Everything here is read from the caches with NumPy (no TensorFlow), so the stage knows which
    entries are missing before any task starts. A hold-out run (Kim & Rocheteau) passes its own
    ``seed`` (``run_seeds``) and its split's validation part, ``validation_ids``, which picks the
    epoch instead of the recipe's split; both enter the entry's key only then, so every other
    entry keeps its key. With ``classifier.kind = "network"`` and ``classifier.metadata`` the
    metadata encoder is fitted on ``train_ids`` here and its state joins the key.

    Returns:
        ``{"entry", "key_inputs", "trained", "labels", "mean", "validation", "metadata",
        "seed"}``: ``trained`` the images the run reads (training part, then validation part),
        ``labels`` theirs, ``validation`` the validation part's positions in ``trained`` (None:
        the recipe's own split), ``metadata`` the encoded metadata of ``trained`` (None: no
        metadata branch).
    """
    classes = get_design(design).classes
    seed = config.seed if seed is None else int(seed)
    trained = list(train_ids) + list(validation_ids or [])
    labels = table.set_index("image").loc[trained, "y"].to_numpy()
    info = read_json(Path(source_entry) / "manifest.json")
    imagenet_derived = info["source"] in IMAGENET_SOURCES
    mean = netstore.load_mean(source_entry) if imagenet_derived \
        else compute_mean(images.get(list(train_ids)))
    recipe = config.recipe("finetune")
    key_inputs = {**artifacts.architecture(config), "stage": "finetune",
                  "source": info["source"], "source_digest": info["digest"],
                  "design": design, "classes": list(classes), "images": images.key,
                  "ids_labels": hash_json([train_ids, labels.tolist()]), "recipe": recipe.as_dict(),
                  "seed": seed, "mean": None if mean is None else np.asarray(mean).tolist(),
                  "train_ids": train_ids_digest(train_ids), "device": device}
    if config.devices("finetune") == "all":  # replicas round sums differently: another entry
        key_inputs["devices"] = "all"
    validation = None
    if validation_ids:
        key_inputs["validation_ids"] = train_ids_digest(validation_ids)
        validation = np.arange(len(train_ids), len(trained))
    keys = list(config["classifier"]["metadata"])
    encoded = None
    if keys and config["classifier"]["kind"] == "network":
        # Kim & Rocheteau: a metadata branch, its encoding fitted on the training part only
        rows = table.set_index("image")[keys]
        encoder = MetadataEncoder(keys, str(config.path_of("manifest.csv")))
        encoder.fit(rows.loc[list(train_ids)])
        encoded = encoder.transform(rows.loc[trained])
        key_inputs["metadata"] = encoder.state()
    return {"entry": artifacts.network_entry(config, key_inputs), "key_inputs": key_inputs,
            "trained": trained, "labels": labels, "mean": mean, "validation": validation,
            "metadata": encoded, "seed": seed}


def finetune_task(config: Config, plan: dict, source_entry: Path, tag: str, images: str,
                  pool: netstore.HeadSwapPool | None = None) -> str:
    """Fine-tune one network into ``plan["entry"]`` (``plan_one``'s; a task: in the stage's
    process or on a worker).

    Every run starts from the source network's weights and a new seeded head (``pool`` reuses
    one Keras model per architecture, with fresh weights each run), so no run starts from weights
    another run has changed; on a worker ``pool`` is ``None`` and the worker process's own is
    used. ``images`` is the image cache entry's folder (opened once per process). A plan with
    metadata gets the metadata branch (``add_metadata_branch``), trained on it.

    Returns:
        The entry folder, complete (made here or, under its lock, by someone else meanwhile).
    """
    entry, seed, encoded = Path(plan["entry"]), plan["seed"], plan["metadata"]
    with claim(entry) as todo:
        if not todo:
            log(f"finetune {tag}: cached")
            return str(entry)
        from pipeline.models.metadata_branch import add_metadata_branch

        pool = WORKER_POOL if pool is None else pool
        recipe = config.recipe("finetune")
        classes = len(plan["key_inputs"]["classes"])
        n_train = len(plan["trained"]) - (0 if plan["validation"] is None
                                          else len(plan["validation"]))
        log(f"finetune {tag}: {n_train} images, {recipe.total_epochs} epochs")
        model, spec = pool.model_for(source_entry, classes, seed)
        if encoded is not None:
            model = add_metadata_branch(model, spec, encoded.shape[1], classes, seed=seed)
        netstore.train_and_save(entry, model, spec, open_cached(images).get(plan["trained"]),
                                plan["labels"], plan["mean"], recipe, seed, plan["key_inputs"],
                                plan["validation"], encoded, devices=config.devices("finetune"))
    return str(entry)


def finetune_one(config: Config, source_entry: Path, images, table: pd.DataFrame,
                 train_ids: list[str], design: str, tag: str,
                 pool: netstore.HeadSwapPool, seed: int | None = None,
                 validation_ids: list[str] | None = None) -> Path:
    """Plan and fine-tune one network in this process (``plan_one`` then ``finetune_task``);
    ``export --all-data`` uses it. Returns the complete entry folder."""
    plan = plan_one(config, source_entry, images, table, train_ids, design, device_kind(), seed,
                    validation_ids)
    return Path(finetune_task(config, plan, source_entry, tag, str(images.path), pool))


# The fine-tuning models of a worker process, reused by its tasks as the stage's pool is.
WORKER_POOL = netstore.HeadSwapPool()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    settings = artifacts.compute_settings(config)
    sources = artifacts.networks(config)
    table = artifacts.manifest(config)
    images = artifacts.target_images(config, table)
    with open_client(settings) as client:
        if client is None:
            from pipeline.models.device import select_device

            select_device()
        device = call(client, device_kind)
        rows, tasks, pool = [], [], netstore.HeadSwapPool()
        for cell in (c for c in config.cells if c.finetune):
            if sources[cell.source]["status"] != "ok":
                log(f"finetune {cell.name}: not run ({sources[cell.source]['reason']})")
                continue
            source_entry = Path(sources[cell.source]["entry"])
            for design in config.designs:
                labelled = apply_design(table, design)
                folds = artifacts.folds(config, design, table)
                holdout = is_holdout(folds)
                seeds = run_seeds(config.seed, config["folds"]["runs"]) if holdout else None
                for repeat, half, _ in fold_runs(folds):
                    ids = half_ids(folds, repeat, half)
                    tag = f"{cell.name} {design} repeat {repeat} half {half}"
                    extra = ({"seed": seeds[repeat - 1],
                              "validation_ids": half_ids(folds, repeat, VALIDATION_PART)}
                             if holdout else {})
                    plan = plan_one(config, source_entry, images, labelled, ids, design, device,
                                    **extra)
                    entry = plan["entry"]
                    if entry_complete(entry):
                        log(f"finetune {tag}: cached")
                    else:
                        tasks.append(Task(tag, finetune_task, (
                            config, plan, source_entry, tag, str(images.path),
                            *((pool,) if client is None else ()))))
                    rows.append({"source": cell.source, "design": design, "repeat": int(repeat),
                                 "train_half": half, "train_ids": train_ids_digest(ids),
                                 "entry": str(entry)})
        run_tasks(client, tasks, "finetune")
    write_csv(config.path_of("finetuned.csv"),
              pd.DataFrame(rows, columns=["source", "design", "repeat", "train_half", "train_ids",
                                          "entry"]))
    return 0
