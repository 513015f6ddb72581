"""Tests of pipeline.data.datasets, pipeline.data.manifest and pipeline.data.vocabulary on tiny fixtures in each
published format."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.data.datasets import DATASETS, build_manifest
from pipeline.errors import PipelineError
from pipeline.data.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest
from pipeline.data.vocabulary import VOCABULARY, categorize, categorize_levels


def image(path: Path) -> None:
    """A tiny image file whose format follows the file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), (120, 60, 30)).save(path)


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


# --- derm7pt ---------------------------------------------------------------------------------

DERM7PT_HEADER = ["case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks",
                  "pigmentation", "regression_structures", "dots_and_globules",
                  "blue_whitish_veil", "vascular_structures", "level_of_diagnostic_difficulty",
                  "elevation", "location", "sex", "management", "clinic", "derm", "case_id",
                  "notes", "extra_column_of_a_later_release"]
# (diagnosis, difficulty, location, derm image, case_id)
DERM7PT_ROWS = [
    ("basal cell carcinoma", "medium", "back", "NEL/Nel026.jpg", ""),
    ("melanoma (in situ)", "low", "back", "Ael/Ael010.jpg", "1d0102"),
    ("melanoma (less than 0.76 mm)", "high", "head neck", "Ael/AEL011.JPG", "1d0102"),
    ("melanoma (0.76 to 1.5 mm)", "medium", "chest", "Fbl/Fbl001.jpg", ""),
    ("melanoma (more than 1.5 mm)", "high", "acral", "Fbl/Fbl002.jpg", ""),
    ("clark nevus", "low", "acral", "NCL/Ncl003.jpg", ""),
    ("reed or spitz nevus", "high", "lower limbs", "NCL/Ncl004.jpg", ""),
    ("seborrheic keratosis", "low", "upper limbs", "Gzl/gzl01.jpg", ""),
]


def make_derm7pt(root: Path, rows=DERM7PT_ROWS, header=DERM7PT_HEADER) -> Path:
    table = [header]
    for i, (diagnosis, difficulty, location, derm, case_id) in enumerate(rows, start=1):
        clinic = derm.replace(".", "_clinic.")
        values = dict(case_num=str(i), diagnosis=diagnosis, location=location, sex="female",
                      level_of_diagnostic_difficulty=difficulty, derm=derm, clinic=clinic,
                      case_id=case_id)
        table.append([values.get(column, "absent") for column in header])
        image(root / "images" / derm)
    write_rows(root / "meta" / "meta.csv", table)
    return root


def test_derm7pt_categories_groups_and_acral_exclusion(tmp_path):
    frame = build_manifest("derm7pt", make_derm7pt(tmp_path / "derm7pt"))
    assert list(frame.columns[:9]) == list(MANIFEST_COLUMNS) and "case_num" in frame.columns
    # Two acral rows (5 and 6) are excluded by default: 8 - 2 = 6 images.
    assert frame.attrs["excluded"] == {"acral": 2}
    assert list(frame["image"]) == ["NEL/Nel026", "Ael/Ael010", "Ael/AEL011", "Fbl/Fbl001",
                                    "NCL/Ncl004", "Gzl/gzl01"]
    # melanoma subtypes (in situ, <0.76 mm, 0.76-1.5 mm) are melanoma; nevus and SK benign.
    assert list(frame["category"]) == ["bcc", "melanoma", "melanoma", "melanoma", "benign",
                                       "benign"]
    assert list(frame["diagnosis"])[1] == "melanoma (in situ)"
    # The two images of case 1d0102 share a group; the others are their own group.
    assert list(frame["group"]) == ["NEL/Nel026", "1d0102", "1d0102", "Fbl/Fbl001", "NCL/Ncl004",
                                    "Gzl/gzl01"]
    assert list(frame["difficulty"]) == ["medium", "low", "high", "medium", "high", "low"]
    assert frame["site"].iloc[2] == "head neck" and set(frame["sex"]) == {"female"}
    # Dermoscopic images only: every path is the `derm` file, none the clinical one.
    assert all(os.path.isfile(p) and "_clinic" not in p for p in frame["path"])


