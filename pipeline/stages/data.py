"""Stage ``data``: the experiment's datasets as manifest tables, every image decoded once.

``python -m pipeline data --config EXP`` turns the experiment's dataset into ``manifest.csv``,
decoding every image once into the image cache at the network's input size
(``pipeline.experiment.artifacts.image_cache_settings``); with ``data.skip_bad_images`` the
unreadable ones are left out and listed in ``skipped.csv`` (never dropped silently; a
``skipped.csv`` from an earlier run is removed when nothing is skipped). When a cell needs the
Retinopathy source task it also writes ``retinopathy_manifest.csv`` (a stratified, seeded subset
when ``pretrain.retinopathy_max_images`` is set).

Without ``--config`` the command converts one dataset: ``python -m pipeline data --dataset NAME
--root DIR --out manifest.csv [--keep-acral] [--no-check-images]``.
"""

from __future__ import annotations

import argparse

import pandas as pd

from pipeline.cache.files import write_csv
from pipeline.console import log
from pipeline.data.datasets import DATASETS, build_manifest, retinopathy_subset, summary
from pipeline.data.manifest import write_manifest
from pipeline.data.vocabulary import MELANOMA
from pipeline.errors import PipelineError
from pipeline.experiment import artifacts
from pipeline.experiment.config import Config, add_config_arguments, config_from_args
from pipeline.protocol import RETINOPATHY_SOURCES


def _decoded(config: Config, frame: pd.DataFrame, dataset: str, prefix: str) -> pd.DataFrame:
    """Decode ``frame``'s images into the cache; returns the rows that decoded.

    Unreadable images (with ``data.skip_bad_images``) are listed in ``<prefix>skipped.csv`` and
    left out; the kept images then get their own cache entry, the one every later stage asks for.
    """
    frame = frame.assign(abspath=frame["path"])
    skip = config["data"]["skip_bad_images"]
    cached = artifacts.image_cache(config, frame, dataset, skip_bad_images=skip)
    listing = config.path_of(f"{prefix}skipped.csv")
    if len(cached.skipped):
        write_csv(listing, cached.skipped)
        log(f"data: {len(cached.skipped)} unreadable images skipped, listed in {listing}")
        frame = frame[~frame["image"].isin(cached.skipped["image"])].reset_index(drop=True)
        artifacts.image_cache(config, frame, dataset)
    elif listing.is_file():
        listing.unlink()  # from an earlier run whose bad images have since been fixed
        log(f"data: no image skipped; removed the earlier {listing}")
    return frame.drop(columns="abspath")


