"""Tests for pipeline.folds.crossval and pipeline.folds.table: invariants over many seeds and group structures, determinism, each
check_folds failure, the official split and the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.data.designs import DESIGNS, apply_design
from pipeline.errors import PipelineError
from pipeline.folds.table import check_folds, fold_runs, is_official, read_folds, write_folds
from pipeline.folds.crossval import make_folds
from pipeline.folds.official import official_split

MANIFEST_COLUMNS = ["image", "path", "diagnosis", "category", "group", "difficulty", "age", "sex",
                    "site"]
CATEGORY = {"melanoma": "melanoma", "basal cell carcinoma": "bcc", "nevus": "benign",
            "seborrheic keratosis": "benign", "vascular lesion": "benign",
            "dermatofibroma": "benign", "lentigo": "benign"}
DIAGNOSES = list(CATEGORY)


def manifest_from(groups: list[list[str]]) -> pd.DataFrame:
    """A manifest with one group per inner list, holding one image per diagnosis listed."""
    rows = []
    for g, diagnoses in enumerate(groups):
        for diagnosis in diagnoses:
            image = f"img{len(rows):04d}"
            rows.append({"image": image, "path": f"images/{image}.jpg", "diagnosis": diagnosis,
                         "category": CATEGORY[diagnosis], "group": f"lesion{g:03d}",
                         "difficulty": "", "age": "", "sex": "", "site": ""})
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def singletons(rng):
    counts = {"melanoma": 30, "basal cell carcinoma": 12, "nevus": 60, "seborrheic keratosis": 15,
              "vascular lesion": 5}
    return [[d] for d, n in counts.items() for _ in range(n + int(rng.integers(0, 4)))]


def pairs(rng):
    return [[d, d] for d in ("melanoma",) * 10 + ("basal cell carcinoma",) * 6 + ("nevus",) * 25
            + ("dermatofibroma",) * int(rng.integers(3, 6))]


def big_groups(rng):
    groups = [[d] * int(rng.integers(6, 12)) for d in ("nevus", "nevus", "melanoma")]
    return groups + singletons(rng)


def mixed_groups(rng):
    """Patients with several diagnoses, as in ISIC 2020."""
    groups = []
    for _ in range(40):
        size = int(rng.integers(1, 6))
        groups.append(list(rng.choice(DIAGNOSES, size=size, p=[.2, .1, .45, .1, .05, .05, .05])))
    return groups + [["melanoma"], ["melanoma"], ["basal cell carcinoma"], ["basal cell carcinoma"],
                     ["nevus"], ["nevus"]]


def rare_diagnoses(rng):
    return (singletons(rng) + [["lentigo"]] + [["dermatofibroma"]] * 2
            + [["vascular lesion", "vascular lesion"]] + [["vascular lesion"]])


STRUCTURES = [singletons, pairs, big_groups, mixed_groups, rare_diagnoses]


def assert_valid_folds(folds: pd.DataFrame, manifest: pd.DataFrame, design: str, repeats: int):
    """The invariants, computed here independently of check_folds."""
    assert list(folds.columns) == ["image", "repeat", "half"]
    assert sorted(folds["repeat"].unique()) == list(range(1, repeats + 1))
    assert set(folds["half"]) == {1, 2}
    kept = apply_design(manifest, design)
    table = folds.merge(kept, on="image", how="left", validate="many_to_one")
    assert table["label"].notna().all(), "unknown or removed images"
    per_repeat = table.groupby("repeat")["image"].agg(["size", "nunique"])
    assert (per_repeat == len(kept)).all().all(), "each kept image exactly once per repeat"
    assert (table.groupby(["repeat", "group"])["half"].nunique() == 1).all(), "a group is split"
    present = table.groupby(["repeat", "half"])["label"].nunique()
    assert len(present) == 2 * repeats and (present == len(DESIGNS[design].classes)).all()
    partitions = {frozenset([frozenset(rows.loc[rows["half"] == 1, "image"]),
                             frozenset(rows.loc[rows["half"] == 2, "image"])])
                  for _, rows in table.groupby("repeat")}
    assert len(partitions) == repeats, "repeats are not distinct partitions"
    for column in ("diagnosis", "label"):
        counts = pd.crosstab([table["repeat"], table[column]], table["half"])
        n = kept.groupby(column).size()
        largest = kept.groupby([column, "group"]).size().groupby(level=0).max()
        bound = np.maximum(np.maximum(2, np.ceil(0.05 * n)), largest)
        diff = (counts[1] - counts[2]).abs()
        bad = diff.to_numpy() > bound.reindex(diff.index.get_level_values(1)).to_numpy()
        assert not bad.any(), f"unbalanced: {diff[bad].to_dict()}"


@pytest.mark.parametrize("structure", STRUCTURES, ids=lambda s: s.__name__)
def test_invariants_over_seeds_and_designs(structure):
    for seed in range(5):
        manifest = manifest_from(structure(np.random.default_rng(seed)))
        for design in DESIGNS:
            folds = make_folds(manifest, design, seed=seed)
            assert_valid_folds(folds, manifest, design, repeats=5)
            check_folds(folds, manifest, design)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(DIAGNOSES), min_size=1, max_size=6), min_size=2,
                max_size=60))
def test_invariants_property(extra_groups):
    # Four guaranteed singletons per category keep every design feasible; the rest is arbitrary.
    base = [[d] for d in ("melanoma", "basal cell carcinoma", "nevus") for _ in range(4)]
    manifest = manifest_from(base + extra_groups)
    for design in DESIGNS:
        folds = make_folds(manifest, design, seed=len(extra_groups))
        assert_valid_folds(folds, manifest, design, repeats=5)


def test_halves_balance_fine_diagnosis_not_only_label():
    # Singletons only: the bound allows 2, the greedy achieves at most 1 per diagnosis.
    manifest = manifest_from([[d] for d in DIAGNOSES for _ in range(9)])
    folds = make_folds(manifest, "malignant_vs_benign", seed=4)
    table = manifest.merge(folds, on="image")
    diff = pd.crosstab([table["repeat"], table["diagnosis"]], table["half"])
    assert (diff[1] - diff[2]).abs().max() <= 1


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    manifest = manifest_from(mixed_groups(np.random.default_rng(0)))
    for name, seed in (("a.csv", 7), ("b.csv", 7), ("c.csv", 8)):
        write_folds(make_folds(manifest, "melanoma_vs_benign", seed=seed), tmp_path / name,
                    manifest, "melanoma_vs_benign")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_same_seed_same_bytes_across_processes(tmp_path):
    # String hashing differs between processes: the folds must not depend on set or dict order.
    manifest_path = tmp_path / "manifest.csv"
    manifest_from(big_groups(np.random.default_rng(1))).to_csv(manifest_path, index=False)
    code = ("import sys, pandas as pd; from pipeline.folds.crossval import make_folds; "
            "m = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False); "
            "make_folds(m, 'malignant_vs_benign', seed=3).to_csv(sys.argv[2], index=False)")
    for name, hash_seed in (("p1.csv", "1"), ("p2.csv", "2")):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", code, str(manifest_path), str(tmp_path / name)],
                       check=True, env=env)
    assert (tmp_path / "p1.csv").read_bytes() == (tmp_path / "p2.csv").read_bytes()


def test_too_few_groups_is_a_clear_error():
    manifest = manifest_from([["melanoma"], ["nevus"], ["melanoma", "nevus"]])
    with pytest.raises(PipelineError, match=r"3 groups.*admit 3 distinct 2-way partitions"):
        make_folds(manifest, "malignant_vs_benign")


def test_class_in_one_group_is_a_clear_error():
    manifest = manifest_from([["melanoma"] * 4] + [["nevus"]] * 20)
    with pytest.raises(PipelineError, match=r"class 'malignant'.*1 group"):
        make_folds(manifest, "malignant_vs_benign")


# --- check_folds: each failure from corrupting a good table -----------------------------------

DESIGN = "melanoma_vs_benign"


@pytest.fixture
def good():
    groups = ([["melanoma"]] * 20 + [["nevus"]] * 40 + [["nevus", "nevus"]] * 5
              + [["seborrheic keratosis"]] * 10 + [["basal cell carcinoma"]] * 6)
    manifest = manifest_from(groups)
    folds = make_folds(manifest, DESIGN, seed=1)
    check_folds(folds, manifest, DESIGN)
    return manifest, folds


def _images_of(manifest, folds, repeat, half, diagnosis):
    table = folds[(folds["repeat"] == repeat) & (folds["half"] == half)].merge(manifest, on="image")
    singles = table.groupby("group")["image"].transform("size") == 1
    return table.loc[singles & (table["diagnosis"] == diagnosis), "image"].tolist()


def _half_of(folds, repeat, image):
    return int(folds.loc[(folds["repeat"] == repeat) & (folds["image"] == image), "half"].iloc[0])


def _set_half(folds, repeat, images, half):
    out = folds.copy()
    out.loc[(out["repeat"] == repeat) & out["image"].isin(images), "half"] = half
    return out


def corruptions(manifest, folds):
    """(name, corrupted table, regex the message must match) for each invariant."""
    bcc = manifest.loc[manifest["category"] == "bcc", "image"].iloc[0]
    pair = manifest["group"].value_counts().index[0]
    pair_image = manifest.loc[manifest["group"] == pair, "image"].iloc[0]
    melanoma = manifest.loc[manifest["diagnosis"] == "melanoma", "image"]
    swapped = folds.copy()
    swapped.loc[swapped["repeat"] == 2, "half"] = 3 - folds.loc[folds["repeat"] == 1, "half"].values
    first = folds.iloc[0]["image"]
    moved = _images_of(manifest, folds, 3, 2, "nevus")[:4]
    return [
        ("columns", folds.drop(columns="half"), r"invariant 'columns'.*missing \['half'\]"),
        ("repeat text", folds.assign(repeat=folds["repeat"].astype(str).replace("2", "two")),
         r"invariant 'values'.*'repeat'.*two"),
        ("half 3", folds.assign(half=folds["half"].replace(2, 3)),
         r"invariant 'values'.*'half'.*3"),
        ("gap", folds.assign(repeat=folds["repeat"].replace(5, 6)), r"without gaps.*6"),
        ("official mixed", folds.assign(repeat=folds["repeat"].replace(5, 0)),
         r"repeat 0.*official"),
        ("unknown", pd.concat([folds, pd.DataFrame([{"image": "ghost", "repeat": 1, "half": 1}])]),
         r"once per repeat.*not in the manifest: ghost"),
        ("removed", pd.concat([folds, pd.DataFrame([{"image": bcc, "repeat": 1, "half": 1}])]),
         rf"once per repeat.*removes: {bcc}"),
        ("duplicate", pd.concat([folds, folds.iloc[[0]]]), rf"more than once: {first}"),
        ("missing", folds.iloc[1:], rf"repeat 1 misses images {first}"),
        ("no rows", folds.iloc[:0], r"once per repeat' failed: the table has no rows"),
        ("empty half", folds.assign(half=np.where(folds["repeat"] == 2, 1, folds["half"])),
         r"'halves non-empty'.*repeat 2: half 2 is empty"),
        ("class", _set_half(folds, 4, melanoma, 1),
         r"'every class in both halves'.*repeat 4: half 2 has no 'melanoma'"),
        ("group", _set_half(folds, 1, [pair_image], 3 - _half_of(folds, 1, pair_image)),
         rf"'no group split across halves'.*repeat 1 splits groups {pair}"),
        ("distinct", swapped, r"'distinct partitions'.*repeats 1 and 2"),
        ("balance", _set_half(folds, 3, moved, 1), r"'balance'.*repeat 3: diagnosis 'nevus'"),
    ]


def test_check_folds_reports_each_invariant(good):
    manifest, folds = good
    for name, corrupted, pattern in corruptions(manifest, folds):
        with pytest.raises(PipelineError, match=pattern) as caught:
            check_folds(corrupted, manifest, DESIGN, source="x/folds.csv")
        assert str(caught.value).startswith("x/folds.csv: "), name
        assert "python -m pipeline folds" in str(caught.value), name


def test_tolerance_widens_the_balance_bound(good):
    manifest, folds = good
    moved = _images_of(manifest, folds, 3, 2, "nevus")[:4]
    corrupted = _set_half(folds, 3, moved, 1)
    with pytest.raises(PipelineError, match="balance"):
        check_folds(corrupted, manifest, DESIGN)
    check_folds(corrupted, manifest, DESIGN, tolerance=0.5)


def test_careless_random_split_fails_balance():
    manifest = manifest_from(singletons(np.random.default_rng(0)))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        folds = pd.DataFrame({"image": np.tile(manifest["image"], 5),
                              "repeat": np.repeat(np.arange(1, 6), len(manifest)),
                              "half": rng.integers(1, 3, 5 * len(manifest))})
        with pytest.raises(PipelineError, match="'balance'"):
            check_folds(folds, manifest, "malignant_vs_benign")


def test_write_and_read_roundtrip(good, tmp_path):
    manifest, folds = good
    write_folds(folds, tmp_path / "folds.csv", manifest, DESIGN)
    back = read_folds(tmp_path / "folds.csv", manifest, DESIGN)
    pd.testing.assert_frame_equal(back, folds.reset_index(drop=True), check_dtype=False)
    assert fold_runs(back) == [(r, a, b) for r in range(1, 6) for a, b in ((1, 2), (2, 1))]
    with pytest.raises(PipelineError, match="does not exist"):
        read_folds(tmp_path / "nope.csv", manifest, DESIGN)


def test_write_refuses_bad_folds_and_writes_nothing(good, tmp_path):
    manifest, folds = good
    with pytest.raises(PipelineError, match="misses images"):
        write_folds(folds.iloc[1:], tmp_path / "folds.csv", manifest, DESIGN)
    assert not (tmp_path / "folds.csv").exists()


# --- official split ---------------------------------------------------------------------------

def isic2016_manifest():
    # Deliberately unbalanced: the official test set has few melanomas; no balance is asked of it.
    manifest = manifest_from([["melanoma"]] * 12 + [["nevus"]] * 30)
    manifest["split"] = ["train"] * 10 + ["test"] * 2 + ["train"] * 8 + ["test"] * 22
    return manifest


def test_official_split_is_marked_and_accepted(tmp_path):
    manifest = isic2016_manifest()
    folds = official_split(manifest, "malignant_vs_benign")
    assert is_official(folds) and fold_runs(folds) == [(0, 1, 2)]
    train = set(folds.loc[folds["half"] == 1, "image"])
    assert train == set(manifest.loc[manifest["split"] == "train", "image"])
    write_folds(folds, tmp_path / "official.csv", manifest, "malignant_vs_benign")
    assert is_official(read_folds(tmp_path / "official.csv", manifest, "malignant_vs_benign"))


def test_official_split_needs_a_valid_split_column():
    manifest = isic2016_manifest()
    with pytest.raises(PipelineError, match="no 'split' column"):
        official_split(manifest.drop(columns="split"))
    manifest.loc[3, "split"] = "validation"
    with pytest.raises(PipelineError, match=r"'train' or 'test'.*img0003"):
        official_split(manifest)


# --- command line -------------------------------------------------------------------------------

def test_cli_writes_checked_folds_and_prints_counts(tmp_path, capsys):
    manifest = manifest_from(big_groups(np.random.default_rng(2)))
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "folds.csv"
    args = ["folds", "--manifest", str(tmp_path / "manifest.csv"), "--design",
            "melanoma_vs_bcc_vs_benign", "--out", str(out), "--seed", "5"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "melanoma" in printed and "bcc" in printed and "repeat" in printed
    folds = read_folds(out, manifest, "melanoma_vs_bcc_vs_benign")
    pd.testing.assert_frame_equal(folds, make_folds(manifest, "melanoma_vs_bcc_vs_benign", seed=5),
                                  check_dtype=False)


def test_cli_official_and_refused_options(tmp_path, capsys):
    isic2016_manifest().to_csv(tmp_path / "manifest.csv", index=False)
    base = ["folds", "--manifest", str(tmp_path / "manifest.csv"), "--design",
            "malignant_vs_benign", "--out", str(tmp_path / "folds.csv"), "--official"]
    assert main(base + ["--seed", "3"]) == 2
    assert "--seed and --repeats would do nothing" in capsys.readouterr().err
    assert main(base) == 0
    assert set(pd.read_csv(tmp_path / "folds.csv")["repeat"]) == {0}
    assert main(["folds", "--manifest", str(tmp_path / "manifest.csv"), "--design", "nope",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown design 'nope'" in capsys.readouterr().err