def test_derm7pt_keep_acral(tmp_path):
    frame = build_manifest("derm7pt", make_derm7pt(tmp_path), keep_acral=True)
    assert len(frame) == 8 and frame.attrs["excluded"] == {"acral": 0}
    assert (frame["category"] == "melanoma").sum() == 4 and (frame["site"] == "acral").sum() == 2


def test_derm7pt_needs_its_columns_but_tolerates_extras(tmp_path):
    header = [c for c in DERM7PT_HEADER if c != "level_of_diagnostic_difficulty"]
    make_derm7pt(tmp_path, header=header)
    with pytest.raises(PipelineError) as err:
        build_manifest("derm7pt", tmp_path)
    message = str(err.value)
    assert "meta.csv" in message and "'level_of_diagnostic_difficulty'" in message
    assert "columns found: case_num, diagnosis" in message


def test_derm7pt_unknown_diagnosis_names_value_file_and_row(tmp_path):
    rows = list(DERM7PT_ROWS)
    rows[2] = ("melanoma (very thick)",) + rows[2][1:]
    make_derm7pt(tmp_path, rows=rows)
    with pytest.raises(PipelineError) as err:
        build_manifest("derm7pt", tmp_path)
    # The third data row is row 4 of the file (the header is row 1).
    message = str(err.value)
    assert "unknown diagnosis 'melanoma (very thick)'" in message
    assert f"{tmp_path / 'meta' / 'meta.csv'}, row 4" in message
    assert "pipeline/data/vocabulary.py" in message and "reed or spitz nevus" in message


def test_derm7pt_bad_difficulty(tmp_path):
    rows = list(DERM7PT_ROWS)
    rows[0] = rows[0][:1] + ("very hard",) + rows[0][2:]
    make_derm7pt(tmp_path, rows=rows)
    with pytest.raises(PipelineError, match=r"difficulty 'very hard' in .*meta.csv, row 2"):
        build_manifest("derm7pt", tmp_path)


# --- vocabulary ------------------------------------------------------------------------------

def test_vocabulary_ignores_case_and_whitespace():
    assert categorize("  Basal   Cell carcinoma ", file="f.csv", row=2) == "bcc"
    assert categorize("MELANOMA (In Situ)", file="f.csv", row=2) == "melanoma"
    assert categorize("Melanoma Invasive", file="f.csv", row=2) == "melanoma"
    assert categorize("squamous cell carcinoma", file="f.csv", row=2) == "benign"
    assert set(VOCABULARY.values()) <= {"melanoma", "bcc", "benign", "from-label"}


def test_vocabulary_error_for_unknown_value():
    with pytest.raises(PipelineError) as err:
        categorize("xyz", file="labels.csv", row=7)
    assert str(err.value).startswith("unknown diagnosis 'xyz' in labels.csv, row 7: add it to "
                                     "pipeline/data/vocabulary.py (known: ")


def test_values_decided_by_the_published_label():
    assert categorize("unknown", file="t.csv", row=3, label="benign") == "benign"
    with pytest.raises(PipelineError, match="does not say which malignancy"):
        categorize("unknown", file="t.csv", row=3, label="malignant")
    with pytest.raises(PipelineError, match="publishes no benign/malignant label"):
        categorize("unknown", file="t.csv", row=3)
    assert categorize("malignant", file="t.csv", row=3, label="1.0",
                      malignant_means="melanoma") == "melanoma"


def test_levels_most_specific_known_level_decides():
    levels = ["Nevus, Spitz", "Nevus", "Benign melanocytic proliferations", "Benign"]
    assert categorize_levels(levels, file="m.csv", row=2) == "benign"
    # "Malignant" alone depends on the label; the definite level below it decides first.
    assert categorize_levels(["Basal cell carcinoma, Nodular", "Basal cell carcinoma",
                              "Malignant adnexal epithelial proliferations - Follicular",
                              "Malignant"], file="m.csv", row=2, label="malignant") == "bcc"
    with pytest.raises(PipelineError, match=r"unknown diagnosis 'Foo, bar' \(its less specific "
                                            r"levels 'Foo' are not known either\) in m.csv, row 9"):
        categorize_levels(["Foo, bar", "Foo"], file="m.csv", row=9)
    with pytest.raises(PipelineError, match="no diagnosis in m.csv, row 9"):
        categorize_levels(["", " "], file="m.csv", row=9)


