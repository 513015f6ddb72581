"""End-to-end tests of ``export`` and ``predict`` on the tiny demo experiment of
tests/stages/test_explain.py (VGG-M at 48 px and 1/16 width, cells none, none+ft and retinopathy,
2 repeats), built once per module: an exported run's ``predict`` on the original image files
reproduces its ``predictions.csv`` scores; a newer schema, a changed or missing file, an
unreadable image and metadata options are refused; ``--all-data`` fits the SVM on every image
(checked against an independent scikit-learn fit) and, for a fine-tuned cell, fine-tunes the
network on every image first (cached: a second export trains nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import normalize
from sklearn.svm import SVC

from experiment_fixture import build_tiny, out
from pipeline.cli import main

pytestmark = pytest.mark.slow

SVM = """
[svm]
C_grid = [10.0, 1000.0]  # large C: scores spread over a wide range, so 1e-5 is a sharp check
validation_fraction = 0.4  # the 3-class design: every class in the validation split
"""
DESIGN = "melanoma_vs_benign"
POSITIVE, NEGATIVE = "melanoma", "benign"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny"),
                      designs=(DESIGN, "melanoma_vs_bcc_vs_benign"), extra=SVM)


def files_of(config: Path) -> dict[str, str]:
    """Image id -> its original file, from the experiment's manifest."""
    from pipeline.data.manifest import read_manifest

    table = read_manifest(out(config, "manifest.csv"))
    return dict(zip(table["image"], table["abspath"]))


def run_rows(config: Path, cell: str, repeat: int, half: int) -> pd.DataFrame:
    table = pd.read_csv(out(config, "predictions.csv"), dtype={"image": str})
    source, finetune = cell.partition("+")[0], cell.endswith("+ft")
    return table[(table["source"] == source) & (table["finetune"] == finetune)
                 & (table["design"] == DESIGN) & (table["repeat"] == repeat)
                 & (table["test_half"] == half)].reset_index(drop=True)


def export(config: Path, cell: str, folder: Path, *which: str) -> int:
    return main(["export", "--config", str(config), "--cell", cell, "--design", DESIGN,
                 *which, "--out", str(folder)])


@pytest.fixture(scope="module")
def exported(experiment, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "retinopathy"
    assert export(experiment, "retinopathy", folder, "--run", "1/2") == 0
    return folder


@pytest.mark.parametrize("cell, run", [("none+ft", (2, 1)), ("retinopathy", (1, 2)),
                                       ("none", (2, 2))])
def test_predict_on_the_original_files_reproduces_the_runs_scores(experiment, tmp_path, cell,
                                                                  run):
    folder = tmp_path / "model"
    assert export(experiment, cell, folder, "--run", f"{run[0]}/{run[1]}") == 0
    rows = run_rows(experiment, cell, *run)
    paths = [files_of(experiment)[i] for i in rows["image"]]
    # The experiment folder is not needed: predict only reads the model folder and the images.
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)
    assert main(["predict", "--model", str(moved), "--image", *paths,
                 "--out", str(tmp_path / "scores.csv")]) == 0
    got = pd.read_csv(tmp_path / "scores.csv")
    assert got["image"].tolist() == paths
    gap = float(np.max(np.abs(got["score"].to_numpy() - rows["score"].to_numpy())))
    print(f"{cell} run {run}: max |predict - predictions.csv| = {gap:.2e}")
    assert gap < 1e-5, f"{cell}: predict's scores differ from predictions.csv by up to {gap}"
    want = np.where(rows["score"] > 0, POSITIVE, NEGATIVE)
    assert (got["predicted"].to_numpy() == want).all()
    assert np.ptp(rows["score"]) > 0.1, "scores too close together for a sharp check"
    # The chain before the SVM on its own: the network's features of the decoded files are the
    # cached features the run was scored on.
    from pipeline.features.extraction import load_features
    from pipeline.serving.folder import read_model_folder
    from pipeline.serving.predict import decode_images, image_features

    model = read_model_folder(moved)
    mine = image_features(model.load_network(), model.mean, decode_images(model, paths))
    cached, ids = load_features(json.loads((moved / "model.json").read_text())
                                ["provenance"]["features_entry"])
    np.testing.assert_allclose(mine, np.asarray(cached)[[ids.index(i) for i in rows["image"]]],
                               rtol=1e-4, atol=1e-6, err_msg=f"{cell}: features of the files")
    info = json.loads((moved / "model.json").read_text())
    metrics = pd.read_csv(out(experiment, "metrics.csv"))
    source, finetune = cell.partition("+")[0], cell.endswith("+ft")
    row = metrics[(metrics["source"] == source) & (metrics["finetune"] == finetune)
                  & (metrics["repeat"] == run[0]) & (metrics["test_half"] == run[1])].iloc[0]
    assert info["provenance"]["metrics"]["auc"] == pytest.approx(row["auc"])
    assert info["svm"]["C"] == pytest.approx(row["C"])
    assert info["provenance"]["run"] == f"{run[0]}/{run[1]}"
    assert info["metadata"]["features"] == []
    assert info["image"]["size"] == [48, 48]
    assert (moved / "config.toml").read_text() == experiment.read_text()


