"""Benchmark: the Dask path's scheduling overhead, and a paper estimate of the full studies' wall
time on 1, 8 and 64 GPUs.

1. Overhead: the finetune stage of a small experiment (VGG-M at 48 px, 1/16 width, synthetic
   derm7pt cases, 2 repeats of one design) from an empty network cache, once with
   ``compute.scheduler = "local"`` and once through a ``LocalCluster`` of one worker (the same
   parallelism, so the difference is what Dask costs: starting the cluster, the worker's own
   TensorFlow import, shipping tasks), and with two workers. Each is a fresh ``python -m pipeline
   finetune`` process, as ``make`` runs it, alternated, best of ``repeat``.
2. Estimate: the training images of Menegola et al.'s Table 1 (Atlas) and of Kim & Rocheteau's
   study, times the FLOPs of a training step per image (3 x the forward FLOPs counted layer by
   layer, ``bench_extract.flops_per_image``), divided by a sustained rate: the one *measured* here
   on this CPU (VGG-M training), and an *assumed* one for an H100-class GPU. No GPU was measured.

    python benchmarks/bench_dask.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_extract import flops_per_image, md_table

CONFIG = """
[experiment]
name = "bench"
seed = 3
cells = ["none+ft"]
cache_dir = "{cache}"

[data]
dataset = "derm7pt"
root = "{root}"

[folds]
designs = ["melanoma_vs_benign"]
repeats = {repeats}

[network]
name = "vgg-m"
input_size = 48
width = 0.0625