# --- ISIC 2016 -------------------------------------------------------------------------------

def make_isic2016(root: Path, header: bool = False) -> Path:
    train = [["ISIC_0000000", "benign"], ["ISIC_0000001", "malignant"], ["ISIC_0000002", "benign"]]
    test = [["ISIC_0000010", "0.0"], ["ISIC_0000011", "1.0"]]
    write_rows(root / "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
               ([["image_id", "label"]] if header else []) + train)
    write_rows(root / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", test)
    image(root / "ISBI2016_ISIC_Part3_Training_Data" / "ISIC_0000000.jpg")
    image(root / "ISBI2016_ISIC_Part3_Training_Data" / "ISIC_0000001.jpg")
    image(root / "ISIC_0000002.jpg")  # images may also lie in the root
    image(root / "ISBI2016_ISIC_Part3_Test_Data" / "ISIC_0000010.jpg")
    image(root / "ISBI2016_ISIC_Part3_Test_Data" / "ISIC_0000011.jpg")
    return root


@pytest.mark.parametrize("header", [False, True])
def test_isic2016_official_split_and_labels(tmp_path, header):
    frame = build_manifest("isic2016", make_isic2016(tmp_path, header=header))
    assert list(frame["image"]) == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002",
                                    "ISIC_0000010", "ISIC_0000011"]
    assert list(frame["split"]) == ["train"] * 3 + ["test"] * 2
    assert list(frame["category"]) == ["benign", "melanoma", "benign", "benign", "melanoma"]
    assert list(frame["diagnosis"]) == ["benign", "malignant", "benign", "benign", "malignant"]
    assert frame["path"].iloc[2] == str(tmp_path.absolute() / "ISIC_0000002.jpg")
    assert list(frame["group"]) == list(frame["image"])


@pytest.mark.parametrize("rows, row, label", [
    ([["ISIC_0000010", "0.0"], ["ISIC_0000011", "maybe"]], 2, "maybe"),
    ([["ISIC_0000010", "maybe"], ["ISIC_0000011", "0.0"]], 1, "maybe"),
    # a bad first row of the headerless published file is a row, not a header to skip
    ([["ISIC_0000010.jpg", "mel"], ["ISIC_0000011", "0.0"]], 1, "mel"),
    ([["isic_0000010", "Melanoma"], ["ISIC_0000011", "0.0"]], 1, "Melanoma"),
])
def test_isic2016_bad_label_names_row(tmp_path, rows, row, label):
    make_isic2016(tmp_path)
    write_rows(tmp_path / "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", rows)
    with pytest.raises(PipelineError, match=rf"Test_GroundTruth.csv, row {row}: .*'{label}'"):
        build_manifest("isic2016", tmp_path)


# --- ISIC 2020 -------------------------------------------------------------------------------

ISIC2020_HEADER = ["image_name", "patient_id", "sex", "age_approx",
                   "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target"]


def make_isic2020(root: Path, rows=None) -> Path:
    rows = rows or [["ISIC_1", "IP_1", "male", "45.0", "torso", "nevus", "benign", "0"],
                    ["ISIC_2", "IP_1", "male", "45.0", "torso", "melanoma", "malignant", "1"],
                    ["ISIC_3", "IP_2", "", "", "", "unknown", "benign", "0"],
                    ["ISIC_4", "IP_3", "female", "70.0", "head/neck", "lentigo NOS", "benign",
                     "0"]]
    write_rows(root / "train.csv", [ISIC2020_HEADER] + rows)
    for i, row in enumerate(rows):  # Kaggle's jpeg/train/ and ISIC's train/ layouts, mixed
        image(root / ("jpeg/train" if i % 2 else "train") / f"{row[0]}.jpg")
    return root


def test_isic2020(tmp_path):
    frame = build_manifest("isic2020", make_isic2020(tmp_path))
    assert list(frame["category"]) == ["benign", "melanoma", "benign", "benign"]
    assert list(frame["group"]) == ["IP_1", "IP_1", "IP_2", "IP_3"]
    assert list(frame["age"]) == ["45", "45", "", "70"]
    assert frame["path"].iloc[1].endswith(os.path.join("jpeg", "train", "ISIC_2.jpg"))
    assert frame["site"].iloc[3] == "head/neck" and list(frame["target"]) == ["0", "1", "0", "0"]


