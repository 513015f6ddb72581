"""The pretrain, finetune, features and explain stages as task farms on a Dask cluster
(pipeline.compute), on the tiny experiment of tests/experiment_fixture.py (VGG-M at 48 px, 1/16
width, 2 repeats; here cells none and none+ft, 48 cases).

A ``LocalCluster`` of 2 worker processes is started here and handed to the stages by address
(``compute.scheduler = "tcp://..."``, the path a ``local-cluster`` or SLURM run takes too), with
``allowed-failures = 0`` so a killed worker fails its task instead of Dask retrying it. Checked:
byte-identical results against the local scheduler, the parent never imports TensorFlow, a task
whose worker is killed mid-run is the only thing the rerun computes, and a Dask stage racing a
local one on one cache computes each entry once.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import distributed  # the `dask` extra, installed by `make test`
import pandas as pd
import pytest

from experiment_fixture import build_tiny, run_stage
from pipeline.cache.entries import entry_complete
from pipeline.cache.files import read_json
from pipeline.cli import main
from pipeline.errors import PipelineError

pytestmark = pytest.mark.slow

RESULTS = ("networks.json", "finetuned.csv", "features.csv", "metrics.csv", "predictions.csv")


stage = run_stage  # the stage through the command line, with --set items


def reset_cache(base: Path, cache: Path) -> None:
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(base, cache)


def feature_bytes(cache: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in (cache / "features").glob("*/features.npy")}


def network_digests(cache: Path) -> dict[str, str]:
    return {p.name: read_json(p / "manifest.json")["digest"]
            for p in (cache / "networks").iterdir() if p.is_dir() and entry_complete(p)}


@pytest.fixture(scope="module")
def cluster():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as local:
            with distributed.Client(local) as client:
                yield local.scheduler_address, client


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The experiment after data and folds (cache ``data-cache``) and after pretrain (``base``),
    and the local scheduler's pretrain, finetune, features and svm results (``reference``: the result files' bytes, the feature
    entries' bytes, the trained networks' weight digests)."""
    root = tmp_path_factory.mktemp("dask")
    config = build_tiny(root, stages=("data", "folds"), skin_cases=48, fundus_images=8,
                        cells=("none", "none+ft"), extra="")
    cache = root / "cache"
    shutil.copytree(cache, root / "data-cache")
    stage("pretrain", config)
    shutil.copytree(cache, root / "base")
    for name in ("finetune", "features", "svm"):
        stage(name, config)
    shutil.copytree(cache, root / "full")
    out = config.with_suffix("")
    reference = {"files": {n: (out / n).read_bytes() for n in RESULTS},
                 "features": feature_bytes(cache), "networks": network_digests(cache)}
    assert len(reference["features"]) == 8  # none (per half) and none+ft: 2 x 2 x 2
    return config, cache, root / "base", reference


