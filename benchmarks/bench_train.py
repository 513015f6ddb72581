"""Benchmark: training throughput (images/s) of the one training routine, per network and size.

Runs ``pipeline.training.train.train_classifier`` (the code path of pretrain and finetune: tf.data from a
uint8 array, minority augmentation, SGD + Nesterov, L2, validation every epoch) on synthetic
images for a few epochs and reports the throughput of the last epoch (the first pays for tracing).

    python benchmarks/bench_train.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

# (network, input size, width, batch size, images, epochs)
CASES = [
    ("vgg-m", 64, 0.125, 32, 192, 3),   # the demo's settings
    ("vgg16", 64, 0.125, 32, 192, 3),   # VGG-16 at the demo's settings
    ("vgg-m", 224, 1.0, 16, 48, 2),     # the paper's VGG-M
    ("vgg16", 224, 1.0, 8, 24, 2),      # the paper's VGG-16
]
QUICK = [("vgg-m", 64, 0.125, 32, 96, 2)]
# XLA (train.jit_compile) on against off, interleaved repeats, median: EfficientNet-Lite0 at the
# demo's 48 px (VGG-M's max-pool gradient has no deterministic XLA kernel: refused, see train.py).
XLA_CASE, XLA_REPEATS = ("efficientnet-lite0", 48, 1.0, 32, 192, 3), 3
XLA_QUICK = ("efficientnet-lite0", 32, 1.0, 8, 16, 1)


def measure(name: str, size: int, width: float, batch: int, n: int, epochs: int,
            jit_compile: bool = False) -> dict:
    """Train a fresh network on ``n`` random images; returns the last epoch's throughput
    (``jit_compile``: the recipe's XLA option)."""
    from pipeline.models.build import build_network
    from pipeline.models.registry import get_network
    from pipeline.models.preprocessing import preprocess
    from pipeline.training.recipe import TrainRecipe
    from pipeline.training.train import train_classifier

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    y = (np.arange(n) % 3 == 0).astype(int)  # 1:2 imbalance, so minority augmentation runs
    spec = get_network(name)
    model = build_network(name, weights=None, input_size=size, width=width, classes=2, seed=0)
    mean = np.full(3, 127.5)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = train_classifier(model, images, y, recipe=TrainRecipe(
                                      epochs=epochs, batch_size=batch, jit_compile=jit_compile),
                                  preprocess=lambda x: preprocess(spec, x, mean), seed=0,
                                  workdir=Path(work), progress=False)
    from pipeline.training.augment import epoch_length
    from pipeline.training.train import split_validation

    recipe = TrainRecipe(epochs=epochs, batch_size=batch)
    train_idx, _ = split_validation(y, recipe.validation_fraction, 0)
    examples = epoch_length(y[train_idx], recipe)  # per epoch, after minority augmentation
    last = result.history[-1]
    return {"network": name, "input": size, "width": width, "batch": batch, "images": n,
            "epochs": epochs, "images_per_s": examples / last["train_seconds"],
            "wall_s": time.perf_counter() - started}


def table(rows: list[dict]) -> str:
    lines = ["| network | input | width | batch | images/s (training) | run wall s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['network']} | {r['input']} | {r['width']:g} | {r['batch']} | "
              f"{r['images_per_s']:.1f} | {r['wall_s']:.1f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case, for a smoke run")
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args(argv)
    rows = [measure(*case) for case in (QUICK if args.quick else CASES)]
    text = table(rows)
    print(text)
    if args.out:
        from pipeline.cache.files import write_text

        write_text(args.out, text + "\n")
    return text


if __name__ == "__main__":
    main()


def xla_rows(quick: bool) -> list[dict]:
    """Median over interleaved repeats (off, on, off, on, ...) of XLA off and on."""
    case, repeats = (XLA_QUICK, 1) if quick else (XLA_CASE, XLA_REPEATS)
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(repeats):
        for jit in (False, True):
            runs[jit].append(measure(*case, jit_compile=jit))
    rows = []
    for jit, found in runs.items():
        rates = sorted(r["images_per_s"] for r in found)
        rows.append({**found[0], "jit": jit, "repeats": repeats,
                     "images_per_s": float(np.median(rates)), "low": rates[0], "high": rates[-1],
                     "wall_s": float(np.median([r["wall_s"] for r in found]))})
    return rows


def xla_table(rows: list[dict]) -> str:
    base = rows[0]["images_per_s"]
    lines = ["| jit_compile | network | input | width | batch | images/s, median [min, max] | "
             "vs off | run wall s (median) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {'on' if r['jit'] else 'off'} | {r['network']} | {r['input']} | "
              f"{r['width']:g} | {r['batch']} | {r['images_per_s']:.1f} [{r['low']:.1f}, "
              f"{r['high']:.1f}] | {r['images_per_s'] / base:.2f}x | {r['wall_s']:.1f} |"
              for r in rows]
    return "\n".join(lines)


def section(quick: bool = False) -> str:
    """The ``make bench`` section: training throughput per network and input size, and XLA
    (``train.jit_compile``) on against off."""
    rows = [measure(*case) for case in (QUICK if quick else CASES)]
    head = [
        "Command: `python benchmarks/bench_train.py" + (" --quick" if quick else "") + "`", "",
        "`pipeline.training.train.train_classifier` (the code path of `pretrain` and `finetune`: tf.data "
        "from a uint8 array, minority augmentation to balance 1:2 classes, SGD with Nesterov "
        "momentum, L2, a validation pass per epoch) on random images, networks with weights "
        "none. Images/s: training examples of the last epoch (after balancing) over its training "
        "time; the first epoch pays for tracing. One run per row (a throughput reference; no "
        "goal is set for training).", "", table(rows), ""]
    if quick:  # XLA's compilation alone takes ~100 s on 2 cores: a smoke run leaves it out
        return "\n".join(head + ["XLA (`train.jit_compile`): not run with `--quick` (its "
                                  "compilation alone takes about 100 s here); the full run "
                                  "measures it.", ""])
    xla = xla_rows(quick)
    return "\n".join(head + [
        f"XLA (`train.jit_compile = true`) against the default, {xla[0]['repeats']} interleaved "
        "repeat(s) (off, on, off, on, ...), median: the same training on this machine's CPU "
        "only. The wall time includes XLA's compilation. `train.mixed_precision` is not "
        "measured: without a GPU it is ignored and trains in float32 (the default path). GPU "
        "figures (XLA and mixed_float16 on a GPU) were not measured: no GPU here.", "",
        xla_table(xla), ""])
