"""Tests for pipeline.folds.holdout and the hold-out invariants of pipeline.folds.table: three
disjoint parts covering every kept image once, no patient across parts, every class in each part
in about its share, the fractions met, determinism, the leaky option and each check failing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data.designs import DESIGNS, apply_design
from pipeline.errors import PipelineError
from pipeline.experiment.config import validate
from pipeline.folds.holdout import check_fractions, make_holdout, run_seeds
from pipeline.folds.table import (check_folds, fold_runs, is_holdout, is_official, read_folds,
                                  write_folds)
from tests.folds.test_crossval import STRUCTURES, manifest_from, mixed_groups


def assert_valid_holdout(folds, manifest, design, fractions=(0.6, 0.2, 0.2), grouped=True,
                         runs=1):
    """The invariants, computed here independently of check_folds."""
    assert list(folds.columns) == ["image", "repeat", "half"]
    assert sorted(set(folds["repeat"])) == list(range(1, runs + 1))
    first = folds[folds["repeat"] == 1].set_index("image")["half"]
    for r in range(2, runs + 1):  # every run on the same split
        assert folds[folds["repeat"] == r].set_index("image")["half"].equals(first)
    folds = folds[folds["repeat"] == 1]
    assert set(folds["half"]) == {1, 2, 3}
    kept = apply_design(manifest, design)
    assert sorted(folds["image"]) == sorted(kept["image"]), "each kept image exactly once"
    table = folds.merge(kept, on="image", validate="one_to_one")
    if grouped:
        assert (table.groupby("group")["half"].nunique() == 1).all(), "a patient is split"
    classes = DESIGNS[design].classes
    present = table.groupby("half")["label"].nunique()
    assert (present == len(classes)).all(), "a part misses a class"
    largest = kept.groupby("group").size().max() if grouped else 1
    for half, share in zip((1, 3, 2), fractions):
        n = int((table["half"] == half).sum())
        # Whole groups move: the part sizes may miss their target by the largest group and a bit.
        assert abs(n - share * len(kept)) <= max(largest, 0.05 * len(kept)) + 1, (half, n)
    for column in ("diagnosis", "label"):
        counts = pd.crosstab(table[column], table["half"])
        n = kept.groupby(column).size()
        biggest = (kept.groupby([column, "group"]).size().groupby(level=0).max() if grouped
                   else n * 0 + 1)
        bound = np.maximum(np.maximum(2, np.ceil(0.05 * n)), biggest)
        for half in (1, 2, 3):
            share = (table["half"] == half).mean()
            diff = (counts[half] - n * share).abs()
            assert (diff <= bound.reindex(diff.index)).all(), (column, half, diff.to_dict())


@pytest.mark.parametrize("structure", STRUCTURES, ids=lambda s: s.__name__)
def test_invariants_over_seeds_and_designs(structure):
    for seed in range(3):
        manifest = manifest_from(structure(np.random.default_rng(seed)))
        for design in DESIGNS:
            folds = make_holdout(manifest, design, seed=seed)
            assert_valid_holdout(folds, manifest, design)
            check_folds(folds, manifest, design)
            assert is_holdout(folds) and not is_official(folds)
            assert fold_runs(folds) == [(1, 1, 2)]


def test_runs_repeat_one_split():
    manifest = manifest_from(mixed_groups(np.random.default_rng(5)))
    folds = make_holdout(manifest, "melanoma_vs_benign", seed=5, runs=3)
    assert_valid_holdout(folds, manifest, "melanoma_vs_benign", runs=3)
    check_folds(folds, manifest, "melanoma_vs_benign")
    assert fold_runs(folds) == [(1, 1, 2), (2, 1, 2), (3, 1, 2)]


def test_other_fractions_are_met():
    manifest = manifest_from([[d] for d in ("melanoma", "nevus", "seborrheic keratosis")
                              for _ in range(40)])
    folds = make_holdout(manifest, "melanoma_vs_benign", seed=1, fractions=[0.5, 0.1, 0.4])
    assert_valid_holdout(folds, manifest, "melanoma_vs_benign", fractions=(0.5, 0.1, 0.4))
    sizes = folds["half"].value_counts()
    assert (sizes[1], sizes[3], sizes[2]) == (60, 12, 48)


def test_same_seed_same_split_other_seed_differs(tmp_path):
    manifest = manifest_from(mixed_groups(np.random.default_rng(0)))
    for name, seed in (("a.csv", 7), ("b.csv", 7), ("c.csv", 8)):
        write_folds(make_holdout(manifest, "melanoma_vs_benign", seed=seed), tmp_path / name,
                    manifest, "melanoma_vs_benign")
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.csv", "b.csv", "c.csv"))
    assert a == b and a != c
    back = read_folds(tmp_path / "a.csv", manifest, "melanoma_vs_benign")
    assert is_holdout(back)


def test_leaky_split_ignores_patients_and_is_refused_by_the_grouped_check():
    # Ten patients with 12 images each: grouped, each patient sits in one part; leaky, split.
    groups = [["nevus"] * 6 + ["melanoma"] * 6 for _ in range(10)]
    manifest = manifest_from(groups)
    grouped = make_holdout(manifest, "melanoma_vs_benign", seed=0)
    table = grouped.merge(manifest, on="image")
    assert (table.groupby("group")["half"].nunique() == 1).all()
    leaky = make_holdout(manifest, "melanoma_vs_benign", seed=0, grouped=False)
    assert_valid_holdout(leaky, manifest, "melanoma_vs_benign", grouped=False)
    assert (leaky.merge(manifest, on="image").groupby("group")["half"].nunique() > 1).any()
    check_folds(leaky, manifest, "melanoma_vs_benign", grouped=False)
    with pytest.raises(PipelineError, match="no group split"):
        check_folds(leaky, manifest, "melanoma_vs_benign")


def broken(folds, manifest, what):
    folds = folds.copy()
    if what == "split patient":
        kept = manifest.set_index("image")
        groups = kept.loc[folds["image"], "group"].to_numpy()
        big = pd.Series(groups).value_counts().index[0]
        first = np.flatnonzero(groups == big)[0]
        folds.loc[first, "half"] = 3 if folds.loc[first, "half"] != 3 else 1
    elif what == "empty class":
        labels = apply_design(manifest, "melanoma_vs_benign").set_index("image")["label"]
        mel = labels.loc[folds["image"]].to_numpy() == "melanoma"
        folds.loc[mel & (folds["half"] == 3).to_numpy(), "half"] = 1
    elif what == "unbalanced":
        labels = apply_design(manifest, "melanoma_vs_benign").set_index("image")["label"]
        mel = labels.loc[folds["image"]].to_numpy() == "melanoma"
        test = np.flatnonzero(mel & (folds["half"] == 2).to_numpy())
        folds.loc[test[: len(test) - 1], "half"] = 1
        benign_train = np.flatnonzero(~mel & (folds["half"] == 1).to_numpy())
        folds.loc[benign_train[: len(test) - 1], "half"] = 2
    elif what == "half 3 in an official split":
        folds["repeat"] = 0
    elif what == "runs differ":
        second = folds.assign(repeat=2)
        second.loc[second.index[second["half"] == 1][0], "half"] = 2
        folds = pd.concat([folds, second], ignore_index=True)
    return folds


@pytest.mark.parametrize("what, message", [
    ("split patient", "no group split"), ("empty class", "every class"),
    ("unbalanced", "balance"), ("half 3 in an official split", "not in an official split"),
    ("runs differ", "runs share one split.*repeats 2")])
def test_each_broken_invariant_is_refused(what, message):
    rng = np.random.default_rng(3)
    groups = [[d] * int(rng.integers(1, 4)) for d in ["nevus"] * 50 + ["melanoma"] * 30]
    manifest = manifest_from(groups)
    folds = make_holdout(manifest, "melanoma_vs_benign", seed=2)
    check_folds(folds, manifest, "melanoma_vs_benign")
    check_folds(pd.concat([folds, folds.assign(repeat=2)]), manifest, "melanoma_vs_benign")
    with pytest.raises(PipelineError, match=message):
        check_folds(broken(folds, manifest, what), manifest, "melanoma_vs_benign")


def test_too_few_patients_of_a_class_is_an_error_naming_it():
    manifest = manifest_from([["melanoma"] * 3, ["melanoma"] * 2] + [["nevus"]] * 20)
    with pytest.raises(PipelineError, match="'melanoma'.*2 group"):
        make_holdout(manifest, "melanoma_vs_benign")


@pytest.mark.parametrize("fractions", [[0.6, 0.2], [0.6, 0.3, 0.2], [0.8, 0.2, 0.0]])
def test_bad_fractions(fractions):
    with pytest.raises(PipelineError, match="summing to 1"):
        check_fractions(fractions)


def test_config_keys(tmp_path):
    raw = {"experiment": {"name": "x", "cells": ["none+ft", "imagenet+ft"]}, "data": {"dataset": "isic2020", "root": str(tmp_path)},
           "network": {"name": "standard-cnn"}}
    config = validate(raw, tmp_path / "x.toml")
    assert config["folds"]["scheme"] == "5x2"  # Menegola's stays the default
    assert config["folds"]["holdout"] == (0.6, 0.2, 0.2) and config["folds"]["runs"] == 10
    raw["folds"] = {"scheme": "holdout", "holdout": [0.7, 0.2, 0.2]}
    with pytest.raises(PipelineError, match=r"folds.holdout. in .*x.toml.*summing to 1"):
        validate(raw, tmp_path / "x.toml")


def test_run_seeds_are_distinct_and_start_at_the_seed():
    assert run_seeds(5, 3) == [5, 6, 7]
    assert len(set(run_seeds(0, 10))) == 10
    with pytest.raises(PipelineError):
        run_seeds(0, 0)


def test_folds_stage_writes_and_the_experiment_reads_a_holdout(tmp_path):
    from pipeline.data.manifest import write_manifest
    from pipeline.experiment import artifacts
    from pipeline.stages.folds import prepare_folds

    raw = {"experiment": {"name": "x", "cells": ["none+ft"]},
           "data": {"dataset": "isic2020", "root": str(tmp_path)},
           "folds": {"designs": ["melanoma_vs_benign"], "scheme": "holdout", "runs": 2},
           "network": {"name": "standard-cnn"}}
    config = validate(raw, tmp_path / "x.toml")
    manifest = manifest_from(mixed_groups(np.random.default_rng(1)))
    write_manifest(manifest, config.path_of("manifest.csv"))
    prepare_folds(config)
    folds = artifacts.folds(config, "melanoma_vs_benign")
    assert_valid_holdout(folds, manifest, "melanoma_vs_benign", runs=2)
    raw["folds"]["runs"] = 3  # a run missing from the file would be left out silently
    with pytest.raises(PipelineError, match="folds.runs"):
        artifacts.folds(validate(raw, tmp_path / "x.toml"), "melanoma_vs_benign")
    raw["folds"]["runs"] = 2
    # The same folds file under the 5x2 scheme is refused, naming the key.
    raw["folds"]["scheme"] = "5x2"
    with pytest.raises(PipelineError, match="is a hold-out split.*folds.scheme"):
        artifacts.folds(validate(raw, tmp_path / "x.toml"), "melanoma_vs_benign")