@pytest.mark.parametrize("row, expected", [
    (["ISIC_5", "IP_4", "", "", "", "melanoma", "benign", "0"], r"train.csv, row 2: diagnosis "
     r"'melanoma' is category 'melanoma' but target is 0"),
    (["ISIC_5", "IP_4", "", "", "", "nevus", "malignant", "1"], r"row 2: diagnosis 'nevus' is "
     r"category 'benign' but target is 1"),
    (["ISIC_5", "IP_4", "", "", "", "nevus", "benign", "1"], r"row 2: target '1' and "
     r"benign_malignant 'benign' disagree"),
    (["ISIC_5", "IP_4", "", "", "", "unknown", "malignant", "1"], r"'unknown' in .*train.csv, "
     r"row 2 is labelled 'malignant' but does not say which malignancy"),
])
def test_isic2020_label_disagreements(tmp_path, row, expected):
    make_isic2020(tmp_path, rows=[row])
    with pytest.raises(PipelineError, match=expected):
        build_manifest("isic2020", tmp_path)


# --- ISIC Archive (isic-cli) -----------------------------------------------------------------

ARCHIVE_HEADER = ["isic_id", "attribution", "age_approx", "anatom_site_general",
                  "benign_malignant", "diagnosis_1", "diagnosis_2", "diagnosis_3", "diagnosis_4",
                  "diagnosis_5", "lesion_id", "patient_id", "sex"]
ARCHIVE_ROWS = [
    ["ISIC_0000100", "x", "55", "back", "malignant", "Malignant",
     "Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive",
     "Melanoma Invasive, Superficial spreading", "", "IL_1", "IP_1", "male"],
    ["ISIC_0000101", "x", "55", "back", "malignant", "Malignant",
     "Malignant adnexal epithelial proliferations - Follicular", "Basal cell carcinoma",
     "Basal cell carcinoma, Nodular", "", "IL_1", "IP_1", "male"],
    ["ISIC_0000102", "x", "", "", "benign", "Benign", "Benign melanocytic proliferations", "Nevus",
     "Nevus, Spitz", "", "", "IP_2", ""],
    ["ISIC_0000103", "x", "60", "", "malignant", "Malignant", "Malignant epidermal proliferations",
     "Squamous cell carcinoma, Invasive", "", "", "", "", "female"],
    ["ISIC_0000104", "x", "", "", "indeterminate", "Indeterminate",
     "Indeterminate epidermal proliferations", "Solar or actinic keratosis", "", "", "", "", ""],
]


def make_archive(root: Path, header=ARCHIVE_HEADER, rows=ARCHIVE_ROWS) -> Path:
    write_rows(root / "metadata.csv", [header] + rows)
    for row in rows:
        image(root / f"{row[0]}.jpg")
    return root


def test_isic_archive_hierarchical_diagnoses(tmp_path):
    frame = build_manifest("isic-archive", make_archive(tmp_path))
    assert list(frame["category"]) == ["melanoma", "bcc", "benign", "benign", "benign"]
    # The most specific level is kept as the fine diagnosis.
    assert list(frame["diagnosis"])[:3] == ["Melanoma Invasive, Superficial spreading",
                                            "Basal cell carcinoma, Nodular", "Nevus, Spitz"]
    # lesion_id, else patient_id, else the image.
    assert list(frame["group"]) == ["IL_1", "IL_1", "IP_2", "ISIC_0000103", "ISIC_0000104"]
    assert list(frame["age"]) == ["55", "55", "", "60", ""]


def test_isic_archive_flat_diagnosis(tmp_path):
    header = ["isic_id", "benign_malignant", "diagnosis", "lesion_id"]
    rows = [["ISIC_1", "benign", "nevus", ""], ["ISIC_2", "malignant", "melanoma", ""],
            ["ISIC_3", "malignant", "basal cell carcinoma", ""],
            ["ISIC_4", "malignant", "actinic keratosis", ""], ["ISIC_5", "benign", "other", ""]]
    frame = build_manifest("isic-archive", make_archive(tmp_path, header, rows))
    assert list(frame["category"]) == ["benign", "melanoma", "bcc", "benign", "benign"]


