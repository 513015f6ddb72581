"""Stage ``report``: ``report.md`` with the paper's tables and plots, from the experiment's results.

``python -m pipeline report --config EXP`` reads ``metrics.csv``, ``predictions.csv``, the manifest
(Table 4's difficulty) and the cells that could not run, and writes ``report.md``, ``auc.png``,
``roc.png``, ``comparisons.csv`` and the referral analysis at ``report.threshold``
(``referral.csv``, ``referral.png``) (``pipeline.reporting.report``). The header lists the
experiment's facts and every declared departure from the paper (``experiment.scaled_down``,
``--set`` overrides). The paper's numbers are shown beside the results only for a faithful run
(derm7pt, VGG-M, nothing scaled down). ``report.architectures`` joins other experiments'
``imagenet+ft`` cell into Table 3; for a hold-out experiment (Kim & Rocheteau) it joins them into
their Table 1 (a) without and (b) with transfer instead (``pipeline.reporting.kim_rocheteau``).
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pandas as pd

import pipeline
from pipeline.cache.files import read_json
from pipeline.errors import PipelineError
from pipeline.experiment import artifacts
from pipeline.experiment.config import add_config_arguments, config_from_args, load_config
from pipeline.models.registry import get_network
from pipeline.protocol import parse_bool
from pipeline.reporting.kim_rocheteau import transfer_section
from pipeline.reporting.markdown import markdown_table
from pipeline.reporting.paper import PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, PAPER_TABLE4
from pipeline.reporting.report import attributions_section, write_report
from pipeline.reporting.tables import METRIC_TITLES, table_architectures
from pipeline.reporting.training import training_rows


def read_results(config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``metrics.csv`` and ``predictions.csv`` of an experiment, ``finetune`` as bool."""
    frames = []
    for name in ("metrics.csv", "predictions.csv"):
        frame = pd.read_csv(artifacts.require(config, name), keep_default_na=False,
                            na_values=[""], dtype={"design": str, "source": str, "image": str,
                                                   "y_true": str})
        try:
            frame["finetune"] = frame["finetune"].map(parse_bool)
        except ValueError as exc:
            raise PipelineError(f"{config.path_of(name)}: column 'finetune': {exc}. Rerun "
                                f"`make svm EXP={config.path}`.") from None
        frames.append(frame)
    return frames[0], frames[1]


