"""Per-stage settings stamps and the generated make dependencies of an experiment.

``python -m pipeline stamps --config EXP [--set ...] --out experiments/<name>/.stamps`` validates the
experiment and writes, atomically and only when their content changes:

- ``<stage>.json``: the settings one stage depends on (``STAGE_SETTINGS``). ``make`` reruns a stage
  when its stamp changes, not whenever the experiment file is touched, so a new C grid reruns only
  ``svm`` and ``report``;
- ``deps.mk``: the real files the stages read that only the config names: every folds file, the
  dataset's label files and the other experiments the report joins, with a rule that makes a
  joined experiment whose results are missing. The Makefile includes it, so ``make``, ``make -n``
  and ``make -q`` see the same inputs.

Because unchanged files keep their modification time, a finished run is up to date for
``make -q``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cache.files import write_json, write_text
from pipeline.data.datasets import label_files
from pipeline.experiment.config import Config, add_config_arguments, config_from_args
from pipeline.protocol import RETINOPATHY_SOURCES

# Sections (or single keys) each stage depends on.
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "data": ("data", "network.input_size", "network.name", "pretrain.retinopathy_root",
             "pretrain.retinopathy_max_images", "experiment.cells", "experiment.seed",
             "experiment.cache_dir"),
    "folds": ("folds", "experiment.seed"),
    "pretrain": ("network", "train", "pretrain", "experiment.seed", "experiment.cells"),
    "finetune": ("network", "train", "finetune", "classifier", "experiment.seed",
                 "experiment.cells"),
    "features": ("extract", "classifier", "experiment.cells"),
    "svm": ("svm", "classifier", "experiment.seed", "experiment.cells", "report.threshold"),
    "report": ("report", "experiment"),
}


def stage_settings(config: Config, stage: str) -> dict:
    """The settings ``stage`` depends on, as ``{"section" or "section.key": value}``."""
    out = {}
    for name in STAGE_SETTINGS[stage]:
        section, _, key = name.partition(".")
        out[name] = config.raw[section][key] if key else config.raw[section]
    return out


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)
    return True


def write_stamps(config: Config, folder: Path) -> list[str]:
    """Write ``<folder>/<stage>.json`` for every stage whose settings changed; returns their names.

    Unchanged stamps keep their modification time, so ``make`` does not rerun those stages.
    """
    changed = []
    for stage in STAGE_SETTINGS:
        path = Path(folder) / f"{stage}.json"
        text = json.dumps(stage_settings(config, stage), indent=2, sort_keys=True, default=list)
        if not path.is_file() or path.read_text(encoding="utf-8") != text + "\n":
            write_json(path, json.loads(text))
            changed.append(stage)
    return changed


def make_dependencies(config: Config) -> dict[str, list[str]]:
    """The files behind an experiment's stages that only its config names.

    Returns:
        ``FOLDS_FILES`` (every ``folds/<design>.csv``), ``LABEL_FILES`` (the target dataset's and,
        when a cell needs it, the Retinopathy source task's label files) and ``REPORT_DEPS``
        (``metrics.csv`` and ``predictions.csv`` of the experiments ``report.architectures``
        joins).
    """
    labels = label_files(config["data"]["dataset"], config["data"]["root"])
    if config["data"]["extra_dataset"]:
        labels += label_files(config["data"]["extra_dataset"], config["data"]["extra_root"])
    if set(config.sources) & RETINOPATHY_SOURCES:
        labels += label_files("retinopathy", config["pretrain"]["retinopathy_root"])
    report = []
    for other in config["report"]["architectures"]:
        folder = Path(other).with_suffix("")
        report += [str(folder / "metrics.csv"), str(folder / "predictions.csv")]
    return {"FOLDS_FILES": [str(config.path_of(f"folds/{d}.csv")) for d in config.designs],
            "LABEL_FILES": [str(p) for p in labels], "REPORT_DEPS": report}


def _make_quote(path: str) -> str:
    """A path as a make word (spaces, ``#``, ``:`` and ``$`` escaped)."""
    return (path.replace("\\", "\\\\").replace(" ", "\\ ").replace("#", "\\#")
            .replace(":", "\\:").replace("$", "$$"))


def joined_rules(config: Config) -> list[str]:
    """Make rules for the experiments ``report.architectures`` joins: results that are missing
    are made by ``make all EXP=<that experiment>`` (a recursive make, so ``make -n`` prints its
    commands and ``make -q`` asks it); results that exist are inputs like any file, so rerunning
    a joined experiment remakes this report."""
    lines = []
    for other in config["report"]["architectures"]:
        folder = Path(other).with_suffix("")
        targets = " ".join(_make_quote(str(folder / n)) for n in ("metrics.csv", "predictions.csv"))
        lines += [f"{targets} &:",
                  f"\t+$(MAKE) --no-print-directory all EXP={_make_quote(str(other))}"]
    return lines


def write_dependencies(config: Config, folder: Path) -> bool:
    """Write ``<folder>/deps.mk`` when its content changes; returns whether it did."""
    lines = [f"# Written by `python -m pipeline stamps` from {config.path}; do not edit."]
    for name, paths in make_dependencies(config).items():
        lines.append(f"{name} := " + " ".join(_make_quote(p) for p in paths))
    lines += joined_rules(config)
    return _write_if_changed(Path(folder) / "deps.mk", "\n".join(lines) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="stamp folder (default: <output_dir>/.stamps)")


def run(args: argparse.Namespace) -> int:
    """``python -m pipeline stamps``: validate the experiment and refresh its stamps and deps.mk."""
    config = config_from_args(args)
    folder = Path(args.out) if args.out else config.path_of(".stamps")
    changed = write_stamps(config, folder)
    write_dependencies(config, folder)
    print(f"{config.path}: settings changed for {', '.join(changed)}" if changed
          else f"{config.path}: no stage settings changed")
    return 0