def predict_error(model: Path, capsys, *paths: str, extra=()) -> str:
    assert main(["predict", "--model", str(model), "--image", *paths, *extra]) == 2
    return capsys.readouterr().err


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    return folder


@pytest.fixture(scope="module")
def an_image(experiment) -> str:
    return next(iter(files_of(experiment).values()))


def test_a_three_class_run_predicts_one_score_per_class(experiment, tmp_path):
    from pipeline.data.designs import get_design

    design = get_design("melanoma_vs_bcc_vs_benign")
    folder = tmp_path / "model3"
    assert main(["export", "--config", str(experiment), "--cell", "none+ft", "--design",
                 design.name, "--run", "1/1", "--out", str(folder)]) == 0
    table = pd.read_csv(out(experiment, "predictions.csv"), dtype={"image": str})
    rows = table[(table["source"] == "none") & (table["finetune"]) & (table["design"] ==
                 design.name) & (table["repeat"] == 1) & (table["test_half"] == 1)]
    paths = [files_of(experiment)[i] for i in rows["image"]]
    assert main(["predict", "--model", str(folder), "--image", *paths,
                 "--out", str(tmp_path / "s.csv")]) == 0
    got = pd.read_csv(tmp_path / "s.csv")
    columns = [f"score_{c}" for c in design.classes]
    assert list(got.columns) == ["image", *columns, "predicted"]
    gap = float(np.max(np.abs(got[columns].to_numpy() - rows[columns].to_numpy())))
    print(f"none+ft 3-class run 1/1: max |predict - predictions.csv| = {gap:.2e}")
    assert gap < 1e-5
    want = np.asarray(design.classes)[rows[columns].to_numpy().argmax(axis=1)]
    assert (got["predicted"].to_numpy() == want).all()


def test_a_newer_schema_version_is_refused(copy, capsys, an_image):
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    manifest["schema_version"] = 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    err = predict_error(copy, capsys, an_image)
    assert "schema_version 2" in err and "newer" in err and "Upgrade" in err


@pytest.mark.parametrize("name", ["svm.npz", "network/model.weights.h5", "model.json"])
def test_a_changed_file_is_refused_naming_it(copy, capsys, an_image, name):
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other contents
    (copy / name).write_bytes(bytes(data))
    err = predict_error(copy, capsys, an_image)
    assert f"the SHA-256 of {name}" in err and "Export the model again" in err


def test_a_missing_file_is_refused_naming_it(copy, capsys, an_image):
    (copy / "network" / "model.weights.h5").unlink()
    err = predict_error(copy, capsys, an_image)
    assert "network/model.weights.h5 is missing" in err


def test_an_image_that_cannot_be_decoded_is_refused_naming_it(exported, tmp_path, capsys,
                                                               an_image):
    bad = tmp_path / "lesion.jpg"
    bad.write_bytes(b"this is not a JPEG")
    err = predict_error(exported, capsys, an_image, str(bad))
    assert str(bad) in err and "not a readable image" in err and "leave it out" in err
    err = predict_error(exported, capsys, str(tmp_path / "absent.png"))
    assert "absent.png" in err and "file not found" in err


def test_metadata_options_are_refused_for_a_model_without_metadata(exported, capsys, an_image):
    err = predict_error(exported, capsys, an_image, extra=["--age", "54", "--site", "back"])
    assert "uses no clinical metadata" in err and "--age, --site" in err


def test_explain_writes_an_attribution_png_per_image(exported, tmp_path, an_image):
    assert main(["predict", "--model", str(exported), "--image", an_image, "--explain",
                 "--explain-dir", str(tmp_path), "--steps", "8"]) == 0
    pngs = list(tmp_path.glob("*_ig.png"))
    assert [p.name for p in pngs] == [f"{Path(an_image).stem}_ig.png"]
    with Image.open(pngs[0]) as image:
        assert image.format == "PNG" and image.width > 200