@pytest.mark.parametrize("row, expected", [
    (["ISIC_1", "malignant", "Malignant", ""], r"'Malignant' in .*metadata.csv, row 2 is "
     r"labelled 'malignant' but does not say which malignancy"),
    (["ISIC_1", "benign", "Malignant", "Melanoma Invasive"], r"metadata.csv, row 2: diagnosis "
     r"'Melanoma Invasive' is category 'melanoma' but the published label is 'benign'"),
])
def test_isic_archive_contradictions(tmp_path, row, expected):
    make_archive(tmp_path, ["isic_id", "benign_malignant", "diagnosis_1", "diagnosis_3"], [row])
    with pytest.raises(PipelineError, match=expected):
        build_manifest("isic-archive", tmp_path)


def test_isic_archive_without_diagnosis_column(tmp_path):
    make_archive(tmp_path, ["isic_id", "sex"], [["ISIC_1", "male"]])
    with pytest.raises(PipelineError, match=r"no diagnosis column .*columns found: isic_id, sex"):
        build_manifest("isic-archive", tmp_path)


# --- Retinopathy and generic CSV -------------------------------------------------------------

def test_retinopathy_grades_and_patients(tmp_path):
    rows = [["10_left", "0"], ["10_right", "1"], ["13_left", "4"], ["13_right", "2"],
            ["15_left", "3"]]
    write_rows(tmp_path / "trainLabels.csv", [["image", "level"]] + rows)
    for i, (name, _level) in enumerate(rows):
        image(tmp_path / ("train" if i < 3 else "") / f"{name}.jpeg")
    frame = build_manifest("retinopathy", tmp_path)
    assert list(frame["category"]) == ["0", "1", "4", "2", "3"]
    assert list(frame["diagnosis"]) == ["grade 0", "grade 1", "grade 4", "grade 2", "grade 3"]
    assert list(frame["group"]) == ["10", "10", "13", "13", "15"]
    assert list(frame["site"]) == ["left", "right", "left", "right", "left"]

    write_rows(tmp_path / "trainLabels.csv", [["image", "level"], ["10_left", "5"]])
    with pytest.raises(PipelineError, match=r"trainLabels.csv, row 2: level '5'"):
        build_manifest("retinopathy", tmp_path)


def test_generic_csv_finds_images_by_extension_or_path(tmp_path):
    write_rows(tmp_path / "labels.csv", [
        ["image", "diagnosis", "group", "difficulty", "path"],
        ["a", "melanoma", "L1", "high", ""], ["b", "nevus", "L1", "", ""],
        ["c.tif", "basal cell carcinoma", "", "low", ""], ["d", "nevus", "", "", "sub/dd.jpeg"]])
    image(tmp_path / "a.png")
    image(tmp_path / "b.jpg")
    image(tmp_path / "c.tif")
    image(tmp_path / "sub" / "dd.jpeg")
    frame = build_manifest("csv", tmp_path)
    assert [Path(p).name for p in frame["path"]] == ["a.png", "b.jpg", "c.tif", "dd.jpeg"]
    assert list(frame["category"]) == ["melanoma", "benign", "bcc", "benign"]
    assert list(frame["group"]) == ["L1", "L1", "c.tif", "d"]
    assert list(frame["difficulty"]) == ["high", "", "low", ""]
    assert len(build_manifest("csv", tmp_path / "labels.csv")) == 4  # the file itself as root


# --- bad input -------------------------------------------------------------------------------

def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(PipelineError) as err:
        build_manifest("atlas", tmp_path)
    assert "unknown dataset 'atlas'" in str(err.value)
    assert all(name in str(err.value) for name in DATASETS)


def test_keep_acral_is_refused_where_it_would_do_nothing(tmp_path):
    with pytest.raises(PipelineError, match="--keep-acral applies to derm7pt only"):
        build_manifest("isic2020", make_isic2020(tmp_path), keep_acral=True)


