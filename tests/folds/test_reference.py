"""Tests for pipeline.folds.reference: a consistent import round-trips, every kind of inconsistency is
reported, and --strict sets the exit status."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.folds.table import check_folds
from pipeline.folds.crossval import make_folds
from pipeline.folds.reference import KINDS, format_report, import_reference_folds

MANIFEST_COLUMNS = ["image", "path", "diagnosis", "category", "group", "difficulty", "age", "sex",
                    "site"]


def manifest_of(images: list[str], groups: dict | None = None, categories: dict | None = None):
    groups, categories = groups or {}, categories or {}
    rows = []
    for i, image in enumerate(images):
        category = categories.get(image, "melanoma" if i % 3 == 0 else "benign")
        rows.append({"image": image, "path": f"{image}.jpg", "diagnosis":
                     {"melanoma": "melanoma", "bcc": "basal cell carcinoma"}.get(category, "nevus"),
                     "category": category, "group": groups.get(image, image), "difficulty": "",
                     "age": "", "sex": "", "site": ""})
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def write_reference(tmp_path, labels: list[str], folds: dict) -> tuple:
    labels_path, folds_path = tmp_path / "protocol.csv", tmp_path / "protocol.yml"
    pd.DataFrame({"image": labels, "level": 0}).to_csv(labels_path, index=False)
    plain = json.loads(json.dumps(folds))  # no shared lists, so no YAML anchors
    folds_path.write_text(yaml.safe_dump(plain, default_flow_style=None), encoding="utf-8")
    return labels_path, folds_path


def test_consistent_reference_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    images = [f"aal{i:03d}" for i in range(60)]
    manifest = manifest_of(images, groups={image: f"lesion{i // 2}" for i, image in
                                           enumerate(images) if rng.random() < 0.5})
    made = make_folds(manifest, "malignant_vs_benign", seed=2, repeats=2)
    lists = {r: [[f"{i}.tiff" for i in rows.loc[rows["half"] == h, "image"]] for h in (1, 2)]
             for r, rows in made.groupby("repeat")}
    # The pairs are interleaved (1 with 3, 2 with 4): pairing must come from the lists, not order.
    reference = {"Fold_1": lists[1], "Fold_2": lists[2], "Fold_3": lists[1][::-1],
                 "Fold_4": lists[2][::-1]}
    labels_path, folds_path = write_reference(tmp_path, images, reference)
    folds, issues = import_reference_folds(labels_path, folds_path, manifest, "malignant_vs_benign")
    assert issues == [], format_report(issues)
    key = ["repeat", "half", "image"]
    pd.testing.assert_frame_equal(folds.sort_values(key).reset_index(drop=True),
                                  made.sort_values(key).reset_index(drop=True), check_dtype=False)
    check_folds(folds, manifest, "malignant_vs_benign")

    out = tmp_path / "folds.csv"
    assert main(["folds-import", "--labels", str(labels_path), "--folds", str(folds_path),
                 "--out", str(out), "--strict"]) == 0
    assert len(pd.read_csv(out)) == len(folds)


LABELS = [f"a{i:02d}" for i in range(1, 13)] + ["img_09.png", "B5", "dup", "dup", "unused", "x_a",
                                                 "X_A"]
FOLD_1 = [["a01.tiff", "a03.tiff", "a05.tiff", " a07 ", "img_09.jpg", "a11.tiff", "a10.tiff"],
          ["a02.tiff", "a04.tiff", "a06.tiff", "images/a08.tiff", "b5.tiff", "dup.tiff", "a12.tiff",
           "a09.tiff"]]
REFERENCE = {
    "Fold_1": FOLD_1,
    "Fold_2": FOLD_1[::-1],
    "Fold_3": [["a01", "a02", "a03", "a04", "a05", "a06", "a07", "a01", "ghost.jpg", "x_A"],
               ["a06", "a08", "a09", "a10", "a11", "a12", "B5"]],
    "Fold_4": "oops",
    "Fold_5": FOLD_1,
    "Fold_6": FOLD_1[::-1],
}
# What each kind must mention: (text in one of its messages, names among its examples).
EXPECTED = {
    "malformed_fold": ("Fold_4", ["Fold_4"]),
    "duplicate_label": ("1 images", ["dup"]),
    "unknown_name": ("1 names", ["ghost.jpg"]),
    "ambiguous_name": ("1 names", ["x_A"]),
    "unused_label": ("3 images", ["unused", "x_a", "X_A"]),
    "duplicate_in_list": ("Fold_3", ["a01"]),
    "in_both_lists": ("Fold_3", ["a06"]),
    "missing_from_fold": ("Fold_3", ["dup", "img_09.png"]),
    "unpaired_fold": ("Fold_3 has no fold with its lists swapped; nearest swap", ["Fold_3"]),
    "not_in_manifest": ("1 label-table images", ["dup"]),
    "normalised_manifest_name": ("case", ["'B5' -> 'b5'"]),
    "removed_by_design": ("melanoma_vs_benign", ["a03"]),
    "split_group": ("both halves", ["repeat 1: lesionA"]),
    "check_folds": ("invariant", []),
}


def _with_manifest():
    images = [f"a{i:02d}" for i in range(1, 13)] + ["img_09", "b5"]
    return manifest_of(images, groups={"a01": "lesionA", "a02": "lesionA"},
                       categories={"a03": "bcc"})


def test_every_kind_of_inconsistency_is_reported(tmp_path):
    labels_path, folds_path = write_reference(tmp_path, LABELS, REFERENCE)
    _, issues = import_reference_folds(labels_path, folds_path, _with_manifest(),
                                       "melanoma_vs_benign")
    assert {i.kind for i in issues} == set(KINDS), format_report(issues)
    for kind, (text, names) in EXPECTED.items():
        found = [i for i in issues if i.kind == kind]
        assert any(text in i.message for i in found), (kind, [i.message for i in found])
        examples = {e for i in found for e in i.examples}
        assert set(names) <= examples, (kind, examples)
    normalised = {i.message.split(": ")[-1]: i.examples for i in issues
                  if i.kind == "normalised_name"}
    assert normalised == {"whitespace": ("' a07 ' -> 'a07'",),
                          "extension": ("'img_09.jpg' -> 'img_09.png'",),
                          "leading folders": ("'images/a08.tiff' -> 'a08'",),
                          "case": ("'b5.tiff' -> 'B5'",)}
    duplicates = [i.message for i in issues if i.kind == "duplicate_partition"]
    assert sorted(duplicates) == ["Fold_5 repeats the partition of Fold_1 with the same lists",
                                  "Fold_6 repeats the partition of Fold_1 with the lists swapped"]
    assert [i.kind for i in issues] == sorted((i.kind for i in issues), key=list(KINDS).index)
    report = format_report(issues)
    assert all(f"{kind} (" in report for kind in KINDS)


def test_output_keeps_what_resolves_and_drops_what_is_reported(tmp_path):
    labels_path, folds_path = write_reference(tmp_path, LABELS, REFERENCE)
    folds, _ = import_reference_folds(labels_path, folds_path)
    assert sorted(folds["repeat"].unique()) == [1, 2]  # Fold_1/2/5/6 are one partition, Fold_3 one
    first = folds[folds["repeat"] == 1]
    assert set(first.loc[first["half"] == 1, "image"]) == {"a01", "a03", "a05", "a07", "img_09.png",
                                                           "a11", "a10"}
    assert set(first.loc[first["half"] == 2, "image"]) == {"a02", "a04", "a06", "a08", "B5", "dup",
                                                           "a12", "a09"}
    second = folds[folds["repeat"] == 2]
    assert "a06" not in set(second["image"])  # in both lists of Fold_3
    assert not second["image"].duplicated().any()
    assert not {"ghost.jpg", "x_A", "x_a", "X_A"} & set(folds["image"])


def test_strict_exit_status_and_nothing_written(tmp_path, capsys):
    labels_path, folds_path = write_reference(tmp_path, LABELS, REFERENCE)
    manifest_path = tmp_path / "manifest.csv"
    _with_manifest().to_csv(manifest_path, index=False)
    args = ["folds-import", "--labels", str(labels_path), "--folds", str(folds_path),
            "--manifest", str(manifest_path), "--design", "melanoma_vs_benign"]
    strict_out = tmp_path / "strict.csv"
    assert main(args + ["--out", str(strict_out), "--strict"]) == 2
    printed = capsys.readouterr().out
    assert not strict_out.exists() and "not written" in printed
    assert all(f"{kind} (" in printed for kind in KINDS)
    out = tmp_path / "folds.csv"
    assert main(args + ["--out", str(out)]) == 0
    written = pd.read_csv(out, dtype={"image": str})
    assert list(written.columns) == ["image", "repeat", "half"]
    assert "b5" in set(written["image"]) and "a03" not in set(written["image"])
    assert "repeat 1: Fold_1 + Fold_2" in capsys.readouterr().out


def test_unreadable_inputs_are_errors(tmp_path, capsys):
    labels_path, folds_path = write_reference(tmp_path, LABELS, REFERENCE)
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("Fold_1: [a, [b\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="cannot read .*bad.yml as YAML"):
        import_reference_folds(labels_path, bad_yaml)
    bad_labels = tmp_path / "labels.csv"
    bad_labels.write_text("name,level\na,0\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="no column 'image'"):
        import_reference_folds(bad_labels, folds_path)
    with pytest.raises(PipelineError, match="--design needs --manifest"):
        import_reference_folds(labels_path, folds_path, design="malignant_vs_benign")
    assert main(["folds-import", "--labels", str(tmp_path / "none.csv"), "--folds",
                 str(folds_path), "--out", str(tmp_path / "o.csv")]) == 2
    assert "none.csv not found" in capsys.readouterr().err