def test_all_data_fits_the_svm_on_every_image_as_scikit_learn_does(experiment, tmp_path):
    from pipeline.data.designs import apply_design
    from pipeline.data.manifest import read_manifest
    from pipeline.experiment.config import load_config
    from pipeline.features.extraction import load_features

    folder = tmp_path / "final"
    assert export(experiment, "retinopathy", folder, "--all-data") == 0
    config = load_config(experiment)
    labelled = apply_design(read_manifest(out(experiment, "manifest.csv")), DESIGN)
    index = pd.read_csv(out(experiment, "features.csv"), keep_default_na=False)
    features, ids = load_features(index[index["source"] == "retinopathy"]["entry"].iloc[0])
    X = normalize(np.asarray(features, np.float64)[[ids.index(i) for i in labelled["image"]]])
    y = (labelled["label"] == POSITIVE).to_numpy().astype(int)
    # C by the paper's selection, independently: one stratified 10% split, AUC, smaller C on ties.
    svm = config["svm"]
    train, val = next(StratifiedShuffleSplit(1, test_size=svm["validation_fraction"],
                                             random_state=config.seed).split(X, y))
    aucs = [roc_auc_score(y[val], SVC(kernel="linear", C=C).fit(X[train], y[train])
                          .decision_function(X[val])) for C in sorted(svm["C_grid"])]
    best = sorted(svm["C_grid"])[int(np.argmax(np.asarray(aucs) >= max(aucs) - 1e-12))]
    reference = SVC(kernel="linear", C=best).fit(X, y)
    info = json.loads((folder / "model.json").read_text())
    assert info["svm"]["C"] == best
    assert info["provenance"]["run"] == "all-data"
    assert info["provenance"]["n_train"] == len(labelled) > 32
    with np.load(folder / "svm.npz") as stored:
        scores = X @ stored["coef"][0] + stored["intercept"][0]
    # Both stop at libsvm's tolerance 1e-3 (on the Gram matrix vs the linear kernel: other
    # rounding, other SMO paths), so their scores agree to ~1e-3, not to float precision ...
    np.testing.assert_allclose(scores, reference.decision_function(X), atol=3e-3,
                               err_msg="all-data SVM vs scikit-learn's SVC on all images")
    # ... which still tells apart an SVM fitted on all images from one fitted on a training half.
    half = np.arange(len(y)) % 2 == 0
    on_half = SVC(kernel="linear", C=best).fit(X[half], y[half]).decision_function(X)
    assert np.max(np.abs(scores - on_half)) > 3e-2
    # And predict applies it to the original files through the whole chain.
    some = labelled["image"].tolist()[:6]
    assert main(["predict", "--model", str(folder), "--out", str(tmp_path / "s.csv"), "--image",
                 *[files_of(experiment)[i] for i in some]]) == 0
    got = pd.read_csv(tmp_path / "s.csv")["score"].to_numpy()
    np.testing.assert_allclose(got, scores[:6], atol=1e-5, err_msg="predict vs all-data SVM")


def test_all_data_for_the_untrained_network_centres_it_on_every_image(experiment, tmp_path):
    folder = tmp_path / "final-none"
    assert export(experiment, "none", folder, "--all-data") == 0
    info = json.loads((folder / "model.json").read_text())
    from pipeline.data.designs import apply_design
    from pipeline.data.manifest import read_manifest

    labelled = apply_design(read_manifest(out(experiment, "manifest.csv")), DESIGN)
    paths = [files_of(experiment)[i] for i in labelled["image"]]
    from pipeline.data.images import load_image

    pixels = np.stack([load_image(p, 48, crop_black_frame=True) for p in paths]).astype(np.float64)
    np.testing.assert_allclose(info["preprocessing"]["mean"], pixels.mean(axis=(0, 1, 2)),
                               rtol=1e-9, err_msg="the none network's mean over all images")
    assert info["provenance"]["n_train"] == len(labelled)


