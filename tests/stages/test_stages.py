"""End-to-end tests of the stages on a tiny demo experiment (pipeline.stages: data, folds,
pretrain, finetune, features, svm, report), driven through the command line as `make` drives them.

One module-scoped experiment (48 synthetic cases, VGG-M at 48 px and 1/16 width, one design, 2
repeats) is built once; the tests then check the result files against independent computations,
the no-TensorFlow svm stage, resumption, caching and the errors for missing inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from experiment_fixture import STAGES as RESULT_STAGES
from experiment_fixture import build_tiny, out, run_stage, tiny_config
from pipeline.cli import main
from pipeline.errors import PipelineError

pytestmark = pytest.mark.slow

STAGES = [*RESULT_STAGES, "report"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny"), stages=STAGES)


def test_result_files_follow_the_contract(experiment):
    metrics = pd.read_csv(out(experiment, "metrics.csv"))
    predictions = pd.read_csv(out(experiment, "predictions.csv"))
    assert list(metrics.columns) == ["source", "finetune", "design", "repeat", "test_half", "auc",
                                     "auc_ovr", "ap", "accuracy", "sensitivity", "specificity",
                                     "f1", "n_train", "n_test", "C"]
    assert list(predictions.columns) == ["source", "finetune", "design", "repeat", "test_half",
                                         "image", "y_true", "score"]
    # 3 cells x 1 design x 2 repeats x 2 test halves
    assert len(metrics) == 12
    assert set(zip(metrics["source"], metrics["finetune"])) == {
        ("none", False), ("none", True), ("retinopathy", False)}
    assert (metrics["n_train"] + metrics["n_test"]).nunique() == 1


def test_metrics_agree_with_an_independent_computation_from_predictions(experiment):
    metrics = pd.read_csv(out(experiment, "metrics.csv"))
    predictions = pd.read_csv(out(experiment, "predictions.csv"))
    keys = ["source", "finetune", "design", "repeat", "test_half"]
    for key, run in predictions.groupby(keys):
        row = metrics.set_index(keys).loc[key]
        positive = (run["y_true"] == "melanoma").to_numpy()
        score = run["score"].to_numpy()
        decided = score > 0
        tp, tn = np.sum(decided & positive), np.sum(~decided & ~positive)
        # AUC by counting concordant pairs, ties counted half.
        diff = score[positive][:, None] - score[~positive][None, :]
        auc = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
        expected = {"auc": auc, "ap": average_precision_score(positive, score),
                    "accuracy": (tp + tn) / len(run), "sensitivity": tp / positive.sum(),
                    "specificity": tn / (~positive).sum()}
        for name, value in expected.items():
            assert np.isclose(row[name], value, atol=1e-9), f"{name} of run {key}"
        assert np.isclose(row["auc"], roc_auc_score(positive, score))
        assert row["n_test"] == len(run)


def test_report_tables_hold_the_numbers_of_metrics_csv(experiment):
    text = out(experiment, "report.md").read_text(encoding="utf-8")
    metrics = pd.read_csv(out(experiment, "metrics.csv"))
    assert "| scaled down (declared) | test scale |" in text
    lines = text.split("\n")
    start = lines.index("## Table 1: AUC (%) by transfer source")
    header = next(l for l in lines[start:] if l.startswith("| Design"))
    row = next(l for l in lines[start:] if l.startswith("| Melanoma vs. Benign"))
    cells = [c.strip() for c in header.strip("|").split("|")][1:]
    values = [c.strip() for c in row.strip("|").split("|")][1:]
    assert len(cells) == 3
    for title, value in zip(cells, values):
        cell = title[title.rindex("(") + 1:-1]
        source, finetune = cell.removesuffix("+ft"), cell.endswith("+ft")
        auc = 100 * metrics[(metrics["source"] == source) & (metrics["finetune"] == finetune)]["auc"]
        assert value == f"{auc.mean():.1f} ± {auc.std(ddof=1):.1f}", cell
    for picture in ("auc.png", "roc.png"):
        assert f"]({picture})" in text
        assert out(experiment, picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_on_the_demo_data_lowers_the_validation_loss(experiment):
    finetuned = pd.read_csv(out(experiment, "finetuned.csv"))
    assert len(finetuned) == 4  # none+ft x 1 design x 2 repeats x 2 training halves
    improved = []
    for entry in finetuned["entry"]:
        info = json.loads((Path(entry) / "manifest.json").read_text())
        losses = [row["val_loss"] for row in info["history"]]
        assert len(losses) == 3 and info["best_val_loss"] == min(losses)
        assert info["best_epoch"] == 1 + int(np.argmin(losses))
        improved.append(min(losses) < losses[0])
    # Validation halves of ~3 images per class are noisy: most runs, not all, must improve.
    assert sum(improved) >= len(improved) / 2, improved


def test_svm_stage_runs_without_tensorflow(experiment, tmp_path):
    code = ("import sys; from pipeline.cli import main; "
            f"assert main(['svm', '--config', {str(experiment)!r}]) == 0; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    before = out(experiment, "metrics.csv").read_bytes()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert out(experiment, "metrics.csv").read_bytes() == before, "svm is not deterministic"


def test_svm_reads_relative_entries_from_workers_started_elsewhere(experiment, tmp_path,
                                                                    monkeypatch):
    # features.csv may record entries relative to the working folder (a relative cache_dir);
    # joblib reuses worker processes, which keep the folder they started in.
    from joblib import Parallel, delayed

    copy = tmp_path / "copy.toml"
    copy.write_text(experiment.read_text() + "\n[svm]\nn_jobs = 2\n", encoding="utf-8")
    shutil.copytree(experiment.with_suffix(""), copy.with_suffix(""))
    index = pd.read_csv(out(copy, "features.csv"))
    index["entry"] = [os.path.relpath(e, tmp_path) for e in index["entry"]]
    index.to_csv(out(copy, "features.csv"), index=False)
    started_in = Parallel(n_jobs=2)(delayed(os.getcwd)() for _ in range(4))
    assert str(tmp_path) not in started_in
    monkeypatch.chdir(tmp_path)
    assert main(["svm", "--config", "copy.toml"]) == 0
    metrics = ["auc", "ap"]
    assert pd.read_csv(out(copy, "metrics.csv"))[metrics].equals(
        pd.read_csv(out(experiment, "metrics.csv"))[metrics])


def test_missing_features_name_the_cell_and_the_command(experiment, tmp_path):
    copy = tmp_path / "copy.toml"
    shutil.copy(experiment, copy)
    shutil.copytree(experiment.with_suffix(""), copy.with_suffix(""))
    index = pd.read_csv(out(copy, "features.csv"))
    index = index[~((index["source"] == "none") & index["finetune"] & (index["repeat"] == 2))]
    index.to_csv(out(copy, "features.csv"), index=False)
    from pipeline.stages.svm import run

    with pytest.raises(PipelineError, match=r"cell none\+ft.*repeat 2.*make features"):
        run(type("Args", (), {"config": str(copy)})())
    os.remove(out(copy, "features.csv"))
    with pytest.raises(PipelineError, match=r"features.csv is missing.*make features"):
        run(type("Args", (), {"config": str(copy)})())


def test_second_run_of_the_network_stages_reuses_every_entry(experiment, capsys):
    networks_before = out(experiment, "networks.json").read_text()
    cache = Path(json.loads(networks_before)["none"]["entry"]).parents[1]
    entries = {p: p.stat().st_mtime_ns for p in cache.glob("*/*/manifest.json")}
    capsys.readouterr()
    for stage in ("pretrain", "finetune", "features"):
        run_stage(stage, experiment)
    err = capsys.readouterr().err
    assert "pretrain none: cached" in err and "pretrain retinopathy: cached" in err
    assert "finetune none+ft melanoma_vs_benign repeat 1 half 1: cached" in err
    assert "features: 9 feature entries, 0 computed (all cached)" in err  # none: 1 per run
    assert out(experiment, "networks.json").read_text() == networks_before
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*/*/manifest.json")} == entries


def test_stage_without_its_input_names_the_make_target(tmp_path):
    config = tmp_path / "empty.toml"
    config.write_text(tiny_config(tmp_path, tmp_path / "cache"), encoding="utf-8")
    with pytest.raises(PipelineError, match=r"manifest.csv is missing.*make data"):
        from pipeline.stages.svm import run

        run(type("Args", (), {"config": str(config)})())


def test_two_features_stages_at_once_on_one_cache_make_one_valid_entry_each(experiment):
    """Two processes extracting the same entries: both succeed, each entry is computed once."""
    entries = [Path(e) for e in pd.read_csv(out(experiment, "features.csv"))["entry"]]
    before = {e: (e / "features.npy").read_bytes() for e in entries}
    for entry in entries:
        shutil.rmtree(entry)
    code = "from pipeline.cli import main; raise SystemExit(main(['features', '--config', %r]))"
    procs = [subprocess.Popen([sys.executable, "-c", code % str(experiment)],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for e in errors]
    computed = [int(e.split(" feature entries, ")[1].split()[0]) for e in errors]
    assert sum(computed) == len(entries), computed  # each entry computed by one of the two
    from pipeline.features.extraction import load_features

    for entry in entries:
        load_features(entry)  # complete and verified
        assert (entry / "features.npy").read_bytes() == before[entry]


def test_a_stale_skipped_list_is_removed_once_the_image_is_fixed(tmp_path):
    from pipeline.demo.writer import write_demo_data

    data = tmp_path / "data"
    write_demo_data(data, seed=2, skin_cases=24, fundus_images=20)
    config = tmp_path / "experiments" / "skip.toml"
    config.parent.mkdir()
    config.write_text(tiny_config(data, tmp_path / "cache", cells=("none",))
                      .replace("[data]", "[data]\nskip_bad_images = true"), encoding="utf-8")
    from pipeline.data.datasets import build_manifest

    victim = Path(build_manifest("derm7pt", data / "derm7pt")["path"].iloc[0])
    good = victim.read_bytes()
    victim.write_bytes(b"broken")
    run_stage("data", config)
    skipped = out(config, "skipped.csv")
    assert skipped.is_file() and len(pd.read_csv(skipped)) >= 1
    victim.write_bytes(good)
    run_stage("data", config)
    assert not skipped.exists(), "skipped.csv of a fixed image survived the rerun"


def test_the_untrained_network_is_centred_on_each_training_half_only(experiment):
    """No test image sets the features of a run: the `none` cell's mean is its training half's."""
    from pipeline.data.image_cache import CachedImages
    from pipeline.training.train import compute_mean

    index = pd.read_csv(out(experiment, "features.csv"), keep_default_na=False)
    none = index[(index["source"] == "none") & (index["finetune"].astype(str) == "False")]
    assert len(none) == 4  # 1 design x 2 repeats x 2 training halves
    folds = pd.read_csv(out(experiment, "folds/melanoma_vs_benign.csv"))
    for row in none.itertuples():
        manifest = json.loads((Path(row.entry) / "manifest.json").read_text())
        images = CachedImages(Path(row.entry).parents[1] / "images" / manifest["images"])
        train = folds[(folds["repeat"] == row.repeat) & (folds["half"] == row.train_half)]
        expected = compute_mean(images.get(train["image"].tolist()))
        everything = compute_mean(images.images)
        np.testing.assert_allclose(manifest["mean"], expected, rtol=1e-9)
        assert not np.allclose(manifest["mean"], everything, rtol=1e-6)