[train]
epochs = {epochs}
batch_size = 16
learning_rate = 0.01
"""
# An H100 SXM: 495 TFLOP/s dense TF32 (989 bf16) at peak; convolutional networks at 224 px
# sustain a fraction. ASSUMED, not measured: 35% of TF32 peak.
GPU_PEAK_TFLOPS, GPU_SUSTAINED_SHARE = 495.0, 0.35
MIRRORED_EFFICIENCY = 0.9  # assumed scaling of one training over the GPUs of a node
GPUS_PER_NODE = 8
KIM_BACKBONES = ("vgg16", "resnet50", "densenet121", "mobilenetv2", "efficientnetb0",
                 "inceptionv3", "mnasnet1.0", "shufflenet-v2", "squeezenet1.1", "googlenet",
                 "resnext50")


def _stage(config: Path, cache: Path, base: Path, *sets: str) -> float:
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(base, cache)
    command = [sys.executable, "-m", "pipeline", "finetune", "--config", str(config)]
    for item in sets:
        command += ["--set", item]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def overhead(quick: bool) -> tuple[list[list], float, int]:
    """Wall times of the finetune stage on the local and the Dask path; returns table rows, the
    overhead ratio (1 Dask worker / local) and the number of fine-tuning tasks."""
    from pipeline.cli import main
    from pipeline.demo.writer import write_demo_data

    repeats, epochs, repeat = (1, 1, 1) if quick else (2, 20, 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_demo_data(root / "data", seed=1, skin_cases=48 if quick else 96, fundus_images=8)
        config = root / "bench.toml"
        cache = root / "cache"
        config.write_text(CONFIG.format(cache=cache, root=root / "data" / "derm7pt",
                                        repeats=repeats, epochs=epochs), encoding="utf-8")
        for stage in ("data", "folds", "pretrain"):
            assert main([stage, "--config", str(config)]) == 0, stage
        shutil.copytree(cache, root / "base")
        paths = {"local": (), "Dask, LocalCluster of 1 worker": (
            "compute.scheduler=local-cluster", "compute.workers=1"),
            "Dask, LocalCluster of 2 workers": ("compute.scheduler=local-cluster",
                                                "compute.workers=2")}
        if quick:  # one cluster start is enough to check the code (each imports TensorFlow)
            del paths["Dask, LocalCluster of 2 workers"]
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeat):  # alternated, so the host's load hits every path alike
            for name, sets in paths.items():
                times[name].append(_stage(config, cache, root / "base", *sets))
    best = {name: min(t) for name, t in times.items()}
    local = best["local"]
    rows = [[name, f"{best[name]:.1f}", f"{best[name] - local:+.1f}", f"{best[name] / local:.2f}"]
            for name in paths]
    one = best["Dask, LocalCluster of 1 worker"]
    return rows, one / local, one - local, 2 * repeats, epochs


def measured_cpu_rate(quick: bool) -> tuple[float, str]:
    """Sustained training FLOP/s of VGG-M on this CPU (3 x forward FLOPs x images/s)."""
    import keras

    from pipeline.models.build import build_network
    from pipeline.models.preprocessing import preprocess
    from pipeline.models.registry import get_network
    from pipeline.training.recipe import TrainRecipe
    from pipeline.training.train import train_classifier

    size, width, n = (64, 0.25, 48) if quick else (224, 1.0, 48)
    spec = get_network("vgg-m")
    model = build_network("vgg-m", weights=None, input_size=size, width=width, classes=2, seed=0)
    flops = 3 * flops_per_image(keras.Model(model.input, model.output))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    y = np.arange(n) % 2
    with tempfile.TemporaryDirectory() as work:
        result = train_classifier(model, images, y, recipe=TrainRecipe(epochs=2, batch_size=16,
                                                                       augment="none"),
                                  preprocess=lambda x: preprocess(spec, x, np.full(3, 127.5)),
                                  seed=0, workdir=Path(work), progress=False)
    last = result.history[-1]
    per_second = (n - math.ceil(n * 0.1)) / last["train_seconds"]
    return flops * per_second, (f"VGG-M at {size} px, width {width:g}: {per_second:.1f} "
                                f"training images/s x {flops / 1e9:.2f} GFLOP per image")


def training_flops(name: str, size: int | None = None) -> int:
    """FLOPs of one training step per image (3 x forward through conv and dense layers)."""
    import keras

    from pipeline.models.build import build_network
    from pipeline.models.registry import get_network

    spec = get_network(name)
    model = build_network(name, weights=None, input_size=size or spec.input_size, width=1.0,
                          classes=2, seed=0)
    count = 3 * flops_per_image(keras.Model(model.input, model.output))
    keras.backend.clear_session()
    return count


def epoch_images(n_train: int, majority_share: float, classes: int) -> float:
    """Images one epoch shows: the minority classes augmented up to the majority (the recipe),
    after the 10% validation split."""
    return classes * majority_share * 0.9 * n_train


def studies(quick: bool) -> dict:
    """The two studies as task lists: ``(name, tasks, images per task, FLOPs per image)``
    groups, run one stage after the other."""
    epochs = 60
    # quick: FLOPs counted at 64 px (building the full-size networks took ~1.5 min on 2 cores)
    size = 64 if quick else None
    vgg_m = training_flops("vgg-m", size)
    # Table 1: Retinopathy (35,126 Kaggle images, grade 0 is 73%, 5 grades) for two sources,
    # then 4 fine-tuned cells x 3 designs x 10 runs on half of ~1,000 Atlas images (majority
    # ~60%, 2-3 classes: 2.33 on average).
    retinopathy = epochs * epoch_images(35_126, 0.735, 5)
    atlas_ft = epochs * epoch_images(500, 0.6, 7 / 3)
    atlas = [("pretrain (Retinopathy)", 2, retinopathy, vgg_m),
             ("finetune", 4 * 3 * 10, atlas_ft, vgg_m)]
    # Kim & Rocheteau: 11 backbones x 10 runs fine-tuned on half of ~37k images (melanoma
    # vs the rest, majority ~82%); the frozen-feature half of the x2 costs one forward pass.
    backbones = KIM_BACKBONES[:2] if quick else KIM_BACKBONES
    kim_ft = epochs * epoch_images(18_500, 0.82, 2)
    kim = [(f"finetune {b}", 10, kim_ft, training_flops(b, size)) for b in backbones]
    menegola = "Menegola et al. Table 1 (Atlas, VGG-M)" + (
        " [quick: FLOPs at 64 px]" if quick else "")
    return {menegola: atlas,
            "Kim & Rocheteau (11 backbones x 2 x 10 runs, ~37k images)"
            + (" [quick: 2 backbones, FLOPs at 64 px]" if quick else ""): kim}


def wall_seconds(groups: list, gpus: int, rate: float) -> float:
    """Stages one after the other; in a stage, tasks are farmed one per GPU, and when GPUs
    outnumber tasks, each task trains data-parallel on up to a node's GPUs."""
    total = 0.0
    for _, tasks, images, flops in groups:
        seconds = images * flops / rate
        if gpus >= tasks:
            share = min(gpus // tasks, GPUS_PER_NODE)
            total += seconds / (share * MIRRORED_EFFICIENCY if share > 1 else 1)
        else:
            total += math.ceil(tasks / gpus) * seconds
    return total


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} h" if seconds < 72 * 3600 else f"{seconds / 86400:,.0f} days"


