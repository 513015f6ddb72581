"""Experiment configs: one TOML file per experiment in ``experiments/``, one section per stage.

Every key is declared once in ``SCHEMA`` (type, default, what is allowed, what it means) and
validated in one place, :func:`load_config`; an error names the key, the file, what is allowed and
what was received. Unknown keys are refused, since a misspelt key would otherwise silently do
nothing. String values may use ``${VAR}`` to read an environment variable (real-data paths are set
that way); an unset variable is an error naming it. Relative paths are relative to the folder
``make`` runs in (the project root).

Results of ``experiments/<name>.toml`` go to ``experiments/<name>/``.

Sections: ``[experiment]`` (name, seed, cells), ``[data]`` (the target dataset),
``[folds]``, ``[network]``, ``[train]`` (the recipe shared by every training run),
``[pretrain]`` (source tasks: Retinopathy data and recipe overrides), ``[finetune]`` (recipe
overrides), ``[extract]``, ``[svm]`` and ``[report]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.designs import DESIGNS
from pipeline.errors import PipelineError
from pipeline.recipe import TrainRecipe

SOURCES = ("none", "retinopathy", "imagenet", "double")
TABLE1_CELLS = ("none+ft", "retinopathy", "retinopathy+ft", "imagenet", "imagenet+ft", "double+ft")
ALL_CELLS = tuple(f"{s}{ft}" for s in SOURCES for ft in ("", "+ft"))
SKIN_DATASETS = ("derm7pt", "isic2016", "isic2020", "isic-archive", "csv")


@dataclass(frozen=True)
class Cell:
    """One transfer protocol: a source network, fine-tuned on the target or not."""

    source: str
    finetune: bool

    @property
    def name(self) -> str:
        """``<source>`` or ``<source>+ft``, as in result files."""
        return f"{self.source}+ft" if self.finetune else self.source

    @classmethod
    def parse(cls, text: str) -> "Cell":
        source, _, suffix = text.partition("+")
        return cls(source, suffix == "ft")


# --- the schema --------------------------------------------------------------------------------
# section -> key -> (checker, default, description). A checker returns the converted value or
# raises ValueError with "what is allowed".

def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _int(lo: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo):
            raise ValueError(f"an integer >= {lo}" if lo is not None else "an integer")
        return value
    return check


def _float(lo: float | None = None, hi: float | None = None, open_lo: bool = False
           ) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and lo is not None:
            ok = value > lo if open_lo else value >= lo
        if ok and hi is not None:
            ok = value <= hi
        if not ok:
            bounds = [f"{'>' if open_lo else '>='} {lo}" if lo is not None else "",
                      f"<= {hi}" if hi is not None else ""]
            raise ValueError("a number " + " and ".join(b for b in bounds if b))
        return float(value)
    return check


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError("one of " + ", ".join(repr(a) for a in allowed))
        return value
    return check


def _list_of(item: Callable[[Any], Any], allowed_text: str, nonempty: bool = True,
             unique: bool = True) -> Callable[[Any], tuple]:
    def check(value: Any) -> tuple:
        if not isinstance(value, list) or (nonempty and not value):
            raise ValueError(f"a {'non-empty ' if nonempty else ''}list of {allowed_text}")
        try:
            out = tuple(item(v) for v in value)
        except ValueError:
            raise ValueError(f"a list of {allowed_text}") from None
        if unique and len(set(out)) != len(out):
            raise ValueError(f"a list of distinct {allowed_text}")
        return out
    return check


def _cells(value: Any) -> tuple:
    if value == "all":
        return ALL_CELLS
    if value == "table1":
        return TABLE1_CELLS
    return _list_of(_choice(*ALL_CELLS), "cell names (" + ", ".join(ALL_CELLS) + ")")(value)


def _pair(value: Any) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and v > 0 for v in value) or value[0] > value[1]):
        raise ValueError("a list [low, high] of two numbers > 0 with low <= high")
    return (float(value[0]), float(value[1]))


_RECIPE_KEYS = {
    "epochs": (_int(1), 60, "training epochs (paper: 60; reference code: 80)"),
    "batch_size": (_int(1), 48, "images per SGD step (reference code: 48)"),
    "learning_rate": (_float(0, open_lo=True), 1e-3, "SGD learning rate"),
    "momentum": (_float(0, 1), 0.1, "Nesterov momentum"),
    "nesterov": (_bool, True, "use Nesterov momentum"),
    "l2": (_float(0), 5e-3, "L2 regularisation factor"),
    "validation_fraction": (_float(0, 0.5, open_lo=True), 0.1, "stratified validation fraction"),
    "augment": (_choice("minority", "none"), "minority", "augment only the minority classes"),
    "scale_range": (_pair, [0.8, 1.2], "random scaling range of the augmentation"),
    "rotation_degrees": (_float(0, 180), 180.0, "random rotation range (±degrees)"),
    "flip": (_bool, True, "random flips in the augmentation"),
    "mixed_precision": (_bool, False, "float16 compute on a GPU"),
}
_RECIPE_OVERRIDES = {k: (c, None, d) for k, (c, _, d) in _RECIPE_KEYS.items()}

SCHEMA: dict[str, dict[str, tuple[Callable[[Any], Any], Any, str]]] = {
    "experiment": {
        "name": (_str, None, "experiment name (required)"),
        "description": (_str, "", "one line shown in the report"),
        "seed": (_int(0), 0, "seed of every random choice (folds, inits, training, SVM split)"),
        "cells": (_cells, "table1", "cells to run: 'table1' (the paper's 6), 'all' (8) or a list"),
        "cache_dir": (_str, "features_cache", "content-keyed caches (disposable)"),
        "scaled_down": (_str, "", "declared departures from the paper's scale, printed in the "
                        "report's header (the demo's smaller input and width)"),
    },
    "data": {
        "dataset": (_choice(*SKIN_DATASETS), None, "target dataset adapter (required)"),
        "root": (_str, None, "dataset folder (required; ${VAR} reads the environment)"),
        "keep_acral": (_bool, False, "derm7pt: keep acral lesions (the paper excludes them)"),
        "crop_black_frame": (_bool, True, "crop black frames around images (the paper does)"),
        "skip_bad_images": (_bool, False, "skip unreadable images, listing them, instead of failing"),
    },
    "folds": {
        "designs": (_list_of(_choice(*DESIGNS), "design names (" + ", ".join(DESIGNS) + ")"),
                    list(DESIGNS), "labelling designs"),
        "scheme": (_choice("5x2", "official"), "5x2",
                   "'5x2' cross-validation (paper) or the dataset's 'official' train/test split"),
        "repeats": (_int(1), 5, "repeats of the 2-fold split (paper: 5)"),
    },
    "network": {
        "name": (_str, "vgg-m", "network from the registry (`python -m pipeline networks`)"),
        "input_size": (_int(16), None, "input side in pixels (default: the network's, 224)"),
        "width": (_float(0, 1, open_lo=True), 1.0, "multiplier on every layer's width"),
        "imagenet_weights": (_str, "", "local ImageNet weights file (vgg-m: made by "
                             "`convert-matconvnet`; vgg16: Keras's h5) — empty: the Keras cache"),
    },
    "train": dict(_RECIPE_KEYS),
    "pretrain": {
        "retinopathy_root": (_str, "", "Kaggle Diabetic Retinopathy folder (trainLabels.csv)"),
        "retinopathy_max_images": (_int(0), 0, "use a stratified subset of this many images "
                                   "(0: all)"),
        **_RECIPE_OVERRIDES,
    },
    "finetune": dict(_RECIPE_OVERRIDES),
    "extract": {
        "batch_size": (_int(1), 32, "images per forward pass"),
    },
    "svm": {
        "C_grid": (_list_of(_float(0, open_lo=True), "floats > 0"),
                   [10.0 ** k for k in range(-3, 5)], "SVM C values tried"),
        "selection": (_choice("paper", "reference"), "paper",
                      "'paper': one 10% stratified split, AUC; 'reference': 10 splits, "
                      "class-balanced weights (the authors' code)"),
        "validation_fraction": (_float(0, 0.5, open_lo=True), 0.1, "validation split for C"),
        "n_jobs": (_int(-1), -1, "parallel cells (-1: every core)"),
    },
    "report": {
        "threshold": (_float(), 0.0, "decision threshold on SVM scores for ACC/SE/SP/F1"),
        "difficulty_cell": (_choice(*ALL_CELLS), "imagenet+ft",
                            "cell of Table 4, AUC by difficulty (the paper: imagenet+ft)"),
        "architectures": (_list_of(_str, "experiment config paths", nonempty=False), [],
                          "other experiments whose imagenet+ft cell joins Table 3"),
    },
}
_REQUIRED = {("experiment", "name"), ("data", "dataset"), ("data", "root")}


@dataclass(frozen=True)
class Config:
    """A validated experiment config. ``raw[section][key]`` holds every value, defaults filled."""

    path: Path
    raw: dict
    cells: tuple[Cell, ...] = field(default=())

    def __getitem__(self, section: str) -> dict:
        return self.raw[section]

    @property
    def name(self) -> str:
        return self.raw["experiment"]["name"]

    @property
    def seed(self) -> int:
        return self.raw["experiment"]["seed"]

    @property
    def output_dir(self) -> Path:
        """Results live next to the config: ``experiments/demo.toml`` -> ``experiments/demo/``."""
        return self.path.with_suffix("")

    @property
    def cache_dir(self) -> Path:
        return Path(self.raw["experiment"]["cache_dir"])

    @property
    def designs(self) -> tuple[str, ...]:
        return self.raw["folds"]["designs"]

    @property
    def sources(self) -> tuple[str, ...]:
        """Transfer sources the cells need, in canonical order (double needs imagenet weights)."""
        return tuple(s for s in SOURCES if any(c.source == s for c in self.cells))

    def recipe(self, stage: str) -> TrainRecipe:
        """The training recipe of ``stage`` (``pretrain`` or ``finetune``): ``[train]`` with the
        stage's overrides."""
        values = dict(self.raw["train"])
        values.update({k: v for k, v in self.raw[stage].items() if k in _RECIPE_KEYS and v is not None})
        return TrainRecipe(**values)

    def path_of(self, name: str) -> Path:
        """A result file of this experiment, e.g. ``path_of("manifest.csv")``."""
        return self.output_dir / name


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: str, where: str) -> str:
    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise PipelineError(f"{where} uses ${{{name}}}, but the environment variable {name} is "
                                f"not set. Set it to the dataset's folder, e.g. `export {name}=/data/...`"
                                f" or `make ... {name}=/data/...`.")
        return os.environ[name]
    return _VAR.sub(sub, value)


