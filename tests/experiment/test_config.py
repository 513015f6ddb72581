"""Tests for pipeline.experiment.config and pipeline.experiment.stamps: validation errors, defaults, cells, recipes and stage stamps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.protocol import ALL_CELLS, TABLE1_CELLS, Cell
from pipeline.experiment.config import load_config
from pipeline.experiment.stamps import stage_settings, write_stamps
from pipeline.errors import PipelineError

MINIMAL = """
[experiment]
name = "t"

[data]
dataset = "derm7pt"
root = "somewhere"

[pretrain]
retinopathy_root = "retina"
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_papers_protocol(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    recipe = config.recipe("finetune")
    assert (recipe.epochs, recipe.learning_rate, recipe.momentum, recipe.l2) == (60, 1e-3, 0.1, 5e-3)
    assert recipe.nesterov and recipe.augment == "minority" and recipe.validation_fraction == 0.1
    assert tuple(c.name for c in config.cells) == TABLE1_CELLS
    assert config["network"]["name"] == "vgg-m" and config["folds"]["repeats"] == 5
    assert config["svm"]["selection"] == "paper" and config["svm"]["C_grid"][0] == 1e-3
    assert config.output_dir == tmp_path / "exp"


def test_cells_all_and_sources_in_order(tmp_path):
    text = MINIMAL.replace('name = "t"', 'name = "t"\ncells = "all"')
    config = load_config(write(tmp_path, text))
    assert tuple(c.name for c in config.cells) == ALL_CELLS
    assert config.sources == ("none", "retinopathy", "imagenet", "double")
    assert Cell.parse("double+ft") == Cell("double", True)


def test_stage_overrides_only_their_stage(tmp_path):
    text = MINIMAL + "epochs = 3\n[train]\nepochs = 7\n"
    config = load_config(write(tmp_path, text))
    assert config.recipe("pretrain").epochs == 3
    assert config.recipe("finetune").epochs == 7


@pytest.mark.parametrize("snippet, words", [
    ('[svm]\nC_grid = [-1.0]', ["`svm.C_grid`", "finite number > 0", "[-1.0]"]),
    ('[svm]\nselection = "best"', ["`svm.selection`", "'paper'", "'best'"]),
    ('[train]\nepochs = 0', ["`train.epochs`", "integer >= 1", "0"]),
    ('[train]\nmomentum = "fast"', ["`train.momentum`", "number", "'fast'"]),
    ('[folds]\ndesigns = ["melanoma_vs_all"]', ["`folds.designs`", "malignant_vs_benign"]),
    ('[svm]\nCgrid = [1.0]', ["unknown key", "`svm.Cgrid`", "Did you mean `svm.C_grid`?"]),
    ('[svmm]\nC_grid = [1.0]', ["unknown section", "svmm", "did you mean [svm]?"]),
    ('[network]\nname = "alexnet"', ["`network.name`", "alexnet", "vgg-m", "vgg16"]),
])
def test_errors_name_key_file_allowed_and_received(tmp_path, snippet, words):
    path = write(tmp_path, MINIMAL + "\n" + snippet + "\n")
    with pytest.raises(PipelineError) as err:
        load_config(path)
    message = str(err.value)
    for word in words + [str(path)]:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize("item, nearest", [
    ('svm.selecton="reference"', "Did you mean `svm.selection` or `svm.selection_splits`?"),
    ("train.epoch=2", "Did you mean `train.epochs`"),
    ("svm.epochs=2", "Did you mean `train.epochs`"),  # the key under another section
])
def test_a_mistyped_key_names_the_nearest_keys_not_all_of_them(tmp_path, item, nearest):
    from pipeline.experiment.schema import SCHEMA

    with pytest.raises(PipelineError) as err:
        load_config(write(tmp_path, MINIMAL), [item])
    message = str(err.value)
    assert nearest in message and "pipeline/experiment/schema.py" in message
    section = item.split(".")[0]
    assert f"Keys of [{section}]: {', '.join(SCHEMA[section])}." in message
    others = [f"{s}.{k}" for s in SCHEMA if s != section for k in SCHEMA[s]]
    assert sum(f"`{name}`" in message for name in others) <= 3, message


def test_missing_required_key_and_file(tmp_path):
    with pytest.raises(PipelineError, match=r"`data.root` in .* is required"):
        load_config(write(tmp_path, MINIMAL.replace('root = "somewhere"', "")))
    with pytest.raises(PipelineError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(PipelineError, match="not valid TOML"):
        load_config(write(tmp_path, "[experiment\n"))


def test_settings_that_would_do_nothing_are_refused(tmp_path):
    text = MINIMAL.replace('cells', 'x') + '\n[folds]\nscheme = "official"\n'
    with pytest.raises(PipelineError, match="official.*isic2016"):
        load_config(write(tmp_path, text))
    text = MINIMAL.replace('name = "t"', 'name = "t"\ncells = ["retinopathy+ft"]').replace(
        'retinopathy_root = "retina"', '')
    with pytest.raises(PipelineError, match="retinopathy_root"):
        load_config(write(tmp_path, text))


def test_environment_variables(tmp_path, monkeypatch):
    text = MINIMAL.replace('"somewhere"', '"${ATLAS_TEST_ROOT}/derm7pt"')
    monkeypatch.delenv("ATLAS_TEST_ROOT", raising=False)
    with pytest.raises(PipelineError, match="ATLAS_TEST_ROOT.*not set"):
        load_config(write(tmp_path, text))
    monkeypatch.setenv("ATLAS_TEST_ROOT", "/data")
    assert load_config(write(tmp_path, text))["data"]["root"] == "/data/derm7pt"


def test_stamps_change_only_for_the_stages_whose_settings_changed(tmp_path):
    path = write(tmp_path, MINIMAL)
    stamps = tmp_path / "stamps"
    assert set(write_stamps(load_config(path), stamps)) == {
        "data", "folds", "pretrain", "finetune", "features", "svm", "report"}
    before = {p.name: p.stat().st_mtime_ns for p in stamps.iterdir()}
    assert write_stamps(load_config(path), stamps) == []
    time.sleep(0.01)
    write(tmp_path, MINIMAL + "\n[svm]\nC_grid = [0.1, 1.0]\n")
    assert write_stamps(load_config(path), stamps) == ["svm"]
    after = {p.name: p.stat().st_mtime_ns for p in stamps.iterdir()}
    assert [n for n in before if before[n] != after[n]] == ["svm.json"]
    assert stage_settings(load_config(path), "svm")["svm"]["C_grid"] == (0.1, 1.0)
    # the classifier (kind, metadata) changes what finetune, features and svm compute
    write(tmp_path, MINIMAL + "\n[svm]\nC_grid = [0.1, 1.0]\n\n[classifier]\nmetadata = [\"sex\"]\n")
    assert sorted(write_stamps(load_config(path), stamps)) == ["features", "finetune", "svm"]


def test_shipped_experiments_validate_and_the_papers_keep_its_protocol(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    for var in ("DERM7PT_ROOT", "RETINOPATHY_ROOT", "VGGM_WEIGHTS", "ISIC2016_ROOT",
                "ISIC2020_ROOT"):
        monkeypatch.setenv(var, f"/data/{var.lower()}")
    configs = {p.stem: load_config(p) for p in sorted((root / "experiments").glob("*.toml"))}
    assert {"demo", "menegola2017-atlas", "menegola2017-isic2016", "architectures",
            "vgg16-atlas"} <= set(configs)
    for name, config in configs.items():
        assert config.name == name
        assert "${" not in str(config.raw)  # every variable was expanded
    atlas = configs["menegola2017-atlas"]
    recipe = atlas.recipe("finetune")
    assert tuple(c.name for c in atlas.cells) == TABLE1_CELLS
    assert (atlas["network"]["name"], atlas["folds"]["scheme"], atlas["folds"]["repeats"]) == \
        ("vgg-m", "5x2", 5)
    assert (recipe.epochs, recipe.learning_rate, recipe.momentum, recipe.l2) == (60, 1e-3, 0.1,
                                                                                  5e-3)
    assert atlas["data"]["root"] == "/data/derm7pt_root" and not atlas["experiment"]["scaled_down"]
    isic = configs["menegola2017-isic2016"]
    assert (isic["network"]["name"], isic["folds"]["scheme"]) == ("vgg16", "official")
    assert configs["demo"]["experiment"]["scaled_down"]  # the demo declares its departures
    # Kim & Rocheteau's study keeps their protocol (the paper is the specification)
    for name in ("kim-rocheteau2020-isic2020", "kim-rocheteau2020-isic2020-cnn"):
        kr = configs[name]
        recipe = kr.recipe("finetune")
        assert (kr["folds"]["scheme"], kr["folds"]["holdout"], kr["folds"]["runs"],
                kr["folds"]["holdout_grouping"]) == ("holdout", (0.6, 0.2, 0.2), 10, "grouped")
        assert (recipe.optimizer, recipe.epochs, recipe.early_stopping_patience,
                recipe.lr_decay_factor, recipe.lr_decay_patience, recipe.augment) == \
            ("adam", 15, 3, 0.4, 1, "all")
        assert kr["classifier"]["kind"] == "network" and kr["data"]["dataset"] == "isic2020"
        assert not kr["experiment"]["scaled_down"]
    cnn = configs["kim-rocheteau2020-isic2020-cnn"].recipe("finetune")
    assert (cnn.batch_size, cnn.learning_rate) == (8, 0.00977)
    for name in ("demo-kr", "demo-kr-cnn", "demo-kr-metadata"):
        assert configs[name]["experiment"]["scaled_down"]




def test_devices_inherit_train_and_stay_out_of_the_recipe(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), overrides=["train.devices=all",
                                                              "finetune.devices=one"])
    assert config.devices("pretrain") == "all" and config.devices("finetune") == "one"
    assert "devices" not in config.recipe("pretrain").as_dict()  # cache keys hash the recipe
    assert load_config(write(tmp_path, MINIMAL)).devices("finetune") == "one"


def test_compute_settings_reach_the_cluster_settings(tmp_path):
    from pipeline.experiment.artifacts import compute_settings

    config = load_config(write(tmp_path, MINIMAL), overrides=[
        "compute.scheduler=slurm", "compute.workers=4", "compute.slurm_gpus=2",
        "compute.slurm_queue=gpu"])
    settings = compute_settings(config)
    assert (settings.scheduler, settings.workers, settings.local) == ("slurm", 4, False)
    assert settings.slurm["queue"] == "gpu"
    assert settings.slurm["job_extra_directives"] == ["--gres=gpu:2"]
    assert compute_settings(load_config(write(tmp_path, MINIMAL))).local
    with pytest.raises(PipelineError, match=r"compute.scheduler.*tcp://host:8786.*Got 'tcp://x'"):
        load_config(write(tmp_path, MINIMAL), overrides=["compute.scheduler=tcp://x"])
