"""Experiment configs: one TOML file per experiment in ``experiments/``, one section per stage.

Every key is declared once in ``pipeline.experiment.schema.SCHEMA`` (type, default, what is
allowed, what it means) and validated here, in ``load_config``; an error names the key, the file,
what is allowed and what was received. Unknown keys are refused, since a misspelt key would
otherwise silently do nothing. String values may use ``${VAR}`` to read an environment variable
(real-data paths are set that way); an unset variable is an error naming it. Relative paths are
relative to the folder ``make`` runs in (the project root).

Overrides: ``--set section.key=VALUE`` on any stage (``make ... SET='train.epochs=1'``) replaces one
value before validation; VALUE is read as TOML (``[0.1, 1.0]``, ``true``, ``3``) and as a plain
string when it is not valid TOML. The report's header lists the overrides.

Results of ``experiments/<name>.toml`` go to ``experiments/<name>/``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pipeline.compute.cluster import scheduler_problem
from pipeline.data.datasets import DATASET_METADATA
from pipeline.errors import PipelineError
from pipeline.experiment.schema import RECIPE_KEYS, SCHEMA
from pipeline.protocol import RETINOPATHY_SOURCES, SOURCES, Cell
from pipeline.training.recipe import TrainRecipe

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Config:
    """A validated experiment config. ``raw[section][key]`` holds every value, defaults filled.

    Attributes:
        path: the experiment's TOML file.
        raw: section -> key -> value.
        cells: the cells to run, in the config's order.
        overrides: the ``--set`` assignments applied, as given.
    """

    path: Path
    raw: dict
    cells: tuple[Cell, ...] = field(default=())
    overrides: tuple[str, ...] = field(default=())

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
        """Transfer sources the cells need, in canonical order."""
        return tuple(s for s in SOURCES if any(c.source == s for c in self.cells))

    def recipe(self, stage: str) -> TrainRecipe:
        """The training recipe of ``stage`` (``pretrain`` or ``finetune``): ``[train]`` with the
        stage's overrides."""
        values = {k: v for k, v in self.raw["train"].items() if k in RECIPE_KEYS}
        values.update({k: v for k, v in self.raw[stage].items()
                       if k in RECIPE_KEYS and v is not None})
        return TrainRecipe(**values)

    def devices(self, stage: str) -> str:
        """``"one"`` or ``"all"``: the devices one training of ``stage`` (``pretrain`` or
        ``finetune``) runs on, ``train.devices`` unless the stage overrides it."""
        return self.raw[stage].get("devices") or self.raw["train"]["devices"]

    def path_of(self, name: str) -> Path:
        """A result file of this experiment, e.g. ``path_of("manifest.csv")``."""
        return self.output_dir / name


def _expand(value: str, where: str) -> str:
    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise PipelineError(f"{where} uses ${{{name}}}, but the environment variable {name} is "
                                f"not set. Set it to the dataset's folder, e.g. `export {name}=/data/...`"
                                f" or `make ... {name}=/data/...`.")
        return os.environ[name]
    return _VAR.sub(sub, value)


def _nearest_keys(section: str, key: str) -> str:
    """The hint for an unknown ``section.key``: the nearest valid keys (difflib), the section's
    keys, and where every key is described."""
    names = [f"{s}.{k}" for s in SCHEMA for k in SCHEMA[s]]
    near = difflib.get_close_matches(f"{section}.{key}", names, n=3, cutoff=0.6)
    if not near:  # the right key under another section
        keys = difflib.get_close_matches(key, sorted({n.split(".", 1)[1] for n in names}), n=2,
                                         cutoff=0.8)
        near = [n for n in names if n.split(".", 1)[1] in keys][:3]
    parts = [f"Did you mean {' or '.join(f'`{n}`' for n in near)}?"] if near else []
    if section in SCHEMA:
        parts.append(f"Keys of [{section}]: {', '.join(SCHEMA[section])}.")
    else:
        parts.append(f"Sections: {', '.join(SCHEMA)}.")
    parts.append("Every key, its default and its meaning: pipeline/experiment/schema.py (SCHEMA).")
    return " ".join(parts)


def _apply_overrides(raw: dict, overrides: Sequence[str], path: Path) -> dict:
    """``raw`` with each ``section.key=VALUE`` of ``overrides`` set (VALUE parsed as TOML)."""
    out = {section: dict(keys) if isinstance(keys, dict) else keys for section, keys in raw.items()}
    for item in overrides:
        name, sep, text = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not key:
            raise PipelineError(f"--set {item!r} for {path}: write section.key=VALUE, e.g. "
                                "--set train.epochs=2 or --set 'svm.C_grid=[0.1, 1.0]'.")
        if section not in SCHEMA or key not in SCHEMA[section]:
            raise PipelineError(f"--set {item!r} for {path}: there is no key `{section}.{key}`. "
                                + _nearest_keys(section, key))
        try:
            value = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word such as vgg16 is meant as a string
        out.setdefault(section, {})
        if not isinstance(out[section], dict):
            raise PipelineError(f"{path}: `{section}` must be a table ([{section}]).")
        out[section][key] = value
    return out


