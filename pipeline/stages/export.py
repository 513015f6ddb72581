"""Command ``export``: one cell's trained model as a self-contained model folder.

``python -m pipeline export --config EXP --cell CELL --design DESIGN [--run REPEAT/TEST_HALF |
--all-data] --out DIR`` writes the folder ``pipeline.serving.folder`` describes (network weights,
linear SVM, preprocessing and image decoding, class names, metadata encoding, provenance, schema
version), which ``python -m pipeline predict --model DIR`` applies to image files.

- ``--run`` (default: the cell's first run in ``predictions.csv``): the network whose weights made
  that run's features (``runs.csv`` -> feature entry -> weights digest, as ``explain`` finds it),
  the features' mean, and the run's SVM refitted from the cached features exactly as ``svm``
  fitted it, refused unless it reproduces the run's ``predictions.csv`` scores. Its
  ``metrics.csv`` row goes into the provenance.
- ``--all-data``: the final model on every image of the design, C chosen by the experiment's own
  selection (``svm.selection``, ``svm.validation_fraction``, the experiment's seed) on all of
  them. For a cell without fine-tuning that is the source network's features of every image (the
  cached ones; for the untrained ``none`` network, centred on its training images' mean, the mean
  of all images and features computed here). For a fine-tuned cell, the source network fine-tuned
  on every image of the design exactly as ``finetune`` fine-tunes it on a training half
  (``pipeline.stages.finetune.finetune_one``: same recipe, new head, seed and mean), stored in the
  network cache under a key holding those images (a second export reuses it), and its features of
  every image extracted into the feature cache (``pipeline.features.extraction``).

Reads ``manifest.csv``, ``folds/``, ``networks.json``, ``finetuned.csv``, ``features.csv``,
``runs.csv``, ``metrics.csv`` and ``predictions.csv``; writes ``--out`` and, for ``--all-data`` of a
fine-tuned cell, one network entry and one feature entry in the experiment's cache.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import pandas as pd

from pipeline.cache.files import hash_file, read_json
from pipeline.classifiers.svm import select_and_fit
from pipeline.data.designs import Design, apply_design, get_design
from pipeline.errors import PipelineError
from pipeline.experiment import artifacts
from pipeline.experiment.config import add_config_arguments, config_from_args
from pipeline.features.extraction import load_features
from pipeline.folds.table import half_ids, train_ids_digest
from pipeline.protocol import Cell, per_training_half
from pipeline.serving.folder import decoding_settings, write_model_folder
from pipeline.stages.explain import network_of, refit_svm, run_predictions
from pipeline.stages.report import read_results

SVM_KIND = "linear SVM on L2-normalised features: score = coef . f / |f| + intercept"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--cell", required=True, help="the cell, e.g. imagenet+ft")
    parser.add_argument("--design", required=True, help="the labelling design")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", default=None, metavar="REPEAT/TEST_HALF",
                       help="the run, as in predictions.csv (default: the cell's first run)")
    which.add_argument("--all-data", action="store_true",
                       help="train the final model on every image of the design (fine-tuned "
                            "cells: the network too, cached)")
    parser.add_argument("--out", required=True, help="the model folder to write")


def score_columns(design: Design) -> str | list[str]:
    """The ``predictions.csv`` score column(s) of a design, in its class order."""
    return "score" if len(design.classes) == 2 else [f"score_{c}" for c in design.classes]


def _plain(value):
    if isinstance(value, (np.generic,)):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def export_run(config, cell: Cell, design: Design, run: str | None, metrics: pd.DataFrame,
               predictions: pd.DataFrame) -> dict:
    """The run's refitted SVM, its network and mean, and its provenance."""
    repeat, half, part = run_predictions(predictions, cell, design.name, run,
                                         config.path_of("predictions.csv"))
    runs = artifacts.read_index(config, "runs.csv")
    artifacts.check_runs(config, runs)
    keys = {"source": cell.source, "finetune": cell.finetune, "design": design.name,
            "repeat": repeat, "test_half": half}
    mask = np.logical_and.reduce([runs[k] == v for k, v in keys.items()])
    entry = runs[mask]["features"].iloc[0]
    expected = part.set_index("image")[score_columns(design)].astype(float)
    fit, gap = refit_svm(config, design.name, repeat, half, entry, expected)
    net = network_of(config, entry)
    recorded = read_json(f"{entry}/manifest.json").get("mean")
    mean = recorded if recorded is not None else net.mean
    row = metrics[np.logical_and.reduce([metrics[k] == v for k, v in keys.items()])]
    folds = artifacts.folds(config, design.name)
    train = half_ids(folds, repeat, 3 - half)
    return {"fit": fit, "network": net, "mean": mean, "features": entry,
            "provenance": {"run": f"{repeat}/{half}", "train_ids": train_ids_digest(train),
                           "n_train": len(train), "refit_score_gap": gap,
                           "metrics": ({k: _plain(v) for k, v in row.iloc[0].items()}
                                       if len(row) else None)}}


