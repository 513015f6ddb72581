"""The tiny demo experiment the stage tests share (tests/stages/test_stages.py, test_explain.py,
test_export.py): synthetic derm7pt and Retinopathy data, VGG-M at 48 px and 1/16 width, cells
none, none+ft and retinopathy, 2 repeats, 3 epochs, written to a temporary folder and run through
the stages as ``make`` runs them.

``tiny_config`` is the config text (designs and extra sections as parameters: the export tests add
the 3-class design and an ``[svm]`` section); ``build_tiny`` writes the data and the config and
runs the stages; ``out`` is a result file of the experiment. ``tests/conftest.py`` puts this
folder on ``sys.path``: tests ``import experiment_fixture``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import main

CELLS = ("none", "none+ft", "retinopathy")
DESIGNS = ("melanoma_vs_benign",)
STAGES = ("data", "folds", "pretrain", "finetune", "features", "svm")

_TEMPLATE = """
[experiment]
name = "tiny"
seed = 3
cells = [{cells}]
cache_dir = "{cache}"
scaled_down = "test scale"

[data]
dataset = "derm7pt"
root = "{root}/derm7pt"

[folds]
designs = [{designs}]
repeats = 2

[network]
name = "vgg-m"
input_size = 48
width = 0.0625

[train]
epochs = 3
batch_size = 16
learning_rate = 0.01

[pretrain]
retinopathy_root = "{root}/retinopathy"

[extract]
batch_size = 8
{extra}"""
REPORT = """
[report]
difficulty_cell = "none+ft"
"""


def tiny_config(root: Path, cache: Path, *, cells=CELLS, designs=DESIGNS,
                extra: str = REPORT) -> str:
    """The config text: data under ``root`` (``derm7pt/``, ``retinopathy/``), cache ``cache``."""
    return _TEMPLATE.format(root=root, cache=cache, extra=extra,
                            cells=", ".join(f'"{c}"' for c in cells),
                            designs=", ".join(f'"{d}"' for d in designs))


def run_stage(stage: str, config: Path, *sets: str) -> None:
    """Run one stage through the command line (``--set`` for each of ``sets``)."""
    argv = [stage, "--config", str(config)] + [a for item in sets for a in ("--set", item)]
    assert main(argv) == 0, f"stage {stage} failed"


def build_tiny(root: Path, *, stages=STAGES, skin_cases: int = 64, fundus_images: int = 80,
               **config) -> Path:
    """Write the demo data (seed 1) and the config under ``root``, run ``stages``; returns the
    config's path (``root/experiments/tiny.toml``, cache ``root/cache``). ``config``: keyword
    arguments of ``tiny_config``."""
    from pipeline.demo.writer import write_demo_data

    write_demo_data(root / "data", seed=1, skin_cases=skin_cases, fundus_images=fundus_images)
    path = root / "experiments" / "tiny.toml"
    path.parent.mkdir()
    path.write_text(tiny_config(root / "data", root / "cache", **config), encoding="utf-8")
    for stage in stages:
        run_stage(stage, path)
    return path


def out(config: Path, *names: str) -> Path:
    """A result file of the experiment (``experiments/tiny/<names>``)."""
    return config.with_suffix("").joinpath(*names)