def with_extra_melanomas(config: Config, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus the melanoma cases of ``data.extra_dataset`` (Kim & Rocheteau's extra
    malignant cases, added before the split, as they did); ``frame`` itself when it is empty.

    Raises:
        PipelineError: an extra dataset without ``data.extra_root`` (or a root without a dataset),
            or image ids or groups it shares with the target dataset, naming the keys.
    """
    data = config["data"]
    if not data["extra_dataset"]:
        if data["extra_root"]:
            raise PipelineError(f"{config.path}: data.extra_root = {data['extra_root']!r} is set "
                                "but data.extra_dataset is not; name its format (e.g. "
                                "data.extra_dataset = \"isic_archive\") or remove extra_root.")
        return frame
    if not data["extra_root"]:
        raise PipelineError(f"{config.path}: data.extra_dataset = {data['extra_dataset']!r} needs "
                            "data.extra_root, the folder of that dataset as published.")
    extra = build_manifest(data["extra_dataset"], data["extra_root"], keep_acral=False)
    extra = extra[extra["category"] == MELANOMA]
    for column in ("image", "group"):
        shared = sorted(set(extra[column]) & set(frame[column]) - {""})
        if shared:
            raise PipelineError(
                f"{config.path}: data.extra_dataset ({data['extra_root']}) shares {len(shared)} "
                f"{column} ids with data.root ({data['root']}), e.g. {shared[:3]}: the same "
                "images or patients twice would leak across the split; use another extra "
                "dataset or remove the duplicates from it.")
    log(f"data: {len(extra)} melanoma cases added from {data['extra_dataset']} "
        f"({data['extra_root']})")
    attrs = dict(frame.attrs)
    out = pd.concat([frame, extra], ignore_index=True)
    out.attrs.update(attrs)
    return out


def without_duplicates(config: Config, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` after ``data.duplicates`` (``pipeline.data.duplicates``): ids of the same file
    refused, grouped or dropped; what was grouped or dropped is listed in ``duplicates.csv``
    (removed when a later run finds none)."""
    from pipeline.data.duplicates import resolve_duplicates
    from pipeline.data.image_cache import file_digests

    policy = config["data"]["duplicates"]
    digests = file_digests(frame.assign(abspath=frame["path"]))
    attrs = dict(frame.attrs)
    try:
        out, found = resolve_duplicates(frame, digests, policy)
    except PipelineError as exc:
        raise PipelineError(f"{config.path}: {exc}") from None
    out.attrs.update(attrs)
    listing = config.path_of("duplicates.csv")
    if len(found):
        write_csv(listing, found.drop(columns="index"))
        verb = "dropped" if policy == "drop" else "joined into one group each"
        changed = (found["action"] == "dropped").sum() if policy == "drop" else len(found)
        log(f"data: {changed} ids whose image files repeat another's {verb} "
            f"(data.duplicates = \"{policy}\"), listed in {listing}")
    elif listing.is_file():
        listing.unlink()  # from an earlier run whose duplicates have since been removed
    return out


def prepare_data(config: Config) -> None:
    """The ``data`` stage: ``manifest.csv`` (and ``retinopathy_manifest.csv``) of the experiment."""
    data = config["data"]
    frame = build_manifest(data["dataset"], data["root"], keep_acral=data["keep_acral"])
    frame = with_extra_melanomas(config, frame)
    frame = without_duplicates(config, frame)
    attrs = dict(frame.attrs)
    frame = _decoded(config, frame, "target", "")
    frame.attrs.update(attrs)
    write_manifest(frame, config.path_of("manifest.csv"))
    log(summary(frame, config.path_of("manifest.csv")))
    if set(config.sources) & RETINOPATHY_SOURCES:
        pre = config["pretrain"]
        retina = build_manifest("retinopathy", pre["retinopathy_root"])
        retina = retinopathy_subset(retina, pre["retinopathy_max_images"], config.seed)
        attrs = dict(retina.attrs)
        retina = _decoded(config, retina, "retinopathy", "retinopathy_")
        retina.attrs.update(attrs)
        write_manifest(retina, config.path_of("retinopathy_manifest.csv"))
        log(summary(retina, config.path_of("retinopathy_manifest.csv")))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=False,
                         help="experiment file: run its `data` stage (manifest.csv, image cache, "
                              "retinopathy_manifest.csv); replaces the options below")
    parser.add_argument("--dataset", metavar="NAME", help=f"published format: {', '.join(DATASETS)}")
    parser.add_argument("--root", help="the dataset's folder as published")
    parser.add_argument("--out", help="manifest CSV to write")
    parser.add_argument("--keep-acral", action="store_true",
                        help="derm7pt: keep acral lesions (the paper excludes them)")
    parser.add_argument("--no-check-images", dest="check_images", action="store_false",
                        help="write the manifest even if image files are missing")


def run(args: argparse.Namespace) -> int:
    if args.config:
        given = [f"--{k.replace('_', '-')}" for k in ("dataset", "root", "out") if getattr(args, k)]
        if given or args.keep_acral or not args.check_images:
            raise PipelineError(f"--config takes the dataset from the experiment file; "
                                f"{', '.join(given) or 'the other options'} would do nothing. Set "
                                "them in its [data] section instead.")
        prepare_data(config_from_args(args))
        return 0
    if args.overrides:
        raise PipelineError("--set changes an experiment config; it needs --config EXP.")
    missing = [f"--{k}" for k in ("dataset", "root", "out") if not getattr(args, k)]
    if missing:
        raise PipelineError(f"`data` needs --dataset, --root and --out (or --config EXP); missing "
                            f"{', '.join(missing)}.")
    frame = build_manifest(args.dataset, args.root, keep_acral=args.keep_acral,
                           check_images=args.check_images)
    write_manifest(frame, args.out)
    print(summary(frame, args.out))
    return 0
