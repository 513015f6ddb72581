"""Stages ``data`` and ``folds`` of an experiment (``--config`` mode of those commands).

``python -m pipeline data --config EXP`` turns the experiment's dataset into ``manifest.csv``,
decoding every image once into the image cache at the network's input size; with
``data.skip_bad_images`` the unreadable ones are left out and listed in ``skipped.csv`` (never
dropped silently). When a cell needs the Retinopathy source task it also writes
``retinopathy_manifest.csv`` (a stratified, seeded subset when ``pretrain.retinopathy_max_images``
is set). ``python -m pipeline folds --config EXP`` writes ``folds/<design>.csv`` for every design.
"""

from __future__ import annotations

import sys

import pandas as pd

from pipeline.cache import write_csv
from pipeline.config import Config


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _decoded(config: Config, frame: pd.DataFrame, crop: bool, skip: bool, what: str
             ) -> pd.DataFrame:
    """Decode ``frame``'s images into the cache; returns the rows that decoded."""
    from pipeline import netstore
    from pipeline.image_cache import build_image_cache

    size = netstore.architecture(config)["input_size"]
    frame = frame.assign(abspath=frame["path"])
    cached = build_image_cache(frame, config.cache_dir / "images", (size, size),
                               crop_black_frame=crop, skip_bad_images=skip)
    if len(cached.skipped):
        write_csv(config.path_of(f"{what}skipped.csv"), cached.skipped)
        log(f"data: {len(cached.skipped)} unreadable images skipped, listed in "
            f"{config.path_of(f'{what}skipped.csv')}")
        frame = frame[~frame["image"].isin(cached.skipped["image"])].reset_index(drop=True)
        # The kept images get their own cache entry, the one every later stage asks for.
        build_image_cache(frame, config.cache_dir / "images", (size, size),
                          crop_black_frame=crop)
    return frame.drop(columns="abspath")


def retinopathy_subset(frame: pd.DataFrame, max_images: int, seed: int) -> pd.DataFrame:
    """A stratified (by grade), seeded subset of ``max_images`` rows; all rows when 0 or more."""
    from sklearn.model_selection import train_test_split

    if not max_images or max_images >= len(frame):
        return frame
    keep, _ = train_test_split(frame.index.to_numpy(), train_size=max_images,
                               stratify=frame["category"], random_state=seed)
    return frame.loc[sorted(keep)].reset_index(drop=True)


def prepare_data(config: Config) -> None:
    """The ``data`` stage: ``manifest.csv`` (and ``retinopathy_manifest.csv``) of the experiment."""
    from pipeline.datasets import build_manifest, summary
    from pipeline.manifest import write_manifest

    data = config["data"]
    frame = build_manifest(data["dataset"], data["root"], keep_acral=data["keep_acral"])
    attrs = dict(frame.attrs)
    frame = _decoded(config, frame, data["crop_black_frame"], data["skip_bad_images"], "")
    frame.attrs.update(attrs)
    write_manifest(frame, config.path_of("manifest.csv"))
    log(summary(frame, config.path_of("manifest.csv")))
    if {"retinopathy", "double"} & set(config.sources):
        pre = config["pretrain"]
        retina = build_manifest("retinopathy", pre["retinopathy_root"])
        retina = retinopathy_subset(retina, pre["retinopathy_max_images"], config.seed)
        attrs = dict(retina.attrs)
        retina = _decoded(config, retina, False, data["skip_bad_images"], "retinopathy_")
        retina.attrs.update(attrs)
        write_manifest(retina, config.path_of("retinopathy_manifest.csv"))
        log(summary(retina, config.path_of("retinopathy_manifest.csv")))


def prepare_folds(config: Config) -> None:
    """The ``folds`` stage: ``folds/<design>.csv`` for every design of the experiment."""
    from pipeline import artifacts
    from pipeline.folds import counts_per_half, make_folds, official_split, write_folds

    table = artifacts.manifest(config)
    for design in config.designs:
        if config["folds"]["scheme"] == "official":
            folds = official_split(table, design)
        else:
            folds = make_folds(table, design, seed=config.seed, repeats=config["folds"]["repeats"])
        path = config.path_of(f"folds/{design}.csv")
        write_folds(folds, path, table, design)
        log(f"folds {design}: {path}")
        log(counts_per_half(folds, table, design).to_string())
