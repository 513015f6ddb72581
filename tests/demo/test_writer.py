"""Tests for pipeline.demo (writer, lesions, skin, fundus): the synthetic derm7pt and
Kaggle retinopathy datasets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline import cli
from pipeline.demo.writer import is_current, write_demo_data
from pipeline.demo.fundus import draw_fundus
from pipeline.demo.lesions import CRITERIA, DERM7PT_COLUMNS, DIAGNOSES, lesion_plan, seven_point_score
from pipeline.demo.skin import SKIN_SIZE, add_frame, draw_lesion, draw_lesion_views
from pipeline.errors import PipelineError

SKIN, FUNDUS = 60, 40

# The derm7pt vocabulary (Kawahara et al.'s release) for every categorical column.
VOCABULARY = {
    "pigment_network": {"absent", "typical", "atypical"},
    "streaks": {"absent", "regular", "irregular"},
    "pigmentation": {"absent", "diffuse regular", "localized regular", "diffuse irregular",
                     "localized irregular"},
    "regression_structures": {"absent", "blue areas", "white areas", "combinations"},
    "dots_and_globules": {"absent", "regular", "irregular"},
    "blue_whitish_veil": {"absent", "present"},
    "vascular_structures": {"absent", "arborizing", "comma", "hairpin", "within regression",
                            "wreath", "dotted", "linear irregular"},
    "level_of_diagnostic_difficulty": {"low", "medium", "high"},
    "elevation": {"flat", "palpable", "nodular"},
    "location": {"abdomen", "acral", "back", "buttocks", "chest", "genital areas", "head neck",
                 "lower limbs", "upper limbs"},
    "sex": {"female", "male"},
    "management": {"excision", "clinical follow up", "no further examination"},
    "diagnosis": set(DIAGNOSES),
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _meta(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "derm7pt" / "meta" / "meta.csv", keep_default_na=False, dtype=str)


def _framed(image: Image.Image | Path) -> bool:
    """A black rectangular frame: the outermost rows and columns are all black."""
    with Image.open(image) if isinstance(image, Path) else image as picture:
        a = np.asarray(picture.convert("L"), float)
    return max(a[:3].max(), a[-3:].max(), a[:, :3].max(), a[:, -3:].max()) < 12


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo_data"
    write_demo_data(out, seed=0, skin_cases=SKIN, fundus_images=FUNDUS)
    return out


def test_same_seed_gives_identical_bytes(demo, tmp_path):
    again = tmp_path / "again"
    write_demo_data(again, seed=0, skin_cases=SKIN, fundus_images=FUNDUS)
    first, second = _files(demo), _files(again)
    assert first.keys() == second.keys()
    different = [name for name in first if first[name] != second[name]]
    assert not different, f"files differ between two runs with seed 0: {different[:5]}"


def test_different_seed_gives_different_data(tmp_path):
    zero, one = (_files(write_demo_data(tmp_path / str(seed), seed=seed, skin_cases=8,
                                        fundus_images=4)["root"]) for seed in (0, 1))
    assert zero["derm7pt/meta/meta.csv"] != one["derm7pt/meta/meta.csv"]
    assert zero["retinopathy/trainLabels.csv"] != one["retinopathy/trainLabels.csv"]
    images = [name for name in zero if name.endswith(".jpg")]
    assert len(images) == 16 and all(zero[name] != one[name] for name in images)


def test_meta_csv_has_the_derm7pt_columns_and_vocabulary(demo):
    meta = _meta(demo)
    assert tuple(meta.columns) == DERM7PT_COLUMNS
    assert len(meta) == SKIN
    assert meta["case_num"].astype(int).tolist() == list(range(1, SKIN + 1))
    for column, allowed in VOCABULARY.items():
        assert set(meta[column]) <= allowed, (column, set(meta[column]) - allowed)
    for _, row in meta.iterrows():
        assert int(row["seven_point_score"]) == seven_point_score(row[list(CRITERIA)].to_dict())
    pattern = re.compile(r"^[A-Z]{3}/[A-Z][a-z]{2}\d{3}\.jpg$")
    paths = pd.concat([meta["clinic"], meta["derm"]])
    assert paths.str.match(pattern).all() and paths.is_unique
    for rel in paths:
        with Image.open(demo / "derm7pt" / "images" / rel) as image:
            assert image.format == "JPEG" and image.size == SKIN_SIZE and image.mode == "RGB"


def test_split_index_files_cover_every_row_once_and_keep_lesions_whole(demo):
    meta, seen = _meta(demo), []
    for name in ("train", "valid", "test"):
        indexes = pd.read_csv(demo / "derm7pt" / "meta" / f"{name}_indexes.csv")
        assert list(indexes.columns) == ["indexes"]
        seen += indexes["indexes"].tolist()
        shared = meta.iloc[indexes["indexes"]]["case_id"]
        others = meta.drop(index=indexes["indexes"])["case_id"]
        assert not (set(shared) - {""}) & set(others)
    assert sorted(seen) == list(range(SKIN))


def test_class_mix_difficulty_and_acral_rows(demo):
    meta = _meta(demo)
    melanoma = meta["diagnosis"].str.startswith("melanoma").mean()
    bcc = (meta["diagnosis"] == "basal cell carcinoma").mean()
    assert 0.18 <= melanoma <= 0.32 and 0.07 <= bcc <= 0.18
    assert meta["diagnosis"].nunique() >= 9
    shares = meta["level_of_diagnostic_difficulty"].value_counts(normalize=True)
    for level, share in {"low": 0.381, "medium": 0.363, "high": 0.256}.items():
        assert abs(shares[level] - share) < 0.08, (level, shares.to_dict())
    acral = meta[meta["location"] == "acral"]
    assert 1 <= len(acral) <= 0.1 * SKIN
    assert acral["diagnosis"].str.contains("melanoma|clark nevus").all()


def test_shared_case_ids_are_two_views_of_one_lesion(demo):
    meta = _meta(demo)
    shared = meta[meta["case_id"] != ""]
    assert 0.1 <= len(shared) / SKIN <= 0.2
    groups = shared.groupby("case_id")
    assert (groups.size() == 2).all()
    assert (groups["diagnosis"].nunique() == 1).all()

    def pixels(rel):
        image = Image.open(demo / "derm7pt" / "images" / rel).convert("RGB").resize((48, 32))
        return np.asarray(image, float)

    # The second view differs (moved, relit) but is far closer to its twin than to other lesions.
    for _, pair in groups:
        a, b = (pixels(rel) for rel in pair["derm"])
        twin = np.abs(a - b).mean()
        strangers = [np.abs(a - pixels(rel)).mean() for rel in meta["derm"][:10]
                     if rel not in set(pair["derm"])]
        assert 0 < twin < np.median(strangers)


def test_black_frames_on_about_fifteen_percent_of_pictures(demo):
    meta = _meta(demo)
    framed = [_framed(demo / "derm7pt" / "images" / rel) for rel in meta["derm"]]
    assert sum(framed) == round(0.15 * SKIN)
    assert not any(_framed(demo / "derm7pt" / "images" / rel) for rel in meta["clinic"])


def test_train_labels_format_grade_mix_and_images(demo):
    labels = pd.read_csv(demo / "retinopathy" / "trainLabels.csv", dtype={"image": str})
    assert list(labels.columns) == ["image", "level"] and len(labels) == FUNDUS
    assert labels["image"].str.match(r"^\d+_(left|right)$").all() and labels["image"].is_unique
    eyes = labels["image"].str.split("_", expand=True)
    assert (eyes.groupby(0)[1].apply(sorted) == pd.Series([["left", "right"]] * (FUNDUS // 2),
                                                          index=sorted(set(eyes[0])))).all()
    counts = labels["level"].value_counts().reindex(range(5), fill_value=0)
    expected = np.array([0.73, 0.07, 0.15, 0.025, 0.025]) * FUNDUS
    assert np.all(np.abs(counts.to_numpy() - expected) <= 1), counts.to_dict()
    for image in labels["image"][:6]:
        with Image.open(demo / "retinopathy" / "train" / f"{image}.jpeg") as picture:
            assert picture.format == "JPEG" and picture.size == (256, 256)
            a = np.asarray(picture.convert("RGB"), float)
        assert a[:8, :8].max() < 20 and a[-8:, -8:].max() < 20          # black corners
        centre = a[96:160, 96:160].mean(axis=(0, 1))
        assert centre[0] > centre[1] > centre[2] and centre[0] > 80      # orange-red retina


def test_fundus_lesions_increase_with_grade():
    def lesion_area(grade, seed):
        # Same generator state: the same eye and photograph; only the lesions differ.
        healthy = np.asarray(draw_fundus(np.random.default_rng(seed), 0), float)
        sick = np.asarray(draw_fundus(np.random.default_rng(seed), grade), float)
        return np.mean(np.abs(sick - healthy).sum(axis=2) > 30)

    area = [np.mean([lesion_area(grade, seed) for seed in range(3)]) for grade in range(5)]
    assert area[0] == 0 and 0 < area[1] < area[2] < area[3] < area[4], area


def test_fundus_grades_survive_the_demos_48_px_input():
    # The demo's networks see 48 px: a moderate grade (2) must still change over 6% of those
    # pixels visibly (a mean of 10 grey levels over the colour channels), a mild one (1) some.
    from PIL import Image

    def changed_share(grade, seed):
        small = [np.asarray(draw_fundus(np.random.default_rng(seed), g).resize(
            (48, 48), Image.BILINEAR), float) for g in (0, grade)]
        return np.mean(np.abs(small[1] - small[0]).mean(axis=2) > 10)

    share = {g: np.mean([changed_share(g, seed) for seed in range(4)]) for g in (1, 2, 4)}
    assert 0.002 < share[1] < share[2] < share[4] and share[2] > 0.06, share


def test_second_run_does_nothing_and_other_parameters_are_refused(demo):
    meta = demo / "derm7pt" / "meta" / "meta.csv"
    stamp = (meta.stat().st_mtime_ns, (demo / "manifest.json").stat().st_mtime_ns)
    assert is_current(demo, seed=0, skin_cases=SKIN, fundus_images=FUNDUS)
    paths = write_demo_data(demo, seed=0, skin_cases=SKIN, fundus_images=FUNDUS)
    assert paths["derm7pt_meta"] == meta
    assert (meta.stat().st_mtime_ns, (demo / "manifest.json").stat().st_mtime_ns) == stamp
    assert not is_current(demo, seed=1, skin_cases=SKIN, fundus_images=FUNDUS)
    with pytest.raises(PipelineError, match="seed=1"):
        write_demo_data(demo, seed=1, skin_cases=SKIN, fundus_images=FUNDUS)


@pytest.mark.parametrize("kwargs, message", [
    ({"fundus_images": 3}, "fundus_images must be an even number"),
    ({"skin_cases": 0}, "skin_cases must be >= 1"),
    ({"seed": -1}, "seed must be an integer"),
])
def test_bad_counts_are_refused(tmp_path, kwargs, message):
    with pytest.raises(PipelineError, match=message):
        write_demo_data(tmp_path / "out", **{"skin_cases": 4, "fundus_images": 2, **kwargs})
    assert not (tmp_path / "out").exists()


def test_refuses_to_write_into_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PipelineError, match="no demo-data manifest"):
        write_demo_data(tmp_path, skin_cases=2, fundus_images=2)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli_writes_then_reports_nothing_to_do(tmp_path, capsys):
    argv = ["demo-data", "--out", str(tmp_path / "d"), "--seed", "3", "--skin-cases", "4",
            "--fundus-images", "2"]
    assert cli.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(_meta(tmp_path / "d")) == 4
    assert cli.main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli.main(["demo-data", "--out", str(tmp_path / "e"), "--fundus-images", "5"]) == 2
    assert "even number" in capsys.readouterr().err


def test_drawing_functions_reject_unknown_values_and_frame_is_black():
    rng = np.random.default_rng(0)
    with pytest.raises(PipelineError, match="derm7pt"):
        draw_lesion(rng, "melanoma (huge)", "low")
    with pytest.raises(PipelineError, match="grade"):
        draw_fundus(rng, 5)
    image = draw_lesion(rng, "clark nevus", "low")
    assert image.size == SKIN_SIZE and not _framed(image) and _framed(add_frame(rng, image))


def test_views_share_the_lesion_and_respect_the_plan():
    plan = lesion_plan(np.random.default_rng(1), "melanoma (0.76 to 1.5 mm)", "low")
    one, other = draw_lesion_views(np.random.default_rng(2), plan,
                                   [{}, {"angle": 5, "zoom": 1.05, "shift": (4, -3)}])
    assert one.size == other.size == SKIN_SIZE
    assert np.asarray(one).tobytes() != np.asarray(other).tobytes()
    assert plan["x"] > 0.6   # a textbook (low difficulty) melanoma is clearly atypical


def _histogram(image: Image.Image) -> np.ndarray:
    """Simple colour features: 8-bin histograms of R, G, B, H, S and V."""
    small = image.resize((96, 64))
    channels = np.concatenate([np.asarray(small), np.asarray(small.convert("HSV"))], axis=2)
    return np.concatenate([np.histogram(channels[..., c], bins=8, range=(0, 256))[0]
                           for c in range(6)]) / (96 * 64)


def test_melanoma_is_learnable_from_colour_and_harder_when_difficult():
    melanomas = [d for d in DIAGNOSES if d.startswith("melanoma")]
    others = [d for d in DIAGNOSES if d not in melanomas]
    weights = np.array([DIAGNOSES[d][0] for d in others], float)
    auc = {}
    for difficulty in ("low", "high"):
        rng = np.random.default_rng(7)
        diagnoses = [melanomas[i % 3] for i in range(36)] + list(
            rng.choice(others, 36, p=weights / weights.sum()))
        features = np.array([_histogram(draw_lesion(rng, d, difficulty)) for d in diagnoses])
        y = np.array([d in melanomas for d in diagnoses], int)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        auc[difficulty] = cross_val_score(model, features, y, scoring="roc_auc", cv=StratifiedKFold(
            4, shuffle=True, random_state=0)).mean()
    assert auc["low"] > 0.75, auc
    assert auc["low"] > auc["high"] + 0.05, auc
