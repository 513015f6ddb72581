"""Stage ``folds``: ``folds/<design>.csv`` for every design of the experiment.

``python -m pipeline folds --config EXP`` writes semi-random 5×2 folds
(``pipeline.folds.crossval``) or, with ``folds.scheme = "official"``, the dataset's official
train/test split (``pipeline.folds.official``), or with ``folds.scheme = "holdout"`` one
train/validation/test split (``pipeline.folds.holdout``, shares ``folds.holdout``); every file is checked against the manifest on
write (``pipeline.folds.table``) and printed as class counts per half.

Without ``--config`` it makes the folds of one manifest and design: ``python -m pipeline folds
--manifest manifest.csv --design NAME --out folds.csv [--seed N] [--repeats 5] [--official]``.
"""

from __future__ import annotations

import argparse

from pipeline.console import log
from pipeline.data.manifest import read_manifest
from pipeline.errors import PipelineError
from pipeline.experiment import artifacts
from pipeline.experiment.config import Config, add_config_arguments, config_from_args
from pipeline.folds.crossval import make_folds
from pipeline.folds.holdout import make_holdout
from pipeline.folds.official import official_split
from pipeline.folds.table import counts_per_half, fold_runs, is_official, write_folds


def prepare_folds(config: Config) -> None:
    """The ``folds`` stage: ``folds/<design>.csv`` for every design of the experiment."""
    table = artifacts.manifest(config)
    grouped = config["folds"]["holdout_grouping"] == "grouped"
    for design in config.designs:
        if config["folds"]["scheme"] == "official":
            folds = official_split(table, design)
        elif config["folds"]["scheme"] == "holdout":
            folds = make_holdout(table, design, seed=config.seed,
                                 fractions=config["folds"]["holdout"],
                                 runs=config["folds"]["runs"], grouped=grouped)
        else:
            folds = make_folds(table, design, seed=config.seed, repeats=config["folds"]["repeats"])
        path = config.path_of(f"folds/{design}.csv")
        write_folds(folds, path, table, design, grouped=grouped)
        log(f"folds {design}: {path}")
        log(counts_per_half(folds, table, design).to_string())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=False,
                         help="experiment file: write folds/<design>.csv for each of its designs "
                              "(replaces the options below)")
    parser.add_argument("--manifest", help="manifest.csv written by `pipeline data`")
    parser.add_argument("--design", help="labelling design (see `pipeline designs`)")
    parser.add_argument("--out", help="folds.csv to write")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--repeats", type=int, default=None, help="number of repeats (default 5)")
    parser.add_argument("--official", action="store_true",
                        help="write the official train/test split (ISIC 2016) as repeat 0")


def run(args: argparse.Namespace) -> int:
    if args.config:
        given = [f"--{k}" for k in ("manifest", "design", "out", "seed", "repeats")
                 if getattr(args, k) is not None] + (["--official"] if args.official else [])
        if given:
            raise PipelineError(f"--config takes the folds settings from the experiment file; "
                                f"{', '.join(given)} would do nothing. Set them in its [folds] "
                                "section instead.")
        prepare_folds(config_from_args(args))
        return 0
    if args.overrides:
        raise PipelineError("--set changes an experiment config; it needs --config EXP.")
    missing = [f"--{k}" for k in ("manifest", "design", "out") if not getattr(args, k)]
    if missing:
        raise PipelineError(f"`folds` needs --manifest, --design and --out (or --config EXP); "
                            f"missing {', '.join(missing)}.")
    manifest = read_manifest(args.manifest)
    if args.official:
        if args.seed is not None or args.repeats is not None:
            raise PipelineError("--official writes the published train/test split; --seed and "
                                "--repeats would do nothing. Drop them, or drop --official.")
        folds = official_split(manifest, args.design)
    else:
        folds = make_folds(manifest, args.design, seed=0 if args.seed is None else args.seed,
                           repeats=5 if args.repeats is None else args.repeats)
    write_folds(folds, args.out, manifest, args.design)
    print(counts_per_half(folds, manifest, args.design).to_string())
    how = ("official split: train on half 1, test on half 2" if is_official(folds) else
           f"{folds['repeat'].nunique()} repeats, each half trains once")
    print(f"wrote {args.out}: {len(fold_runs(folds))} runs ({how})")
    return 0