def export_all_data(config, cell: Cell, design: Design) -> dict:
    """The SVM fitted on every image of the design, its network and mean, and its provenance."""
    from pipeline.training import netstore

    status = artifacts.networks(config).get(cell.source)
    if status is None or status["status"] != "ok":
        why = status["reason"] if status else "it is not in networks.json"
        raise PipelineError(f"cell {cell.name} has no source network ({why}); run `make "
                            f"pretrain EXP={config.path}` with that cell in the experiment.")
    table = artifacts.manifest(config)
    labelled = apply_design(table, design.name)
    ids, labels = labelled["image"].tolist(), labelled["label"].to_numpy()
    if cell.finetune:
        net, entry = finetuned_on_all(config, cell, design, table, labelled, status["entry"])
        features, feature_ids = load_features(entry)
        assert feature_ids == ids, "the feature entry's rows are the design's images in order"
        X, mean = np.asarray(features), net.mean
    elif per_training_half(cell.source, False):
        # The untrained network is centred on its training images' mean: here, all of them.
        from pipeline.serving.predict import image_features
        from pipeline.training.train import compute_mean

        net = netstore.load(status["entry"])
        pixels = artifacts.target_images(config, table).get(ids)
        mean = compute_mean(pixels)
        X = image_features(net, mean, pixels, config["extract"]["batch_size"])
        entry = None
    else:
        index = artifacts.read_index(config, "features.csv")
        rows = index[(index["source"] == cell.source) & ~index["finetune"].astype(bool)]
        if rows.empty:
            raise PipelineError(f"{config.path_of('features.csv')} has no features of cell "
                                f"{cell.name}; run `make features EXP={config.path}`.")
        entry = rows["entry"].iloc[0]
        features, feature_ids = load_features(entry)
        row_of = pd.Series(np.arange(len(feature_ids)), index=feature_ids)
        missing = sorted(set(ids) - set(feature_ids))
        if missing:
            raise PipelineError(f"feature entry {entry} lacks {len(missing)} images of "
                                f"{design.name} (e.g. {missing[:3]}); rerun `make features`.")
        X = np.asarray(features[row_of[ids].to_numpy()])
        net = network_of(config, entry)
        recorded = read_json(f"{entry}/manifest.json").get("mean")
        mean = recorded if recorded is not None else net.mean
    svm = config["svm"]
    fit = select_and_fit(X, labels, C_grid=svm["C_grid"], selection=svm["selection"],
                         validation_fraction=svm["validation_fraction"],
                         n_splits=svm.get("selection_splits") or None, seed=config.seed,
                         classes=design.classes)
    return {"fit": fit, "network": net, "mean": mean, "features": entry,
            "provenance": {"run": "all-data", "train_ids": train_ids_digest(ids),
                           "n_train": len(ids), "refit_score_gap": None, "metrics": None}}