def test_duplicate_image_ids_name_their_rows(tmp_path):
    write_rows(tmp_path / "labels.csv", [["image", "diagnosis"], ["a", "nevus"], ["b", "nevus"],
                                         ["a", "melanoma"]])
    image(tmp_path / "a.jpg")
    image(tmp_path / "b.jpg")
    with pytest.raises(PipelineError) as err:
        build_manifest("csv", tmp_path)
    assert str(err.value) == ("image ids must be unique; 1 appear more than once: 'a' in "
                              f"{tmp_path / 'labels.csv'}, rows 2, 4")


def test_missing_images_listed_with_rows_and_count(tmp_path):
    make_derm7pt(tmp_path)
    for derm in ("NEL/Nel026.jpg", "Gzl/gzl01.jpg"):
        (tmp_path / "images" / derm).unlink()
    with pytest.raises(PipelineError) as err:
        build_manifest("derm7pt", tmp_path)
    message = str(err.value)
    assert message.startswith("2 of 6 image files are missing")
    assert "Nel026.jpg" in message and "meta.csv, row 2" in message and "row 9" in message
    assert "--no-check-images" in message
    assert len(build_manifest("derm7pt", tmp_path, check_images=False)) == 6


def test_rows_longer_than_the_header_are_refused(tmp_path):
    write_rows(tmp_path / "labels.csv", [["image", "diagnosis"], ["a", "nevus", "oops"]])
    with pytest.raises(PipelineError, match=r"cannot read .*labels.csv as CSV: .*no more"):
        build_manifest("csv", tmp_path)


def test_missing_table_and_missing_root(tmp_path):
    with pytest.raises(PipelineError, match=r"trainLabels.csv not found"):
        build_manifest("retinopathy", tmp_path)
    with pytest.raises(PipelineError, match=r"--root .*nowhere does not exist"):
        build_manifest("retinopathy", tmp_path / "nowhere")


# --- manifest files --------------------------------------------------------------------------

def test_write_read_round_trip(tmp_path):
    data = make_derm7pt(tmp_path / "data")
    frame = build_manifest("derm7pt", data)
    out = tmp_path / "work" / "manifest.csv"
    write_manifest(frame, out)
    with open(out) as handle:
        assert handle.readline().strip().split(",") == list(MANIFEST_COLUMNS) + ["case_num"]
    back = read_manifest(out)
    assert back.drop(columns=["abspath", "path", "_where"]).equals(frame.drop(columns=["path", "_where"]))
    assert back["_where"].tolist() == [f"{out}, row {i}" for i in range(2, len(back) + 2)]
    assert list(back["abspath"]) == list(frame["path"])
    assert back["path"].iloc[0] == "../data/images/NEL/Nel026.jpg"  # relative to the manifest
    assert all(dtype == object or str(dtype) == "str" for dtype in back.dtypes)
    # Rewriting a read manifest elsewhere keeps it pointing at the same files.
    write_manifest(back, tmp_path / "other" / "deeper" / "m.csv")
    again = read_manifest(tmp_path / "other" / "deeper" / "m.csv")
    assert list(again["abspath"]) == list(frame["path"])


@pytest.mark.parametrize("edit, expected", [
    (lambda f: f.drop(columns=["group"]), r"has no column 'group'.*columns found: image, path"),
    (lambda f: f.assign(image=["x", "y", "x"]), r"image ids must be unique; 1 appear more than "
     r"once: 'x' in .*manifest.csv, rows 2, 4"),
    (lambda f: f.assign(image=["x", "", "z"]), r"manifest.csv, row 3 has no image id"),
    (lambda f: f.assign(category=["benign", "malignant", "bcc"]), r"manifest.csv, row 3: category "
     r"'malignant' is not allowed; expected melanoma, bcc, benign, 0"),
])
def test_read_manifest_rejects_bad_tables(tmp_path, edit, expected):
    good = pd.DataFrame({c: ["a", "b", "c"] for c in MANIFEST_COLUMNS}).assign(category="benign")
    path = tmp_path / "manifest.csv"
    edit(good).to_csv(path, index=False)
    with pytest.raises(PipelineError, match=expected):
        read_manifest(path)


# --- command line ----------------------------------------------------------------------------