def test_all_data_fine_tunes_the_network_on_every_image_and_caches_it(experiment, tmp_path,
                                                                      capsys):
    from pipeline.data.designs import apply_design
    from pipeline.data.images import load_image
    from pipeline.data.manifest import read_manifest
    from pipeline.features.extraction import load_features
    from pipeline.folds.table import train_ids_digest

    labelled = apply_design(read_manifest(out(experiment, "manifest.csv")), DESIGN)
    ids = labelled["image"].tolist()
    folder = tmp_path / "final-ft"
    capsys.readouterr()
    assert export(experiment, "none+ft", folder, "--all-data") == 0
    first = capsys.readouterr().err
    info = json.loads((folder / "model.json").read_text())
    provenance = info["provenance"]
    # Trained on every image of the design: the SVM and the network.
    assert provenance["run"] == "all-data" and provenance["n_train"] == len(ids) > 32
    assert provenance["train_ids"] == train_ids_digest(ids)
    network = json.loads((folder / "network" / "manifest.json").read_text())
    assert network["train_ids"] == provenance["network_train_ids"] == train_ids_digest(ids)
    assert f"finetune none+ft {DESIGN} all-data: {len(ids)} images" in first
    # none+ft is centred on its training images' mean, here all of them (as finetune does).
    paths = [files_of(experiment)[i] for i in ids]
    pixels = np.stack([load_image(p, 48, crop_black_frame=True) for p in paths])
    np.testing.assert_allclose(info["preprocessing"]["mean"],
                               pixels.astype(np.float64).mean(axis=(0, 1, 2)), rtol=1e-5,
                               err_msg="the none+ft network's mean over all images")
    # Not one of the networks fine-tuned on a training half.
    finetuned = pd.read_csv(out(experiment, "finetuned.csv"))
    halves = finetuned[(finetuned["source"] == "none") & (finetuned["design"] == DESIGN)]
    digests = {json.loads((Path(e) / "manifest.json").read_text())["digest"]
               for e in halves["entry"]}
    assert len(halves) == len(digests) == 4
    assert network["digest"] == provenance["network_digest"] not in digests
    assert Path(provenance["network_entry"]).resolve() not in {
        Path(e).resolve() for e in halves["entry"]}
    # predict on the original files = the cached all-data features through svm.npz.
    features, feature_ids = load_features(provenance["features_entry"])
    assert feature_ids == ids
    with np.load(folder / "svm.npz") as stored:
        scores = (normalize(np.asarray(features, np.float64)) @ stored["coef"][0]
                  + stored["intercept"][0])
    assert np.ptp(scores) > 0.1, "scores too close together for a sharp check"
    some = [0, 1, len(ids) // 2, len(ids) - 1]
    assert main(["predict", "--model", str(folder), "--out", str(tmp_path / "s.csv"), "--image",
                 *[paths[i] for i in some]]) == 0
    got = pd.read_csv(tmp_path / "s.csv")["score"].to_numpy()
    np.testing.assert_allclose(got, scores[some], rtol=0, atol=1e-5,
                               err_msg="predict vs the all-data features through svm.npz")
    # A second export reuses the cached network and features: nothing is trained or extracted.
    weights = Path(provenance["network_entry"]) / "model.weights.h5"
    mtime = weights.stat().st_mtime_ns
    capsys.readouterr()
    assert export(experiment, "none+ft", tmp_path / "again", "--all-data") == 0
    second = capsys.readouterr().err
    assert f"finetune none+ft {DESIGN} all-data: cached" in second
    assert "images, 3 epochs" not in second and "features of" not in second
    assert weights.stat().st_mtime_ns == mtime
    again = json.loads((tmp_path / "again" / "model.json").read_text())["provenance"]
    assert again["network_digest"] == provenance["network_digest"]
    assert (tmp_path / "again" / "svm.npz").read_bytes() == (folder / "svm.npz").read_bytes()


def test_export_errors_name_the_fix(experiment, tmp_path, capsys):
    assert export(experiment, "imagenet", tmp_path / "m", "--run", "1/1") == 2
    assert "no run of cell imagenet" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    assert export(experiment, "retinopathy", tmp_path / "notes", "--run", "1/1") == 2
    assert "is not a model folder" in capsys.readouterr().err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # The 3-class `reference` classifier (Platt probabilities) has no linear model to write.
    assert main(["export", "--config", str(experiment), "--cell", "none", "--design",
                 "melanoma_vs_bcc_vs_benign", "--run", "1/1", "--set", "svm.selection=reference",
                 "--out", str(tmp_path / "ref3")]) == 2
    err = capsys.readouterr().err
    assert "Platt probabilities" in err and "svm.selection=paper" in err
    assert not (tmp_path / "ref3").exists()