def finetuned_on_all(config, cell: Cell, design: Design, table: pd.DataFrame,
                     labelled: pd.DataFrame, source_entry: str):
    """The cell's source network fine-tuned on every image of the design, and its features of them.

    The network is made by ``finetune``'s own function with all of the design's images as the
    training set, so its cache key differs from every per-half entry only by those images; the
    features are extracted as ``features`` extracts a fine-tuned network's (its own mean, the
    experiment's batch size, this device).

    Returns:
        ``(network, feature entry)``: the ``StoredNetwork`` and the feature entry whose rows are
        ``labelled["image"]`` in order.
    """
    from pathlib import Path

    from pipeline.cache.entries import entry_complete
    from pipeline.cache.files import short_key
    from pipeline.console import log
    from pipeline.features.extraction import extract_features, feature_key
    from pipeline.models.device import device_kind
    from pipeline.stages.finetune import finetune_one
    from pipeline.training import netstore

    images = artifacts.target_images(config, table)
    ids = labelled["image"].tolist()
    tag = f"{cell.name} {design.name} all-data"
    net_entry = finetune_one(config, Path(source_entry), images, labelled, ids, design.name, tag,
                             netstore.HeadSwapPool())
    net = netstore.load(net_entry)
    batch_size, device = config["extract"]["batch_size"], device_kind()
    entry = config.cache_dir / "features" / short_key(
        feature_key(net_entry, images, ids, batch_size, device))
    if not entry_complete(entry):
        log(f"export {tag}: features of {len(ids)} images")
    extract_features(net, images, ids, entry, batch_size=batch_size, device=device)
    return net, str(entry)


def model_info(config, cell: Cell, design: Design, result: dict) -> dict:
    """``model.json`` (without the schema version) of an exported model."""
    fit, net, mean = result["fit"], result["network"], result["mean"]
    svm = config["svm"]
    manifest_path = artifacts.require(config, "manifest.csv")
    return {
        "classes": list(design.classes), "positive": design.positive,
        "threshold": float(config["report"]["threshold"]),
        "svm": {"kind": SVM_KIND, "C": fit.C_, "selection": svm["selection"],
                "validation_fraction": svm["validation_fraction"], "C_grid": list(svm["C_grid"]),
                "seed": config.seed, "val_auc": {repr(C): a for C, a in fit.val_auc_.items()}},
        "preprocessing": {"network": net.spec.name, "input_size": net.info["input_size"],
                          "width": net.info["width"], "feature_layer": net.spec.feature_layer,
                          "mode": net.spec.preprocessing.mode,
                          "mean": None if mean is None else np.asarray(mean).tolist()},
        "image": decoding_settings(**artifacts.image_cache_settings(config, "target")),
        "metadata": {"features": [], "note": "this protocol trains on images only"},
        "provenance": {"experiment": config.name, "config": str(config.path),
                       "config_sha256": hash_file(config.path),
                       "overrides": list(config.overrides), "manifest": str(manifest_path),
                       "manifest_sha256": hash_file(manifest_path), "cell": cell.name,
                       "design": design.name, "features_entry": result["features"],
                       "network_entry": str(net.entry), "network_digest": net.info["digest"],
                       "network_train_ids": net.info.get("train_ids"),
                       **result["provenance"]},
    }


def run(args: argparse.Namespace) -> int:
    from pipeline.models.device import select_device

    config = config_from_args(args)
    try:
        cell = Cell.parse(args.cell)
    except ValueError as exc:
        raise PipelineError(f"--cell: {exc}.") from None
    design = get_design(args.design)
    if config["svm"]["selection"] == "reference" and len(design.classes) > 2:
        raise PipelineError(
            f"export writes a linear model (weights and intercept per class), but with "
            f"svm.selection = \"reference\" the {len(design.classes)}-class design "
            f"{design.name!r} is classified by libsvm's one-vs-one SVC with Platt probabilities "
            f"(the authors' code), which a model folder cannot hold. Export it with "
            f"--set svm.selection=paper, or export a 2-class design.")
    select_device()
    if args.all_data:
        result = export_all_data(config, cell, design)
    else:
        metrics, predictions = read_results(config)
        result = export_run(config, cell, design, args.run, metrics, predictions)
    svm = result["fit"].model[-1]
    info = model_info(config, cell, design, result)
    out = write_model_folder(args.out, result["network"].entry, svm.coef_, svm.intercept_, info,
                             config.path.read_text(encoding="utf-8"))
    gap = result["provenance"]["refit_score_gap"]
    check = f"; SVM refitted within {gap:.1e} of predictions.csv" if gap is not None else ""
    print(f"export: {cell.name} {design.name} {result['provenance']['run']} "
          f"(C={result['fit'].C_:g}, {result['provenance']['n_train']} training images{check}) "
          f"-> {out}", file=sys.stderr)
    return 0
