"""Stage ``features``: fc7 features of every image a cell needs, cached on disk.

``python -m pipeline features --config EXP`` runs every source network (cells without fine-tuning:
all target images) and every fine-tuned network (its design's images, both halves) over the image
cache and writes the feature layer's output (fc7 after ReLU, dropout off) into the feature cache
(``pipeline.features.extraction``): one entry per network and image list, never recomputed, resumed
from its last saved chunk when interrupted.

The untrained ``none`` network is centred on each run's training half (its mean), so it has one
entry per run like the fine-tuned cells; the test half's images never set a run's features.

With ``classifier.kind = "network"`` (Kim & Rocheteau) the entries hold each fine-tuned network's
own softmax outputs instead, which the ``svm`` stage turns into scores without an SVM; a network
with a metadata branch is fed each image's metadata, encoded as its entry records.

Writes ``features.csv``: ``source, finetune, design, repeat, train_half, train_ids, entry``
(``design`` and ``train_ids`` empty and ``repeat``/``train_half`` 0 for a source network shared by
every design and fold).

Each missing entry is one task (``pipeline.compute.farm``), run in this process or, with
``[compute]`` naming a cluster, on its workers; TensorFlow is imported only where tasks run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from pipeline.cache.entries import entry_complete
from pipeline.cache.files import read_json, short_key, write_csv
from pipeline.classifiers.metadata import MetadataEncoder
from pipeline.compute.cluster import open_client
from pipeline.compute.farm import Task, call, run_tasks
from pipeline.console import log
from pipeline.data.designs import apply_design
from pipeline.data.image_cache import open_cached
from pipeline.experiment import artifacts
from pipeline.experiment.config import add_config_arguments, config_from_args
from pipeline.features.extraction import extract_features, feature_key
from pipeline.folds.table import fold_runs, half_ids, train_ids_digest
from pipeline.models.device import device_kind
from pipeline.protocol import cell_name, per_training_half
from pipeline.training import netstore
from pipeline.training.mean import compute_mean


def _metadata_of(net_entry: str, table: pd.DataFrame, ids: list[str], config):
    """The encoded metadata of ``ids`` for a network with a metadata branch (its entry records
    the encoding fitted on its training part), else None."""
    state = read_json(Path(net_entry) / "manifest.json").get("metadata")
    if not state:
        return None
    encoder = MetadataEncoder.from_state(state, str(config.path_of("manifest.csv")))
    return encoder.transform(table.set_index("image").loc[ids, state["keys"]])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    table = artifacts.manifest(config)
    images = artifacts.target_images(config, table)
    jobs = []  # (row of features.csv without entry, network entry, ids, mean or None)
    sources = artifacts.networks(config)
    design_ids = {d: apply_design(table, d)["image"].tolist() for d in config.designs}
    for cell in (c for c in config.cells if not c.finetune):
        if sources[cell.source]["status"] != "ok":
            continue
        net_entry = sources[cell.source]["entry"]
        if not per_training_half(cell.source, False):
            jobs.append(({"source": cell.source, "finetune": False, "design": "", "repeat": 0,
                          "train_half": 0, "train_ids": ""}, net_entry, table["image"].tolist(),
                         None))
            continue
        for design in config.designs:  # centred on each run's own training half
            folds = artifacts.folds(config, design, table)
            for repeat, half, _ in fold_runs(folds):
                train = half_ids(folds, repeat, half)
                jobs.append(({"source": cell.source, "finetune": False, "design": design,
                              "repeat": int(repeat), "train_half": half,
                              "train_ids": train_ids_digest(train)}, net_entry,
                             design_ids[design], compute_mean(images.get(train))))
    if any(c.finetune for c in config.cells):
        finetuned = artifacts.read_index(config, "finetuned.csv")
        for row in finetuned.itertuples():
            jobs.append(({"source": row.source, "finetune": True, "design": row.design,
                          "repeat": int(row.repeat), "train_half": int(row.train_half),
                          "train_ids": row.train_ids}, row.entry, design_ids[row.design], None))
    batch_size, jit = config["extract"]["batch_size"], config["extract"]["jit_compile"]
    outputs = config["classifier"]["kind"] == "network"  # only fine-tuned cells (config check)
    with open_client(artifacts.compute_settings(config)) as client:
        if client is None:
            from pipeline.models.device import select_device

            select_device()
        device = call(client, device_kind)
        started, rows, tasks, n_images = time.perf_counter(), [], [], 0
        state = {"networks": {}, "models": {}}  # this process's; a worker keeps its own
        for number, (row, net_entry, ids, mean) in enumerate(jobs, start=1):
            metadata = _metadata_of(net_entry, table, ids, config) if outputs else None
            key = feature_key(net_entry, images, ids, batch_size, device, mean, outputs, metadata,
                              jit)
            entry = config.cache_dir / "features" / short_key(key)
            if not entry_complete(entry):
                tag = (f"[{number}/{len(jobs)}] {cell_name(row['source'], row['finetune'])} "
                       f"{row['design']} {row['repeat']}/{row['train_half']}")
                tasks.append(Task(tag, features_task, (
                    str(net_entry), ids, entry, batch_size, device, mean, row["train_ids"] or None,
                    tag, str(images.path), outputs, metadata, jit,
                    *((state,) if client is None else ()))))
                n_images += len(ids)
            rows.append({**row, "entry": str(entry)})
        computed = sum(run_tasks(client, tasks, "features"))
    elapsed = time.perf_counter() - started
    log(f"features: {len(jobs)} feature entries, {computed} computed"
        + (f" ({n_images / elapsed:.1f} images/s)" if computed else " (all cached)"))
    write_csv(config.path_of("features.csv"), pd.DataFrame(
        rows, columns=["source", "finetune", "design", "repeat", "train_half", "train_ids",
                       "entry"]))
    return 0


def features_task(net_entry: str, ids: list[str], entry: Path, batch_size: int, device: str,
                  mean, train_ids: str | None, tag: str, images: str, outputs: bool = False,
                  metadata=None, jit_compile: bool = False, state: dict | None = None) -> bool:
    """Extract one feature entry (a task: in the stage's process or on a worker).

    ``state`` keeps the current network and one Keras model per architecture between tasks (one
    network in memory at a time); on a worker it is ``None`` and the worker process's own is used.
    ``images`` is the image cache entry's folder (opened once per process). ``outputs``: store the
    network's own softmax outputs (``classifier.kind = "network"``); ``metadata``: the encoded
    metadata of ``ids`` for a network with a metadata branch (else None); ``jit_compile``: the
    forward pass XLA-compiled (``extract.jit_compile``). Returns whether this
    task computed the entry (``False``: someone else finished it first).
    """
    state = WORKER_STATE if state is None else state
    if entry_complete(entry):
        return False
    log(f"features {tag}: {len(ids)} images")
    networks = state["networks"]
    if net_entry not in networks:
        networks.clear()  # one network in memory at a time
        networks[net_entry] = netstore.load(net_entry, reuse=state["models"])
    return extract_features(networks[net_entry], open_cached(images), ids, entry,
                            batch_size=batch_size, device=device, mean=mean, train_ids=train_ids,
                            outputs=outputs, metadata=metadata, jit_compile=jit_compile)


# A worker process's network and models, kept between its tasks as the stage's own are.
WORKER_STATE: dict = {"networks": {}, "models": {}}
