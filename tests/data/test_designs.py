"""Tests of pipeline.data.designs on a hand-made manifest whose class counts are derived by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.data.manifest import MANIFEST_COLUMNS, write_manifest
from pipeline.data.designs import DESIGNS, apply_design, class_counts, get_design
from pipeline.errors import PipelineError

# 10 images: 3 melanoma, 2 bcc, 5 benign (nevus 3, seborrheic keratosis 1, SCC 1).
CATEGORIES = ["melanoma", "benign", "bcc", "benign", "melanoma", "benign", "bcc", "benign",
              "melanoma", "benign"]
DIAGNOSES = ["melanoma", "nevus", "basal cell carcinoma", "nevus", "melanoma (in situ)",
             "seborrheic keratosis", "basal cell carcinoma", "nevus", "melanoma",
             "squamous cell carcinoma"]


def manifest(categories=CATEGORIES, diagnoses=DIAGNOSES) -> pd.DataFrame:
    n = len(categories)
    frame = pd.DataFrame({c: [""] * n for c in MANIFEST_COLUMNS})
    frame["image"] = [f"img{i}" for i in range(n)]
    frame["path"] = [f"images/img{i}.jpg" for i in range(n)]
    frame["group"] = frame["image"]
    frame["category"] = categories
    frame["diagnosis"] = diagnoses
    return frame


def test_malignant_vs_benign_keeps_everything():
    kept = apply_design(manifest(), "malignant_vs_benign")
    assert len(kept) == 10 and list(kept["image"]) == [f"img{i}" for i in range(10)]
    # melanoma (0, 4, 8) and bcc (2, 6) are malignant = class 1; the other five benign = 0.
    assert list(kept["y"]) == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert (kept["label"] == "malignant").sum() == 5


def test_melanoma_vs_benign_removes_bcc():
    kept = apply_design(manifest(), "melanoma_vs_benign")
    # img2 and img6 (bcc) are removed; the order of the others is kept.
    assert list(kept["image"]) == ["img0", "img1", "img3", "img4", "img5", "img7", "img8", "img9"]
    assert list(kept["y"]) == [1, 0, 0, 1, 0, 0, 1, 0]
    assert get_design("melanoma_vs_benign").removed == ("bcc",)


def test_three_classes_indices_follow_design_classes():
    kept = apply_design(manifest(), "melanoma_vs_bcc_vs_benign")
    assert get_design("melanoma_vs_bcc_vs_benign").classes == ("benign", "bcc", "melanoma")
    # benign = 0, bcc = 1, melanoma = 2
    assert list(kept["y"]) == [2, 0, 1, 0, 2, 0, 1, 0, 2, 0]
    assert kept["y"].dtype.kind == "i"
    # The fine diagnosis rides along untouched (folds balance on it).
    assert list(kept["diagnosis"]) == DIAGNOSES


def test_class_counts_of_the_three_designs():
    table = class_counts(manifest())
    assert table.loc["malignant_vs_benign", ["benign", "malignant", "kept", "removed"]].tolist() \
        == [5, 5, 10, 0]
    assert table.loc["melanoma_vs_benign", ["benign", "melanoma", "bcc", "kept", "removed"]
                     ].tolist() == [5, 3, 0, 8, 2]
    assert table.loc["melanoma_vs_bcc_vs_benign", ["benign", "bcc", "melanoma", "kept",
                                                   "removed"]].tolist() == [5, 2, 3, 10, 0]
    assert list(table.index) == list(DESIGNS)


def test_unknown_design_lists_known_ones():
    with pytest.raises(PipelineError) as err:
        apply_design(manifest(), "melanoma_vs_all")
    assert "unknown design 'melanoma_vs_all'" in str(err.value)
    assert all(name in str(err.value) for name in DESIGNS)


def test_retinopathy_manifest_is_rejected():
    grades = ["0", "1", "2", "4", "0"]
    with pytest.raises(PipelineError) as err:
        apply_design(manifest(grades, [f"grade {g}" for g in grades]), "malignant_vs_benign")
    message = str(err.value)
    assert "['0', '1', '2', '4']" in message and "Retinopathy manifests have no labelling designs" \
        in message


def test_designs_cli_prints_counts(tmp_path, capsys):
    path = tmp_path / "manifest.csv"
    write_manifest(manifest().assign(path=[str(tmp_path / f"img{i}.jpg") for i in range(10)]), path)
    assert main(["designs", "--manifest", str(path)]) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    # columns: benign malignant melanoma bcc kept removed, zeros shown as "-"
    assert lines["malignant_vs_benign"] == ["5", "5", "-", "-", "10", "-"]
    assert lines["melanoma_vs_benign"] == ["5", "-", "3", "-", "8", "2"]
    assert lines["melanoma_vs_bcc_vs_benign"] == ["5", "-", "3", "2", "10", "-"]

    assert main(["designs", "--manifest", str(tmp_path / "absent.csv")]) == 2
    assert "manifest" in capsys.readouterr().err