def validate(raw: dict, path: Path | str) -> Config:
    """Validate a parsed TOML mapping against ``SCHEMA``; returns the ``Config``."""
    path = Path(path)
    unknown_sections = sorted(set(raw) - set(SCHEMA))
    if unknown_sections:
        raise PipelineError(f"{path}: unknown section(s) {unknown_sections}. Allowed sections: "
                            f"{', '.join(SCHEMA)}.")
    out: dict[str, dict] = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise PipelineError(f"{path}: `{section}` must be a table ([{section}]).")
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise PipelineError(f"{path}: unknown key(s) {', '.join(f'`{section}.{k}`' for k in unknown)}"
                                f". Allowed keys in [{section}]: {', '.join(keys)}.")
        out[section] = {}
        for key, (check, default, _) in keys.items():
            where = f"`{section}.{key}` in {path}"
            if key not in given:
                if (section, key) in _REQUIRED:
                    raise PipelineError(f"{where} is required ({keys[key][2]}).")
                out[section][key] = check(default) if default is not None else None
                continue
            value = given[key]
            if isinstance(value, str):
                value = _expand(value, where)
            try:
                out[section][key] = check(value)
            except ValueError as exc:
                raise PipelineError(f"{where} must be {exc}. Got {value!r} instead.") from None
    cells = tuple(Cell.parse(c) for c in out["experiment"]["cells"])
    config = Config(path=path, raw=out, cells=cells)
    _cross_checks(config)
    return config


