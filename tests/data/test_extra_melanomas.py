"""``data.extra_dataset``: Kim & Rocheteau's extra malignant cases from a second dataset, added
(melanoma cases only) to the target's before the split, so the hold-out's invariants still hold."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from pipeline.errors import PipelineError

EXPERIMENT = """
[experiment]
name = "x"
cells = ["none+ft"]
[data]
dataset = "isic2020"
root = "{root}"
{extra}
[folds]
designs = ["melanoma_vs_benign"]
scheme = "holdout"
runs = 2
[network]
name = "standard-cnn"
input_size = 32
[classifier]
kind = "network"
"""


def _renamed_copy(source, out):
    """An ISIC 2020-layout dataset with its own image and patient ids (prefix X)."""
    (out / "train").mkdir(parents=True)
    table = pd.read_csv(source / "train.csv", dtype=str, keep_default_na=False)
    for name in table["image_name"]:
        os.link(source / "train" / f"{name}.jpg", out / "train" / f"X{name}.jpg")
    table["image_name"] = "X" + table["image_name"]
    table["patient_id"] = "X" + table["patient_id"]
    table.to_csv(out / "train.csv", index=False)
    return table


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from pipeline.demo.isic2020 import write_isic2020_demo

    root = tmp_path_factory.mktemp("extra")
    write_isic2020_demo(root / "target", seed=3, cases=40)
    write_isic2020_demo(root / "second", seed=4, cases=40)
    extra = _renamed_copy(root / "second", root / "extra")
    return root, extra


def _run(tmp_path, root, extra_lines, monkeypatch):
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "features_cache").mkdir(exist_ok=True)
    config = tmp_path / "x.toml"
    config.write_text(EXPERIMENT.format(root=root / "target", extra=extra_lines))
    for stage in ("data", "folds"):
        assert main([stage, "--config", str(config)]) == 0
    return pd.read_csv(tmp_path / "x" / "manifest.csv", dtype=str, keep_default_na=False), \
        pd.read_csv(tmp_path / "x" / "folds" / "melanoma_vs_benign.csv")


def test_extra_melanomas_join_before_the_split(datasets, tmp_path, monkeypatch):
    root, extra = datasets
    target = pd.read_csv(root / "target" / "train.csv", dtype=str)
    lines = f'extra_dataset = "isic2020"\nextra_root = "{root / "extra"}"'
    manifest, folds = _run(tmp_path, root, lines, monkeypatch)
    added = manifest[manifest["image"].str.startswith("X")]
    melanomas = extra.loc[extra["target"] == "1", "image_name"]
    assert sorted(added["image"]) == sorted(melanomas) and len(melanomas) > 0
    assert (added["category"] == "melanoma").all()  # never the extra benign cases
    assert len(manifest) == len(target) + len(melanomas)
    # split with the rest by the grouped 60/20/20 split (as the paper split its 37,648 images), and the
    # folds stage's invariants held (it checks them before writing)
    first = folds[folds["repeat"] == 1]
    assert set(first["image"]) == set(manifest["image"])
    parts = set(first.loc[first["image"].isin(added["image"]), "half"])
    assert 1 in parts and parts - {1}, parts  # not the training part only


def _prepare(tmp_path, root, extra_lines, monkeypatch):
    from pipeline.experiment.config import load_config
    from pipeline.stages.data import prepare_data

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "x.toml"
    config.write_text(EXPERIMENT.format(root=root / "target", extra=extra_lines))
    prepare_data(load_config(config))


def test_extra_dataset_errors_name_the_keys(datasets, tmp_path, monkeypatch):
    root, _ = datasets
    _run = _prepare
    with pytest.raises(PipelineError, match=r"data.extra_dataset = 'isic2020' needs data.extra_root"):
        _run(tmp_path, root, 'extra_dataset = "isic2020"', monkeypatch)
    with pytest.raises(PipelineError, match=r"data.extra_root .* data.extra_dataset is not"):
        _run(tmp_path, root, f'extra_root = "{root / "extra"}"', monkeypatch)
    # the same dataset twice: its images (and patients) would be in the split twice
    with pytest.raises(PipelineError, match=r"shares \d+ image ids with data.root"):
        _run(tmp_path, root, f'extra_dataset = "isic2020"\nextra_root = "{root / "second"}"',
             monkeypatch)
    with pytest.raises(PipelineError, match=str(root / "nowhere")):
        _run(tmp_path, root, f'extra_dataset = "isic2020"\nextra_root = "{root / "nowhere"}"',
             monkeypatch)


def test_report_header_declares_the_extra_cases_and_the_holdout_svm(datasets, tmp_path):
    from pipeline.experiment.config import load_config
    from pipeline.stages.report import experiment_header

    root, _ = datasets
    config = tmp_path / "x.toml"
    text = EXPERIMENT.format(root=root / "target", extra="").replace('kind = "network"',
                                                                      'kind = "svm"')
    config.write_text(text)
    header = experiment_header(load_config(config))
    assert "no extra malignant cases" in header["dataset"]
    assert "chosen by AUC on the hold-out's validation part" in header["svm"]
    config.write_text(EXPERIMENT.format(root=root / "target", extra=(
        f'extra_dataset = "isic2020"\nextra_root = "{root / "extra"}"')))
    header = experiment_header(load_config(config))
    assert f"+ the melanoma cases of isic2020 ({root / 'extra'}), added before the split" in \
        header["dataset"]
