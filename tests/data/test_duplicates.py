"""Duplicate images (pipeline/data/duplicates.py, the data stage's ``data.duplicates``, and
``python -m pipeline duplicates``): one file under two ids is refused, grouped or dropped; one file
with two labels is always refused; near copies are listed for a person to judge."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.errors import PipelineError

EXPERIMENT = """
[experiment]
name = "x"
cells = ["none"]
[data]
dataset = "csv"
root = "{root}"
{extra}
[folds]
designs = ["melanoma_vs_benign"]
repeats = 1
[network]
name = "standard-cnn"
input_size = 32
"""


def lesion(seed: int, side: int = 96) -> np.ndarray:
    """A smooth random image (distinct per seed), so a resized copy keeps its look."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC))


def write_dataset(folder, rows, copies=(), seed: int = 0):
    """A csv-adapter dataset: ``rows`` (image, diagnosis[, group]) each with its own image file
    ``<image>.png`` from ``lesion(i)``; ``copies`` (image, of) makes ``<image>.png`` a byte copy of
    ``<of>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    of = dict(copies)
    for i, row in enumerate(rows):
        if row[0] not in of:
            Image.fromarray(lesion(seed + i)).save(folder / f"{row[0]}.png")
    for image, source in copies:
        (folder / f"{image}.png").write_bytes((folder / f"{source}.png").read_bytes())
    header = "image,diagnosis" + (",group" if len(rows[0]) > 2 else "")
    (folder / "labels.csv").write_text(
        "\n".join([header] + [",".join(r) for r in rows]) + "\n", encoding="utf-8")
    return folder / "labels.csv"


def rows_of(n_melanoma: int, n_benign: int, prefix: str = "") -> list[tuple[str, str]]:
    return ([(f"{prefix}m{i}", "melanoma") for i in range(n_melanoma)]
            + [(f"{prefix}n{i}", "nevus") for i in range(n_benign)])


def run_data(tmp_path, monkeypatch, root, *sets, extra=""):
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "x.toml"
    config.write_text(EXPERIMENT.format(root=root, extra=extra), encoding="utf-8")
    argv = ["--config", str(config)] + [a for s in sets for a in ("--set", s)]
    status = main(["data", *argv])
    if status == 0:
        assert main(["folds", *argv]) == 0  # the folds' invariants (groups in one half) hold
    return status, tmp_path / "x"


def test_one_file_under_two_ids_with_opposite_labels_is_refused_by_every_policy(
        tmp_path, monkeypatch, capsys):
    rows = rows_of(4, 6) + [("b", "nevus")]
    labels = write_dataset(tmp_path / "d", rows, copies=[("b", "m0")])  # m0 (melanoma) = b
    for policy in ("error", "group", "drop"):
        status, out = run_data(tmp_path, monkeypatch, labels, f'data.duplicates="{policy}"')
        err = capsys.readouterr().err
        assert status == 2 and not (out / "manifest.csv").exists(), policy
        assert "different labels" in err and "m0 (melanoma, " in err and "b (benign, " in err
        assert "labels.csv, row 2" in err and "labels.csv, row 12" in err  # the rows to correct


def test_one_file_under_two_ids_is_an_error_by_default_naming_the_ids_and_the_fix(
        tmp_path, monkeypatch, capsys):
    labels = write_dataset(tmp_path / "d", rows_of(4, 6) + [("copy", "nevus")],
                           copies=[("copy", "n2")])
    status, out = run_data(tmp_path, monkeypatch, labels)
    err = capsys.readouterr().err
    assert status == 2 and not (out / "manifest.csv").exists()
    assert "2 ids share 1 image file(s)" in err and "n2 (benign" in err and "copy (benign" in err
    assert 'data.duplicates = "group"' in err and '"drop"' in err


def test_group_puts_the_ids_of_one_file_and_their_groups_in_one_half(tmp_path, monkeypatch):
    rows = [(f"m{i}", "melanoma", f"p{i}") for i in range(4)] + \
        [(f"n{i}", "nevus", f"q{i}") for i in range(6)] + [("copy", "nevus", "q9")]
    labels = write_dataset(tmp_path / "d", rows + [("other", "nevus", "q9")],
                           copies=[("copy", "n2")])
    status, out = run_data(tmp_path, monkeypatch, labels, 'data.duplicates="group"')
    assert status == 0
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False).set_index("image")
    # n2's patient q2 and copy's patient q9 (with its other image) become one group
    assert manifest.loc[["n2", "copy", "other"], "group"].nunique() == 1
    assert manifest.loc["m0", "group"] != manifest.loc["n2", "group"]
    folds = pd.read_csv(out / "folds" / "melanoma_vs_benign.csv", dtype=str)
    halves = folds[folds["image"].isin(["n2", "copy", "other"])].groupby("repeat")["half"]
    assert (halves.nunique() == 1).all()
    listing = pd.read_csv(out / "duplicates.csv", dtype=str)
    assert sorted(listing["image"]) == ["copy", "n2"] and set(listing["action"]) == {"grouped"}
    from pipeline.experiment.config import load_config
    from pipeline.stages.report import experiment_header

    header = experiment_header(load_config("x.toml", ['data.duplicates="group"']))
    assert "joined into one group" in header["duplicate images (declared)"]


def test_drop_keeps_the_first_id_of_each_file_and_lists_the_others(tmp_path, monkeypatch):
    labels = write_dataset(tmp_path / "d", rows_of(4, 6) + [("copy", "nevus"), ("copy2", "nevus")],
                           copies=[("copy", "n2"), ("copy2", "n2")])
    status, out = run_data(tmp_path, monkeypatch, labels, 'data.duplicates="drop"')
    assert status == 0
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert "n2" in set(manifest["image"]) and not {"copy", "copy2"} & set(manifest["image"])
    assert len(manifest) == 10
    listing = pd.read_csv(out / "duplicates.csv", dtype=str).set_index("image")
    assert listing["action"].to_dict() == {"n2": "kept", "copy": "dropped", "copy2": "dropped"}
    # the same data without the copies: the listing goes, the manifest is complete
    (tmp_path / "d" / "labels.csv").write_text(
        "\n".join(["image,diagnosis"] + [",".join(r) for r in rows_of(4, 6)]) + "\n")
    status, out = run_data(tmp_path, monkeypatch, labels, 'data.duplicates="drop"')
    assert status == 0 and not (out / "duplicates.csv").exists()


def test_a_copy_in_the_extra_dataset_is_found_across_datasets(tmp_path, monkeypatch, capsys):
    target = write_dataset(tmp_path / "target", rows_of(4, 6))
    extra = write_dataset(tmp_path / "extra", rows_of(3, 0, prefix="x"), seed=100)
    # the extra dataset's xm1 is the target's m1 under another id (ISIC 2019 in ISIC 2020)
    (tmp_path / "extra" / "xm1.png").write_bytes((tmp_path / "target" / "m1.png").read_bytes())
    lines = f'extra_dataset = "csv"\nextra_root = "{extra}"'
    status, _ = run_data(tmp_path, monkeypatch, target, extra=lines)
    err = capsys.readouterr().err
    assert status == 2 and "2 ids share 1 image file(s)" in err
    assert "m1 (melanoma" in err and "xm1 (melanoma" in err


def test_resolve_duplicates_leaves_unique_files_alone():
    from pipeline.data.duplicates import resolve_duplicates

    frame = pd.DataFrame({"image": ["a", "b"], "category": ["melanoma", "benign"],
                          "group": ["a", "b"]})
    out, found = resolve_duplicates(frame, {"a": "1" * 64, "b": "2" * 64}, "error")
    assert out.equals(frame) and found.empty
    with pytest.raises(PipelineError, match="choose one of error, group, drop"):
        resolve_duplicates(frame, {}, "merge")


def test_near_copies_are_close_in_the_perceptual_hash_and_others_are_not():
    from pipeline.data.duplicates import near_duplicate_pairs, perceptual_hashes

    originals = [lesion(seed) for seed in range(12)]
    resized = np.asarray(Image.fromarray(originals[3]).resize((71, 71)).resize((96, 96)))
    brighter = np.clip(originals[7].astype(int) + 12, 0, 255).astype(np.uint8)
    hashes = perceptual_hashes(np.stack(originals + [resized, brighter]))
    pairs = near_duplicate_pairs(hashes, max_distance=6)
    assert {(i, j) for i, j, _ in pairs} == {(3, 12), (7, 13)}, pairs
    assert [d for _, _, d in pairs] == sorted(d for _, _, d in pairs)


def test_the_duplicates_command_lists_and_shows_candidate_pairs(tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.data.datasets import build_manifest
    from pipeline.data.manifest import write_manifest

    labels = write_dataset(tmp_path / "d", rows_of(4, 6) + [("jpeg", "nevus")])
    Image.fromarray(lesion(2)).save(tmp_path / "d" / "jpeg.jpg", quality=70)  # m2, re-encoded
    (tmp_path / "d" / "jpeg.png").unlink()
    write_manifest(build_manifest("csv", labels), tmp_path / "manifest.csv")
    assert main(["duplicates", "--manifest", str(tmp_path / "manifest.csv"), "--out",
                 str(tmp_path / "pairs.csv"), "--sheet", str(tmp_path / "pairs.png")]) == 0
    out = capsys.readouterr().out
    assert "1 candidate pairs among 11 images" in out and "1 with different labels" in out
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert pairs[["image_a", "image_b"]].values.tolist() == [["m2", "jpeg"]]
    assert bool(pairs["labels_differ"].iloc[0])
    assert Image.open(tmp_path / "pairs.png").size[1] > 100
    assert main(["duplicates", "--manifest", str(tmp_path / "manifest.csv"),
                 "--max-distance", "65"]) == 2