def section(quick: bool = False) -> str:
    rows, ratio, fixed, tasks, epochs = overhead(quick)
    cpu_rate, how = measured_cpu_rate(quick)
    gpu_rate = GPU_PEAK_TFLOPS * 1e12 * GPU_SUSTAINED_SHARE
    estimate = []
    for study, groups in studies(quick).items():
        estimate.append([study, _hours(wall_seconds(groups, 1, cpu_rate))]
                        + [_hours(wall_seconds(groups, n, gpu_rate)) for n in (1, 8, 64)])
    return "\n".join([
        f"Scheduling overhead: `python -m pipeline finetune` of {tasks} fine-tuning tasks (VGG-M "
        f"48 px, width 1/16, {epochs} epochs, synthetic cases) from an empty network cache, each "
        "path a fresh "
        "process, best of the alternated runs. One worker has the local path's parallelism, so "
        "its ratio is what Dask costs (cluster start, the worker's TensorFlow import, task "
        "shipping); on these 2 cores two workers share the cores TensorFlow already used.", "",
        md_table(["path", "wall s", "s over local", "x local"], rows), "",
        f"Goal (Dask overhead <= 10% of the local finetune): {ratio:.2f}x local, "
        + ("met" if ratio <= 1.10 else "not met") + f". The cost is about fixed ({fixed:.1f} s "
        "here: starting the cluster and its worker), so it is under 10% of any stage that runs "
        f"longer than {10 * max(fixed, 0):.0f} s; the study-sized stages below run hours.", "",
        "**Estimate, on paper (not measured on a GPU: none was available).** Training images x "
        "training FLOPs per image (3 x forward, conv and dense layers) / a sustained rate. CPU: "
        f"the rate measured here, {cpu_rate / 1e9:.0f} GFLOP/s ({how}). GPU: an *assumed* "
        f"{GPU_SUSTAINED_SHARE:.0%} of an H100's {GPU_PEAK_TFLOPS:.0f} TFLOP/s dense TF32 peak "
        f"({gpu_rate / 1e12:.0f} TFLOP/s). Stages run in order; tasks farmed one per GPU; when "
        f"GPUs outnumber a stage's tasks, each task trains data-parallel on up to "
        f"{GPUS_PER_NODE} GPUs of a node (MirroredStrategy) at an assumed "
        f"{MIRRORED_EFFICIENCY:.0%} efficiency. 60 epochs; minority classes augmented to the "
        "majority. Feature extraction and the SVMs are minutes and left out.", "",
        md_table(["study", "this CPU (measured rate)", "1 GPU (est.)", "8 GPUs (est.)",
                  "64 GPUs (est.)"], estimate), "",
        "Menegola's Table 1 is bound by its two Retinopathy trainings: beyond 16 GPUs only "
        "multi-node data parallelism (not built) would shorten it. Kim & Rocheteau's backbones "
        "are one experiment each (a config holds one network), run one after another.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(section(parser.parse_args(argv).quick))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