def _cross_checks(config: Config) -> None:
    path = config.path
    if config["folds"]["scheme"] == "official" and config["data"]["dataset"] != "isic2016":
        raise PipelineError(f"`folds.scheme = \"official\"` in {path} needs a dataset with an official "
                            f"train/test split (isic2016); got `data.dataset = "
                            f"\"{config['data']['dataset']}\"`. Use scheme = \"5x2\".")
    if ("retinopathy" in config.sources or "double" in config.sources) and \
            not config["pretrain"]["retinopathy_root"]:
        raise PipelineError(f"cells {[c.name for c in config.cells if c.source in ('retinopathy', 'double')]}"
                            f" in {path} need the Retinopathy source task, but "
                            "`pretrain.retinopathy_root` is empty. Set it to the folder holding "
                            "trainLabels.csv, or drop those cells from `experiment.cells`.")
    if config["data"]["keep_acral"] and config["data"]["dataset"] != "derm7pt":
        raise PipelineError(f"`data.keep_acral` in {path} only applies to derm7pt; it would do nothing "
                            f"for {config['data']['dataset']!r}. Remove it.")
    from pipeline.networks import get_network  # the registry imports TensorFlow only to build

    try:
        get_network(config["network"]["name"])
    except PipelineError as exc:
        raise PipelineError(f"`network.name` in {path}: {exc}") from None


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate an experiment's TOML file.

    Args:
        path: the experiment file, e.g. ``experiments/demo.toml``.

    Returns:
        The validated ``Config``, defaults filled in.
    """
    path = Path(path)
    if not path.is_file():
        known = sorted(str(p) for p in Path("experiments").glob("*.toml"))
        raise PipelineError(f"experiment file {path} not found. Known experiments: "
                            f"{', '.join(known) or '(none in ./experiments)'}.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{path} is not valid TOML: {exc}.") from None
    return validate(raw, path)


# Sections (or single keys) each stage depends on. ``make`` reruns a stage when the stamp of its
# settings changes, not whenever the experiment file is touched, so a new C grid reruns only
# ``svm`` and ``report``.
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "data": ("data", "network.input_size", "network.name", "pretrain.retinopathy_root",
             "pretrain.retinopathy_max_images", "experiment.cells", "experiment.seed",
             "experiment.cache_dir"),
    "folds": ("folds", "experiment.seed"),
    "pretrain": ("network", "train", "pretrain", "experiment.seed", "experiment.cells"),
    "finetune": ("network", "train", "finetune", "experiment.seed", "experiment.cells"),
    "features": ("extract", "experiment.cells"),
    "svm": ("svm", "experiment.seed", "experiment.cells", "report.threshold"),
    "report": ("report", "experiment"),
}


def stage_settings(config: Config, stage: str) -> dict:
    """The settings ``stage`` depends on, as ``{"section" or "section.key": value}``."""
    out = {}
    for name in STAGE_SETTINGS[stage]:
        section, _, key = name.partition(".")
        out[name] = config.raw[section][key] if key else config.raw[section]
    return out


def write_stamps(config: Config, folder: Path) -> list[str]:
    """Write ``<folder>/<stage>.json`` for every stage whose settings changed; returns their names.

    Unchanged stamps keep their modification time, so ``make`` does not rerun those stages.
    """
    from pipeline.cache import write_json

    changed = []
    for stage in STAGE_SETTINGS:
        path = Path(folder) / f"{stage}.json"
        text = json.dumps(stage_settings(config, stage), indent=2, sort_keys=True, default=list)
        if not path.is_file() or path.read_text(encoding="utf-8") != text + "\n":
            write_json(path, json.loads(text))
            changed.append(stage)
    return changed


def add_arguments(parser: "argparse.ArgumentParser") -> None:
    parser.add_argument("--config", required=True, help="experiment file, e.g. experiments/demo.toml")
    parser.add_argument("--out", help="stamp folder (default: <output_dir>/.stamps)")


def run(args: "argparse.Namespace") -> int:
    """``python -m pipeline stamps``: validate the experiment and refresh its per-stage stamps."""
    config = load_config(args.config)
    changed = write_stamps(config, Path(args.out) if args.out else config.path_of(".stamps"))
    print(f"{config.path}: settings changed for {', '.join(changed)}" if changed
          else f"{config.path}: no stage settings changed")
    return 0