def validate(raw: dict, path: Path | str, overrides: Sequence[str] = ()) -> Config:
    """Validate a parsed TOML mapping against ``SCHEMA``; returns the ``Config``."""
    path = Path(path)
    raw = _apply_overrides(raw, overrides, path)
    unknown_sections = sorted(set(raw) - set(SCHEMA))
    if unknown_sections:
        near = {s: difflib.get_close_matches(s, list(SCHEMA), n=1) for s in unknown_sections}
        hint = "; ".join(f"[{s}]: did you mean [{m[0]}]?" for s, m in near.items() if m)
        raise PipelineError(f"{path}: unknown section(s) {unknown_sections}. "
                            + (f"{hint}. " if hint else "")
                            + f"Allowed sections: {', '.join(SCHEMA)}.")
    out: dict[str, dict] = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            raise PipelineError(f"{path}: `{section}` must be a table ([{section}]).")
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise PipelineError(f"{path}: unknown key `{section}.{unknown[0]}`"
                                + (f" (and {', '.join(f'`{section}.{k}`' for k in unknown[1:])})"
                                   if len(unknown) > 1 else "") + ". "
                                + _nearest_keys(section, unknown[0]))
        out[section] = {}
        for name, key in keys.items():
            where = f"`{section}.{name}` in {path}"
            if name not in given:
                if key.required:
                    raise PipelineError(f"{where} is required ({key.description}).")
                out[section][name] = None if key.default is None else key.check(key.default)
                continue
            value = given[name]
            if isinstance(value, str):
                value = _expand(value, where)
            try:
                out[section][name] = key.check(value)
            except ValueError as exc:
                raise PipelineError(f"{where} must be {exc}. Got {value!r} instead.") from None
    cells = tuple(Cell.parse(c) for c in out["experiment"]["cells"])
    config = Config(path=path, raw=out, cells=cells, overrides=tuple(overrides))
    _cross_checks(config)
    return config


def _cross_checks(config: Config) -> None:
    from pipeline.models.registry import (
        get_network,  # the registry imports TensorFlow only to build
    )

    path = config.path
    if config["folds"]["scheme"] == "official" and config["data"]["dataset"] != "isic2016":
        raise PipelineError(f"`folds.scheme = \"official\"` in {path} needs a dataset with an official "
                            f"train/test split (isic2016); got `data.dataset = "
                            f"\"{config['data']['dataset']}\"`. Use scheme = \"5x2\".")
    if config["folds"]["scheme"] == "holdout":
        from pipeline.folds.holdout import check_fractions

        try:
            check_fractions(config["folds"]["holdout"])
        except PipelineError as exc:
            raise PipelineError(f"`folds.holdout` in {path}: {exc}") from None
    dataset = config["data"]["dataset"]
    lacking = [k for k in config["classifier"]["metadata"] if k not in DATASET_METADATA[dataset]]
    if lacking:
        has = ", ".join(repr(k) for k in DATASET_METADATA[dataset]) or "none"
        raise PipelineError(f"`classifier.metadata` in {path} asks for {lacking}, which dataset "
                            f"{dataset!r} does not record; its metadata keys: {has}. Remove "
                            f"{lacking} from the list.")
    frozen = [c.name for c in config.cells if not c.finetune]
    if config["classifier"]["kind"] == "network" and frozen:
        raise PipelineError(f"`classifier.kind = \"network\"` in {path} scores test images with "
                            f"a fine-tuned network's own output; cells {frozen} are not "
                            "fine-tuned and have no head for the target. Use '+ft' cells only, "
                            "or kind = \"svm\".")
    retinopathy = [c.name for c in config.cells if c.source in RETINOPATHY_SOURCES]
    if retinopathy and not config["pretrain"]["retinopathy_root"]:
        raise PipelineError(f"cells {retinopathy} in {path} need the Retinopathy source task, but "
                            "`pretrain.retinopathy_root` is empty. Set it to the folder holding "
                            "trainLabels.csv, or drop those cells from `experiment.cells`.")
    if config["data"]["keep_acral"] and config["data"]["dataset"] != "derm7pt":
        raise PipelineError(f"`data.keep_acral` in {path} only applies to derm7pt; it would do nothing "
                            f"for {config['data']['dataset']!r}. Remove it.")
    problem = scheduler_problem(config["compute"]["scheduler"])
    if problem:
        raise PipelineError(f"`compute.scheduler` in {path} must be {problem}. Got "
                            f"{config['compute']['scheduler']!r} instead.")
    for stage in ("pretrain", "finetune"):
        problem = config.recipe(stage).problem()
        if problem:
            raise PipelineError(f"the {stage} recipe in {path} ([train] with [{stage}]'s "
                                f"overrides): {problem}.")
    try:
        get_network(config["network"]["name"])
    except PipelineError as exc:
        raise PipelineError(f"`network.name` in {path}: {exc}") from None


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read and validate an experiment's TOML file.

    Args:
        path: the experiment file, e.g. ``experiments/demo.toml``.
        overrides: ``section.key=VALUE`` assignments applied before validation (``--set``).

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
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") \
            from None
    return validate(raw, path, overrides)


def add_config_arguments(parser: Any, *, required: bool = True,
                         help: str = "experiment file, e.g. experiments/demo.toml") -> None:
    """The options every stage takes: ``--config EXP`` and repeatable ``--set section.key=VALUE``."""
    parser.add_argument("--config", required=required, default=None, help=help)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override one config value (TOML syntax), e.g. --set train.epochs=2")


def config_from_args(args: Any) -> Config:
    """The ``Config`` named by a stage's ``--config`` and ``--set`` options."""
    return load_config(args.config, getattr(args, "overrides", ()) or ())