def test_cli_data(tmp_path, capsys):
    data = make_derm7pt(tmp_path / "derm7pt")
    out = tmp_path / "manifest.csv"
    assert main(["data", "--dataset", "derm7pt", "--root", str(data), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote 6 images" in text and "(3 melanoma, 1 bcc, 2 benign)" in text
    assert "in 5 groups" in text and "Excluded 2 acral lesions" in text
    assert len(read_manifest(out)) == 6

    assert main(["data", "--dataset", "derm7pt", "--root", str(data), "--out", str(out),
                 "--keep-acral"]) == 0
    assert "wrote 8 images" in capsys.readouterr().out and len(read_manifest(out)) == 8

    (data / "images" / "NEL" / "Nel026.jpg").unlink()
    assert main(["data", "--dataset", "derm7pt", "--root", str(data), "--out", str(out)]) == 2
    assert "1 of 6 image files are missing" in capsys.readouterr().err
    assert main(["data", "--dataset", "derm7pt", "--root", str(data), "--out", str(out),
                 "--no-check-images"]) == 0
    assert "not checked" in capsys.readouterr().out

    assert main(["data", "--dataset", "nope", "--root", str(data), "--out", str(out)]) == 2
    assert "Known datasets: derm7pt" in capsys.readouterr().err


# --- paths, encodings, rows (pipeline.data.published) ----------------------------------------

def test_image_paths_that_leave_the_datasets_folder_are_refused(tmp_path):
    outside = tmp_path / "outside" / "x.jpg"
    image(outside)
    root = tmp_path / "data" / "set"
    write_rows(root / "labels.csv", [["image", "diagnosis", "path"],
                                     ["a", "nevus", "../../outside/x.jpg"]])
    with pytest.raises(PipelineError) as info:
        build_manifest("csv", root)
    message = str(info.value)
    assert "labels.csv, row 2" in message and "'../../outside/x.jpg'" in message
    assert "points outside the dataset's folder" in message
    write_rows(root / "labels.csv", [["image", "diagnosis", "path"], ["a", "nevus", str(outside)]])
    with pytest.raises(PipelineError, match="points outside"):
        build_manifest("csv", root)  # an absolute path elsewhere leaves it too
    rows = [("clark nevus", "low", "back", "../../../outside/x.jpg", "")]
    with pytest.raises(PipelineError, match=r"meta.csv, row 2: derm .*points outside"):
        build_manifest("derm7pt", _derm7pt_with(tmp_path / "derm7pt", rows))


def _derm7pt_with(root: Path, rows) -> Path:
    table = [DERM7PT_HEADER] + [[dict(case_num="1", diagnosis=d, location=loc, sex="female",
                                      level_of_diagnostic_difficulty=dif, derm=derm,
                                      case_id=case).get(c, "x") for c in DERM7PT_HEADER]
                                for d, dif, loc, derm, case in rows]
    write_rows(root / "meta" / "meta.csv", table)
    return root


def test_a_label_file_that_is_not_utf8_names_its_row_and_the_fix(tmp_path):
    root = make_derm7pt(tmp_path / "derm7pt")
    meta = root / "meta" / "meta.csv"
    lines = meta.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"female", b"f\xe9minin")  # Latin-1 é in data row 3 (file row 4)
    meta.write_bytes(b"\n".join(lines))
    with pytest.raises(PipelineError) as info:
        build_manifest("derm7pt", root)
    message = str(info.value)
    assert "is not UTF-8 text: row 4 has the byte 0xe9" in message and "iconv" in message


def test_bad_images_of_the_data_stage_cite_the_label_files_row(tmp_path):
    from pipeline.data.image_cache import build_image_cache

    root = make_derm7pt(tmp_path / "derm7pt")
    (root / "images" / "NCL" / "Ncl004.jpg").write_bytes(b"not a jpeg")
    frame = build_manifest("derm7pt", root)
    with pytest.raises(PipelineError) as info:
        build_image_cache(frame.assign(abspath=frame["path"]), tmp_path / "cache", 16, n_jobs=1,
                          progress=False)
    # Ncl004 is data row 7 of meta.csv (file row 8), the 5th image once the acral rows are out.
    assert f"{root / 'meta' / 'meta.csv'}, row 8, file" in str(info.value)
