"""End-to-end: Kim & Rocheteau's protocol on a tiny ISIC 2020 layout (pipeline.stages with
``folds.scheme = "holdout"`` and ``classifier.kind = "network"``): the scores in predictions.csv
are the fine-tuned networks' own outputs on those images, each run has its own seed and the
split's validation part, and the report is written from the same result files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.experiment.config import load_config

pytestmark = pytest.mark.slow

CONFIG = """
[experiment]
name = "kr-tiny"
seed = 4
cells = ["none+ft"]
cache_dir = "{cache}"
scaled_down = "test scale"

[data]
dataset = "isic2020"
root = "{root}"

[folds]
designs = ["melanoma_vs_benign"]
scheme = "holdout"
runs = 2

[network]
name = "standard-cnn"
input_size = 32

[train]
epochs = 3
batch_size = 8
learning_rate = 0.003
optimizer = "adam"
early_stopping_patience = 2
lr_decay_factor = 0.4
augment = "all"
brightness_range = 0.1
saturation_range = 0.1

[classifier]
kind = "network"
metadata = {metadata}

[extract]
batch_size = 8
"""


def write_isic2020(root, patients: int = 40, seed: int = 0) -> pd.DataFrame:
    """ISIC 2020's train.csv and train/*.jpg: melanomas carry a bright blob."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    rows = []
    for p in range(patients):
        for _ in range(int(rng.integers(1, 3))):
            name = f"ISIC_{len(rows):07d}"
            melanoma = rng.random() < 0.35
            pixels = rng.integers(40, 90, (32, 32, 3), dtype=np.uint8)
            if melanoma:
                r, c = rng.integers(4, 20, 2)
                pixels[r:r + 10, c:c + 10] = rng.integers(190, 255, (10, 10, 3))
            Image.fromarray(pixels).save(root / "train" / f"{name}.jpg", quality=95)
            rows.append({"image_name": name, "patient_id": f"IP_{p:04d}",
                         "sex": rng.choice(["male", "female", ""]),
                         "age_approx": str(int(rng.integers(3, 18)) * 5),
                         "anatom_site_general_challenge": rng.choice(["torso", "head/neck"]),
                         "diagnosis": "melanoma" if melanoma else "nevus",
                         "benign_malignant": "malignant" if melanoma else "benign",
                         "target": int(melanoma)})
    table = pd.DataFrame(rows)
    table.to_csv(root / "train.csv", index=False)
    return table


@pytest.fixture(scope="module", params=[[], ["age", "sex", "site"]],
                ids=["images-only", "metadata-branch"])
def experiment(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("kr")
    write_isic2020(root / "isic2020")
    config = root / "experiments" / "kr.toml"
    config.parent.mkdir()
    config.write_text(CONFIG.format(root=root / "isic2020", cache=root / "cache",
                                    metadata=str(request.param).replace("'", '"')),
                      encoding="utf-8")
    for stage in ("data", "folds", "pretrain", "finetune", "features", "svm", "report"):
        assert main([stage, "--config", str(config)]) == 0, stage
    return config


def test_scores_are_the_networks_outputs_on_the_test_images(experiment):
    from pipeline.classifiers.metadata import MetadataEncoder
    from pipeline.data.images import load_image
    from pipeline.models.preprocessing import preprocess
    from pipeline.training import netstore

    config = load_config(experiment)
    out = experiment.with_suffix("")
    predictions = pd.read_csv(out / "predictions.csv")
    finetuned = pd.read_csv(out / "finetuned.csv")
    folds = pd.read_csv(out / "folds" / "melanoma_vs_benign.csv")
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert sorted(predictions["repeat"].unique()) == [1, 2]
    seeds = []
    for row in finetuned.itertuples():
        net = netstore.load(row.entry)
        seeds.append(net.info["seed"])
        test = folds[(folds["repeat"] == row.repeat) & (folds["half"] == 2)]["image"].tolist()
        mine = predictions[predictions["repeat"] == row.repeat].set_index("image").loc[test]
        paths = manifest.set_index("image").loc[test, "path"]
        # decoded here as the image cache decodes (black-frame crop on, the default)
        pixels = np.stack([load_image(out / p, 32, crop_black_frame=True) for p in paths])
        x = preprocess(net.spec, pixels.astype(np.float32), net.mean)
        keys = list(config["classifier"]["metadata"])
        if keys:  # the branch's input: the metadata encoded with the training part's statistics
            state = net.info["metadata"]
            train = folds[(folds["repeat"] == row.repeat) & (folds["half"] == 1)]["image"]
            rows = manifest.set_index("image")[keys]
            refit = MetadataEncoder(keys).fit(rows.loc[train])
            assert refit.state() == state  # fitted on the training part only
            x = [x, refit.transform(rows.loc[test])]
            assert len(net.model.inputs) == 2
        probabilities = np.asarray(net.model(x, training=False), np.float64)
        # classes are (benign, melanoma): the score is the log-odds of melanoma
        expected = np.log(np.clip(probabilities[:, 1], 1e-7, 1)) - \
            np.log(np.clip(probabilities[:, 0], 1e-7, 1))
        np.testing.assert_allclose(mine["score"].to_numpy(), expected, rtol=1e-3, atol=2e-3,
                                   err_msg=f"run {row.repeat}: scores are not the outputs")
        assert "validation_ids" in net.info  # the split's validation part picked the epoch
    assert seeds == [config.seed, config.seed + 1]
    first = predictions[predictions["repeat"] == 1]["score"].to_numpy()
    second = predictions[predictions["repeat"] == 2]["score"].to_numpy()
    assert not np.allclose(first, second)  # independent runs, not one model twice


def test_metrics_follow_the_contract_and_the_report_is_written(experiment):
    from sklearn.metrics import roc_auc_score

    out = experiment.with_suffix("")
    metrics = pd.read_csv(out / "metrics.csv")
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(metrics) == 2 and metrics["C"].isna().all()
    for row in metrics.itertuples():
        run = predictions[predictions["repeat"] == row.repeat]
        auc = roc_auc_score(run["y_true"] == "melanoma", run["score"])
        assert row.auc == pytest.approx(auc)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Table 1 (Kim & Rocheteau 2020)" in report
    table_a = report.split("### (a) without transfer")[1].split("### (b)")[0]
    keys = list(load_config(experiment)["classifier"]["metadata"])
    label = "standard-cnn" + (" + " + "/".join(keys) if keys else "")
    assert f"| {label} | 2 |" in table_a and "general practitioners (cited)" in table_a
    assert "No experiment ran this cell." in report.split("### (b)")[1]  # no ImageNet weights
    assert (out / "roc_corner.png").is_file()
    assert "threshold 0 on the network's log-odds" in report  # no SVM here
    assert "SVM score" not in report


def test_network_kind_refuses_cells_without_fine_tuning(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text(CONFIG.format(root=tmp_path, cache=tmp_path / "c", metadata="[]").replace(
        'cells = ["none+ft"]', 'cells = ["none", "none+ft"]'), encoding="utf-8")
    with pytest.raises(PipelineError, match=r"cells \['none'\] are not fine-tuned"):
        load_config(path)
