"""Tests for pipeline.demo.isic2020: ISIC 2020's layout read by the project's own adapter,
patients and metadata as documented, the planted metadata signal, determinism, the command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pipeline.classifiers.metadata import MetadataEncoder
from pipeline.cli import main
from pipeline.data.datasets import build_manifest
from pipeline.demo.isic2020 import COLUMNS, write_isic2020_demo
from pipeline.errors import PipelineError


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("kr") / "isic2020"
    write_isic2020_demo(out, seed=3, cases=200)
    return out


def test_layout_is_read_by_the_isic2020_adapter(demo):
    table = pd.read_csv(demo / "train.csv", dtype=str, keep_default_na=False)
    assert tuple(table.columns) == COLUMNS and len(table) == 200
    manifest = build_manifest("isic2020", demo)
    assert len(manifest) == 200
    assert set(manifest["category"]) == {"melanoma", "benign"}
    assert (manifest["group"] == table["patient_id"].to_numpy()).all()
    assert manifest["group"].nunique() < 150  # patients with several images
    # one diagnosis and one metadata record per patient
    per_patient = table.groupby("patient_id")[["diagnosis", "sex", "age_approx"]].nunique()
    assert (per_patient == 1).all().all()
    assert (table["age_approx"] == "").any() and (table["sex"] == "").any()
    share = (table["target"] == "1").mean()
    assert 0.2 < share < 0.4


def test_metadata_alone_carries_the_planted_signal(demo):
    table = pd.read_csv(demo / "train.csv", dtype=str, keep_default_na=False)
    frame = table.rename(columns={"age_approx": "age", "anatom_site_general_challenge": "site"})
    y = table["target"].astype(int).to_numpy()
    patients = table["patient_id"].unique()
    train = table["patient_id"].isin(patients[: len(patients) * 2 // 3]).to_numpy()
    encoder = MetadataEncoder(["age", "sex", "site"]).fit(frame[train])
    model = LogisticRegression().fit(encoder.transform(frame[train]), y[train])
    auc = roc_auc_score(y[~train], model.decision_function(encoder.transform(frame[~train])))
    assert auc > 0.75, auc
    melanoma_age = pd.to_numeric(frame.loc[y == 1, "age"], errors="coerce").mean()
    benign_age = pd.to_numeric(frame.loc[y == 0, "age"], errors="coerce").mean()
    assert melanoma_age - benign_age > 10


def test_same_seed_same_files_and_refusals(demo, tmp_path):
    again = tmp_path / "again"
    write_isic2020_demo(again, seed=3, cases=200)
    assert (again / "train.csv").read_bytes() == (demo / "train.csv").read_bytes()
    name = pd.read_csv(demo / "train.csv")["image_name"].iloc[7]
    assert (again / "train" / f"{name}.jpg").read_bytes() == \
        (demo / "train" / f"{name}.jpg").read_bytes()
    with pytest.raises(PipelineError, match="holds no ISIC 2020 demo"):
        write_isic2020_demo(again, seed=4, cases=200)
    with pytest.raises(PipelineError, match=">= 20"):
        write_isic2020_demo(tmp_path / "tiny", cases=5)


def test_command(tmp_path, capsys):
    assert main(["demo-data", "--layout", "isic2020", "--out", str(tmp_path / "d"),
                 "--cases", "24"]) == 0
    assert len(pd.read_csv(tmp_path / "d" / "train.csv")) == 24
    assert main(["demo-data", "--layout", "isic2020", "--out", str(tmp_path / "d"),
                 "--cases", "24"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["demo-data", "--layout", "isic2020", "--out", str(tmp_path / "e"),
                 "--skin-cases", "30"]) == 2