def test_a_cluster_of_two_workers_gives_byte_identical_results(tiny, cluster):
    config, cache, base, reference = tiny
    address, client = cluster
    reset_cache(base.with_name("data-cache"), cache)
    out = config.with_suffix("")
    for name in RESULTS:
        (out / name).unlink()
    stage("pretrain", config, f"compute.scheduler={address}")
    # The stages' own process never imports TensorFlow: only the workers do.
    code = ("import sys; from pipeline.cli import main; "
            f"rc = main(['finetune', '--config', {str(config)!r}, '--set', "
            f"'compute.scheduler={address}']); "
            "sys.exit(rc or ('tensorflow' in sys.modules and 17))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stage("features", config, f"compute.scheduler={address}")
    with distributed.get_task_stream(client) as stream:
        stage("svm", config, f"compute.scheduler={address}")
    assert sum("run_one" in str(t["key"]) for t in stream.data) >= 1, \
        "the svm stage's joblib runs did not go to the cluster"
    for name in RESULTS:
        assert (out / name).read_bytes() == reference["files"][name], f"{name} differs"
    assert feature_bytes(cache) == reference["features"], "feature entries differ"
    assert network_digests(cache) == reference["networks"], "fine-tuned weights differ"


EXPLAIN = ["explain", "--cell", "none+ft", "--design", "melanoma_vs_benign", "--run", "2/1",
           "--images", "3", "--steps", "16"]


def explain_outputs(config: Path, cache: Path) -> dict[str, bytes]:
    """The explain stage's files and attribution entries' maps, by name."""
    folder = config.with_suffix("") / "explain" / "none+ft_melanoma_vs_benign"
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files.update({f"entry {p.parent.name}": p.read_bytes()
                  for p in (cache / "attributions").glob("*/values.npy")})
    return files


def restore_trained(config: Path, cache: Path, base: Path, reference: dict) -> Path:
    """The tiny experiment as its local run left it (cache and outputs), for the explain tests;
    returns its output folder."""
    reset_cache(base.with_name("full"), cache)
    out = config.with_suffix("")
    for name, data in reference["files"].items():
        (out / name).write_bytes(data)
    return out


def test_explain_on_two_workers_is_byte_identical_and_its_parent_never_imports_tensorflow(
        tiny, cluster):
    config, cache, base, reference = tiny
    address, client = cluster
    out = restore_trained(config, cache, base, reference)
    shutil.rmtree(out / "explain", ignore_errors=True)
    assert main([EXPLAIN[0], "--config", str(config), *EXPLAIN[1:]]) == 0
    local = explain_outputs(config, cache)
    # 3 images x 2 methods: an overlay and an entry each, the grid and attributions.csv
    assert sum(n.startswith("entry ") for n in local) == 6 and len(local) == 6 + 6 + 2
    shutil.rmtree(out / "explain")
    shutil.rmtree(cache / "attributions")
    argv = [EXPLAIN[0], "--config", str(config), *EXPLAIN[1:], "--set",
            f"compute.scheduler={address}"]
    code = ("import sys; from pipeline.cli import main; "
            f"rc = main({argv!r}); sys.exit(rc or ('tensorflow' in sys.modules and 17))")
    with distributed.get_task_stream(client) as stream:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sum("explain-" in str(t["key"]) for t in stream.data) == 6, \
        "the attributions were not computed on the cluster, one task each"
    assert "6 attributions, 6 computed" in result.stderr
    assert explain_outputs(config, cache) == local
    # A rerun with 4 images (spread over the ranking again) computes only the new images' entries.
    table = out / "explain" / "none+ft_melanoma_vs_benign" / "attributions.csv"
    before = set(pd.read_csv(table, dtype={"image": str})["image"])
    more = [a if a != "3" else "4" for a in argv]
    capture = subprocess.run([sys.executable, "-m", "pipeline", *more], capture_output=True,
                             text=True, timeout=300)
    assert capture.returncode == 0, capture.stderr[-3000:]
    new = set(pd.read_csv(table, dtype={"image": str})["image"]) - before
    assert new and f"8 attributions, {2 * len(new)} computed" in capture.stderr


def test_a_failed_explain_task_is_reraised_naming_its_cell_design_run_and_image(tiny, cluster,
                                                                                capsys):
    config, cache, base, reference = tiny
    address, _ = cluster
    restore_trained(config, cache, base, reference)
    shutil.rmtree(cache / "attributions", ignore_errors=True)
    capsys.readouterr()
    steps = EXPLAIN.index("--steps") + 1  # 0 steps: each task's integrated gradients refuse
    argv = [*EXPLAIN[:steps], "0", *EXPLAIN[steps + 1:]]
    assert main([argv[0], "--config", str(config), *argv[1:], "--method", "ig",
                 "--set", f"compute.scheduler={address}"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"explain: 3 of 3 tasks failed", err), err
    assert re.search(r"none\+ft melanoma_vs_benign run 2/1 image \S+ ig: PipelineError: "
                     r"integrated gradients need steps >= 1", err), err
    assert not list((cache / "attributions").glob("*/manifest.json"))


def _held_locks(folder: Path) -> list[Path]:
    held = []
    for lock in folder.glob("*.lock"):
        with open(lock, "a", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(lock)
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
    return held


def test_a_task_killed_with_its_worker_is_recomputed_on_rerun_and_nothing_else(tiny, cluster):
    config, cache, base, reference = tiny
    address, client = cluster
    reset_cache(base, cache)
    before = set(network_digests(cache))
    failure: list[BaseException] = []

    from pipeline.stages import finetune as finetune_stage

    parser = argparse.ArgumentParser()
    finetune_stage.add_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--set", f"compute.scheduler={address}"])

    def finetune() -> None:  # the stage itself, so its PipelineError reaches the test
        try:
            finetune_stage.run(args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    runner = threading.Thread(target=finetune)
    runner.start()
    deadline, killed = time.monotonic() + 240, None
    while runner.is_alive() and time.monotonic() < deadline and killed is None:
        busy = _held_locks(cache / "networks")
        if busy:  # a worker is training that entry now
            killed = busy[0].with_suffix("")
            # the worker holding it is one of the two; kill both, mid-task
            for pid in client.run(os.getpid).values():
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    runner.join(timeout=300)
    assert killed is not None, "no training task was seen running"
    assert failure and isinstance(failure[0], PipelineError), failure
    assert re.search(r"none\+ft melanoma_vs_benign repeat \d half \d", str(failure[0]))
    assert "rerun `make finetune`" in str(failure[0])
    assert not entry_complete(killed), "a killed task left an entry that looks complete"
    done = {p: (p / "manifest.json").stat().st_mtime_ns for p in (cache / "networks").iterdir()
            if p.is_dir() and entry_complete(p) and p.name not in before}
    missing = 4 - len(done)
    assert missing >= 1
    client.wait_for_workers(2, timeout=60)  # the nannies restart the killed workers
    stage("finetune", config, f"compute.scheduler={address}")
    for path, stamp in done.items():
        assert (path / "manifest.json").stat().st_mtime_ns == stamp, f"{path} was recomputed"
    assert entry_complete(killed)
    assert network_digests(cache) == reference["networks"], "recomputed weights differ"
    assert config.with_suffix("").joinpath("finetuned.csv").read_bytes() == \
        reference["files"]["finetuned.csv"]


@pytest.mark.parametrize("first", ["local", "dask"])
def test_a_dask_stage_racing_a_local_one_computes_each_entry_once(tiny, cluster, first):
    """Both orders: the second stage starts once the first holds an entry's lock."""
    config, cache, base, reference = tiny
    address, _ = cluster
    reset_cache(base, cache)
    stage("finetune", config)  # the networks; the race is over the feature entries
    command = [sys.executable, "-m", "pipeline", "features", "--config", str(config)]
    commands = {"local": command, "dask": command + ["--set", f"compute.scheduler={address}"]}
    second = "dask" if first == "local" else "local"
    procs = {first: subprocess.Popen(commands[first], stderr=subprocess.PIPE, text=True)}
    deadline = time.monotonic() + 120
    while (not _held_locks(cache / "features") and procs[first].poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.02)
    assert procs[first].poll() is None, "the first stage finished before the race began"
    procs[second] = subprocess.Popen(commands[second], stderr=subprocess.PIPE, text=True)
    logs = {name: proc.communicate(timeout=300)[1] for name, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values()), \
        "\n".join(text[-2000:] for text in logs.values())
    counts = {name: int(re.search(r"features: 8 feature entries, (\d+) computed", text).group(1))
              if "computed" in text else 0 for name, text in logs.items()}
    assert sum(counts.values()) == 8, f"entries computed by each stage: {counts}"
    assert counts[first] >= 1, counts
    assert feature_bytes(cache) == reference["features"]


def stage_error(capsys, name: str, config: Path, *sets: str) -> str:
    argv = [name, "--config", str(config)] + [a for item in sets for a in ("--set", item)]
    capsys.readouterr()
    assert main(argv) == 2, f"stage {name} should have failed"
    return capsys.readouterr().err


def test_a_missing_dask_is_an_error_naming_the_extra(tiny, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    err = stage_error(capsys, "finetune", tiny[0], "compute.scheduler=local-cluster")
    assert re.search(r"compute.scheduler = 'local-cluster'.*pip install '\.\[dask\]'", err), err


def test_an_unknown_scheduler_is_refused_naming_the_choices(tiny, capsys):
    err = stage_error(capsys, "finetune", tiny[0], "compute.scheduler=cluster")
    assert re.search(r"`compute.scheduler`.*'local-cluster'.*tcp://.*Got 'cluster'", err), err


def test_the_stage_starts_and_closes_its_own_local_cluster(tiny):
    """``compute.scheduler = "local-cluster"``: the stage starts a cluster of its own (here for
    the svm stage's joblib runs, which need no TensorFlow) and gives the local run's bytes."""
    config, cache, base, reference = tiny
    reset_cache(base, cache)
    stage("finetune", config)
    stage("features", config)
    metrics = config.with_suffix("") / "metrics.csv"
    metrics.unlink()
    stage("svm", config, "compute.scheduler=local-cluster", "compute.workers=2")
    assert metrics.read_bytes() == reference["files"]["metrics.csv"]


KR_CONFIG = """
[experiment]
name = "kr-dask"
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
epochs = 2
batch_size = 8
learning_rate = 0.003
optimizer = "adam"
early_stopping_patience = 2
lr_decay_factor = 0.4
augment = "all"

[classifier]
kind = "network"
metadata = ["age", "sex", "site"]

[extract]
batch_size = 8
"""


def test_kim_rocheteau_holdout_with_metadata_on_two_workers_is_byte_identical(tmp_path,
                                                                               cluster):
    """Both features together: the hold-out protocol (own seed and validation part per run,
    Adam, early stopping, decay) with the network classifier and its metadata branch, its
    finetune, features and svm stages run on the cluster, give the local run's bytes, and the
    finetune stage's process still never imports TensorFlow."""
    from pipeline.demo.isic2020 import write_isic2020_demo

    address, _ = cluster
    write_isic2020_demo(tmp_path / "isic2020", seed=2, cases=60)
    config = tmp_path / "experiments" / "kr.toml"
    config.parent.mkdir()
    cache = tmp_path / "cache"
    config.write_text(KR_CONFIG.format(root=tmp_path / "isic2020", cache=cache), encoding="utf-8")
    for name in ("data", "folds", "pretrain"):
        stage(name, config)
    base = tmp_path / "base"
    shutil.copytree(cache, base)
    results = ("finetuned.csv", "features.csv", "metrics.csv", "predictions.csv")
    for name in ("finetune", "features", "svm"):
        stage(name, config)
    out = config.with_suffix("")
    reference = {n: (out / n).read_bytes() for n in results}
    features, networks = feature_bytes(cache), network_digests(cache)
    tuned = [read_json(cache / "networks" / e / "manifest.json") for e in networks]
    tuned = [info for info in tuned if info.get("stage") == "finetune"]
    assert len(features) == 2 and len(tuned) == 2  # one network and one entry per run
    assert all(info["metadata"] and "validation_ids" in info for info in tuned)
    assert len({info["seed"] for info in tuned}) == 2  # each run its own seed
    reset_cache(base, cache)
    for name in results:
        (out / name).unlink()
    code = ("import sys; from pipeline.cli import main; "
            f"rc = main(['finetune', '--config', {str(config)!r}, '--set', "
            f"'compute.scheduler={address}']); "
            "sys.exit(rc or ('tensorflow' in sys.modules and 17))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stage("features", config, f"compute.scheduler={address}")
    stage("svm", config, f"compute.scheduler={address}")
    for name in results:
        assert (out / name).read_bytes() == reference[name], f"{name} differs"
    assert feature_bytes(cache) == features, "network-output entries differ"
    assert network_digests(cache) == networks, "fine-tuned weights differ"