def experiment_header(config) -> dict:
    """The experiment facts printed at the top of the report."""
    arch = artifacts.architecture(config)
    spec = get_network(arch["network"])
    width = spec.feature_width if arch["width"] == 1.0 else f"{spec.feature_width} x {arch['width']:g}"
    pre, ft = config.recipe("pretrain"), config.recipe("finetune")
    header = {
        "experiment": config.name, "description": config["experiment"]["description"],
        "config": str(config.path),
        "dataset": f"{config['data']['dataset']} ({config['data']['root']})" + (
            f" + the melanoma cases of {config['data']['extra_dataset']} "
            f"({config['data']['extra_root']}), added before the split (in every part, as Kim "
            "& Rocheteau's extra malignant cases)" if config["data"]["extra_dataset"]
            else (" (no extra malignant cases: the paper adds a second dataset's, "
                  "data.extra_dataset)" if config["folds"]["scheme"] == "holdout" else "")),
        "network": f"{arch['network']}, input {arch['input_size']}x{arch['input_size']}, "
                   f"width x{arch['width']:g}, features `{spec.feature_layer}` ({width})",
        "cells": ", ".join(c.name for c in config.cells),
        "designs": ", ".join(config.designs),
        "folds": f"{config['folds']['scheme']}" + (
            f", {config['folds']['repeats']} repeats" if config["folds"]["scheme"] == "5x2" else
            f" {list(config['folds']['holdout'])} (train, validation, test), "
            f"{config['folds']['runs']} runs, {config['folds']['holdout_grouping']}"
            if config["folds"]["scheme"] == "holdout" else ""),
        "training": f"pretrain {pre.epochs} epochs, fine-tune {ft.epochs} epochs, batch "
                    f"{ft.batch_size}, " + (
                        f"SGD lr {ft.learning_rate:g} Nesterov momentum {ft.momentum:g}"
                        if ft.optimizer == "sgd" else f"Adam lr {ft.learning_rate:g}")
                    + f", L2 {ft.l2:g}, augmentation {ft.augment}"
                    + (f", early stopping patience {ft.early_stopping_patience}"
                       if ft.early_stopping_patience else "")
                    + (f", lr x{ft.lr_decay_factor:g} after {ft.lr_decay_patience} epoch(s) "
                       "without improvement" if ft.lr_decay_factor < 1 else "")
                    + (f", brightness ±{ft.brightness_range:g}, saturation "
                       f"±{ft.saturation_range:g}"
                       if ft.brightness_range or ft.saturation_range else ""),
    }
    listing = config.path_of("duplicates.csv")
    if listing.is_file():  # written by `data` under data.duplicates = "group" or "drop"
        found = pd.read_csv(listing, dtype=str, keep_default_na=False)
        header["duplicate images (declared)"] = (
            f"{len(found)} ids share {found['sha256'].nunique()} image files (the same bytes); "
            + ("each file's ids were joined into one group" if config["data"]["duplicates"]
               == "group" else f"{(found['action'] == 'dropped').sum()} later copies were "
               "dropped") + f" (data.duplicates = \"{config['data']['duplicates']}\"), "
            "listed in duplicates.csv")
    if config["classifier"]["kind"] == "network":
        header["classifier"] = "the fine-tuned network's own output (log-odds), no SVM"
    else:
        header["svm"] = (f"C in {list(config['svm']['C_grid'])}, selection "
                         f"{config['svm']['selection']}" + (
                             f", C by the mean validation AUC over "
                             f"{config['svm']['selection_splits']} splits (not the paper's one)"
                             if config["svm"].get("selection_splits") not in (0, None, 1) and
                             config["folds"]["scheme"] != "holdout" else "") + (
                             ", chosen by AUC on the hold-out's validation part"
                             if config["folds"]["scheme"] == "holdout" else ""))
    if config["classifier"]["metadata"]:
        header["metadata"] = ", ".join(config["classifier"]["metadata"]) + \
            " (one-hot with unknown, age standardised on the training half)"
    header["seed"] = config.seed
    numerics = compute_options(config)
    if numerics:
        header["numerics (declared)"] = numerics
    recipes = recipe_options(config)
    if recipes:
        header["training recipe (declared)"] = recipes
    if config["experiment"]["scaled_down"]:
        header["scaled down (declared)"] = config["experiment"]["scaled_down"]
    if config.overrides:
        header["overrides (--set, declared)"] = ", ".join(config.overrides)
    header["written"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    header["pipeline version"] = pipeline.__version__
    return header


def recipe_options(config) -> str:
    """The declared fine-tuning recipe options that depart from the paper's SGD on every layer at
    one constant rate, per training stage (empty when none is on)."""
    parts = []
    for stage in ("pretrain", "finetune"):
        recipe, on = config.recipe(stage), []
        if recipe.batchnorm != "moving":
            on.append(f"batchnorm {recipe.batchnorm}")
        if recipe.head_epochs:
            on.append(f"{recipe.head_epochs} head-only epochs first (linear probing)")
        if recipe.head_learning_rate:
            on.append(f"head learning rate {recipe.head_learning_rate:g}")
        if recipe.lr_schedule != "constant":
            on.append(f"{recipe.lr_schedule} learning-rate schedule"
                      + (f", {recipe.warmup_epochs} warm-up epochs" if recipe.warmup_epochs else ""))
        if on:
            parts.append(f"{stage}: {', '.join(on)}")
    return "; ".join(parts)


def compute_options(config) -> str:
    """The declared departures from TensorFlow's default float32 computation: XLA
    (``jit_compile``) and ``mixed_precision`` per training stage, XLA in extraction, and
    data-parallel training (``devices = "all"``); empty when none is on."""
    parts = []
    for stage in ("pretrain", "finetune"):
        recipe = config.recipe(stage)
        if recipe.jit_compile:
            parts.append(f"{stage} XLA (jit_compile)")
        if recipe.mixed_precision:
            parts.append(f"{stage} mixed_float16 on a GPU (float32 on a CPU)")
        if config.devices(stage) == "all":
            parts.append(f"{stage} on every device (MirroredStrategy)")
    if config["extract"]["jit_compile"]:
        parts.append("features XLA (jit_compile)")
    return ", ".join(parts)


def architectures_section(config, metrics: pd.DataFrame) -> list[str]:
    """Table 3 lines: this experiment's network and those of ``report.architectures``."""
    if not config["report"]["architectures"]:
        return []
    by_network = {get_network(config["network"]["name"]).name: metrics}
    for other_path in config["report"]["architectures"]:
        other = load_config(other_path)
        by_network[get_network(other["network"]["name"]).name] = read_results(other)[0]
    table = table_architectures(by_network)
    rows = []
    for name, row in table.iterrows():
        rows.append([name, "this run", *row])
        if name in PAPER_TABLE3.index and _faithful(config):
            rows.append(["", "paper", *(f"{v:.1f}" for v in PAPER_TABLE3.loc[name, table.columns])])
    return ["## Table 3: AUC (%) by architecture (ImageNet + fine-tuning)", "",
            "Mean ± sd over runs of each network's `imagenet+ft` cell"
            + ("; \"paper\": Menegola et al. (2017), Table 3." if _faithful(config) else "."),
            "", markdown_table(["Network", "", *map(str, table.columns)], rows), ""]


def model_label(config) -> str:
    """A model of Kim & Rocheteau's table: the network, and the metadata it fuses."""
    name = get_network(config["network"]["name"]).name
    keys = config["classifier"]["metadata"]
    return (name + (f" + {'/'.join(keys)}" if keys else "")
            + (" (SVM)" if config["classifier"]["kind"] == "svm" else ""))


def kim_rocheteau_section(config, metrics: pd.DataFrame, predictions: pd.DataFrame) -> list[str]:
    """Kim & Rocheteau's Table 1 (a)/(b) and ROC corner figure, for a hold-out experiment: its
    model and those of ``report.architectures`` (experiments joined, one per backbone)."""
    metrics_by, predictions_by = {model_label(config): metrics}, {model_label(config): predictions}
    for other_path in config["report"]["architectures"]:
        other = load_config(other_path)
        label = model_label(other)
        if label in metrics_by:
            raise PipelineError(f"`report.architectures` in {config.path} joins {other_path}, "
                                f"whose model {label!r} is already in the table; give each joined "
                                "experiment another network or metadata.")
        metrics_by[label], predictions_by[label] = read_results(other)
    design = "melanoma_vs_benign" if "melanoma_vs_benign" in config.designs else config.designs[0]
    return transfer_section(metrics_by, predictions_by, config.output_dir, design)


def _faithful(config) -> bool:
    """Whether the paper's numbers are comparable: the Atlas, nothing scaled down or overridden."""
    return (config["data"]["dataset"] == "derm7pt" and not config["experiment"]["scaled_down"]
            and not config.overrides)


def isic2016_section(config, metrics: pd.DataFrame) -> list[str]:
    """The paper's Table 2 beside this run's, for ISIC 2016's official split."""
    if config["data"]["dataset"] != "isic2016" or config["experiment"]["scaled_down"] \
            or config.overrides:
        return []
    runs = metrics[(metrics["source"] == "imagenet") & metrics["finetune"]]
    names = list(PAPER_TABLE2)
    ours = [f"{100 * runs[n].mean():.1f}" if n in runs and len(runs) else "—" for n in names]
    return ["## Table 2: ISIC 2016 Part 3, official split (%)", "",
            "The `imagenet+ft` cell against Menegola et al. (2017), Table 2 (VGG-16); mAP is the "
            "average precision.", "",
            markdown_table(["", *(METRIC_TITLES.get(n, n) for n in names)],
                           [["this run", *ours],
                            ["paper", *(f"{PAPER_TABLE2[n]:.1f}" for n in names)]]), ""]


def trained_manifests(config) -> list[dict]:
    """The manifests of the experiment's trained networks: Retinopathy sources, fine-tuned ones."""
    entries = [info["entry"] for info in artifacts.networks(config).values()
               if info["status"] == "ok"]
    if any(c.finetune for c in config.cells):
        entries += artifacts.read_index(config, "finetuned.csv")["entry"].tolist()
    return [read_json(Path(entry) / "manifest.json") for entry in entries]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    metrics, predictions = read_results(config)
    runs = artifacts.read_index(config, "runs.csv")
    artifacts.check_runs(config, runs)
    faithful = _faithful(config) and config["network"]["name"] == "vgg-m"
    path = write_report(
        config.output_dir, metrics, predictions, manifest=artifacts.manifest(config),
        not_run=artifacts.not_run(config), header=experiment_header(config),
        paper_table=PAPER_TABLE1 if faithful else None,
        paper_difficulty=PAPER_TABLE4 if faithful else None,
        difficulty_cell=config["report"]["difficulty_cell"], threshold=config["report"]["threshold"],
        seed=config.seed, training=training_rows(trained_manifests(config)),
        score=("the network's log-odds" if config["classifier"]["kind"] == "network"
               else "the SVM score"),
        extra_sections=isic2016_section(config, metrics)
        + (kim_rocheteau_section(config, metrics, predictions)
           if config["folds"]["scheme"] == "holdout" else architectures_section(config, metrics))
        + attributions_section(config.output_dir),
        holdout=config["folds"]["scheme"] == "holdout")
    print(f"report: {path}")
    return 0
