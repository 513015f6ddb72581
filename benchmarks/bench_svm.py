"""Benchmark: the fast SVM selection of ``pipeline.classifiers.svm`` against the reference protocol.

On synthetic fc7-like features (Gaussian, classes shifted along a random 32-dimensional subspace,
unequal class sizes like the Atlas), for each of the first ``--runs`` runs of a 5x2 split:

- ``select_and_fit(selection="paper")``: one 10% validation split, precomputed Gram matrix;
- ``select_and_fit(selection="reference")``: 10 splits, balanced classes, Gram matrix;
- ``reference_protocol_fit``: the reference implementation (``GridSearchCV`` of
  ``SVC(kernel="linear", probability=True)``, 10 splits);

all with C in ``logspace(-3, 4, 8)``. Reports the time of each, the speed ratio against the
reference protocol and the test AUC difference per run (AUC for two classes, the paper's
one-vs-one mean for three). Goal: >= 10x faster, AUC within 0.01 per run.

Usage: ``python benchmarks/bench_svm.py --n-images 1000 --dims 4096 --runs 2 --out bench.md``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from pipeline.classifiers.svm import decision_scores, reference_protocol_fit, select_and_fit
from pipeline.evaluation.metrics import auc_ovo_mean

C_GRID = np.logspace(-3, 4, 8)
PROPORTIONS = {2: (0.7, 0.3), 3: (0.65, 0.10, 0.25)}  # benign, (bcc,) melanoma
METHODS = {
    "paper": lambda X, y, seed: select_and_fit(X, y, C_grid=C_GRID, selection="paper", seed=seed),
    # svm.selection_splits = 10 with the paper's selection (no class weights): C by the mean AUC
    # over 10 splits of the same Gram matrix; one 10% split of ~50 images is a noisy AUC estimate.
    "paper 10 splits": lambda X, y, seed: select_and_fit(X, y, C_grid=C_GRID, selection="paper",
                                                         n_splits=10, seed=seed),
    "fast reference": lambda X, y, seed: select_and_fit(X, y, C_grid=C_GRID,
                                                        selection="reference", seed=seed),
    "reference protocol": lambda X, y, seed: reference_protocol_fit(X, y, C_GRID, seed),
}


def synthetic_features(n_images: int, dims: int, n_classes: int, seed: int = 0,
                       shift: float = 3.0, subspace: int = 32,
                       relu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features, array of shape (n_images, dims) float32, and labels (n_images,).

    Class c's mean is ``shift`` times a random unit vector of a random ``subspace``-dimensional
    subspace (class 0 at the origin), so only a few directions carry signal, as in fc7 features.
    The default shift gives test AUCs near 0.8 at 1,000 x 4,096, like the paper's Table 1.
    """
    rng = np.random.default_rng(seed)
    y = rng.choice(n_classes, size=n_images, p=PROPORTIONS[n_classes])
    basis, _ = np.linalg.qr(rng.normal(size=(dims, subspace)))
    means = np.zeros((n_classes, dims))
    for c in range(1, n_classes):
        direction = rng.normal(size=subspace)
        means[c] = shift * basis @ (direction / np.linalg.norm(direction))
    X = rng.normal(size=(n_images, dims)) + means[y]
    if relu:  # non-negative and sparse like fc7 (ReLU outputs): about 70% zeros
        X = np.maximum(X - 0.5, 0.0)
    return X.astype(np.float32), y


def held_out_auc(y: np.ndarray, scores: np.ndarray, n_classes: int) -> float:
    if n_classes == 2:
        return float(roc_auc_score(y, scores))
    return auc_ovo_mean(y, scores, list(range(n_classes)))


def run(n_images: int, dims: int, runs: int, class_counts: list[int], seed: int,
        shift: float, relu: bool = False) -> list[dict]:
    rows = []
    for n_classes in class_counts:
        X, y = synthetic_features(n_images, dims, n_classes, seed, shift, relu=relu)
        splits = RepeatedStratifiedKFold(n_splits=2, n_repeats=5, random_state=seed).split(X, y)
        for r, (train, test) in enumerate(splits):
            if r >= runs:
                break
            row = {"classes": n_classes, "run": f"{r // 2 + 1}x{r % 2 + 1}"}
            for name, fit in METHODS.items():
                start = time.perf_counter()
                result = fit(X[train], y[train], seed)
                row[f"{name} s"] = time.perf_counter() - start
                row[f"{name} C"] = result.C_
                row[f"{name} auc"] = held_out_auc(y[test], decision_scores(result, X[test]),
                                              n_classes)
            rows.append(row)
            print(format_row(row), file=sys.stderr, flush=True)
    return rows


def format_row(row: dict) -> str:
    ref_s, ref_auc = row["reference protocol s"], row["reference protocol auc"]
    cells = [str(row["classes"]), row["run"]]
    for name in ("paper", "paper 10 splits", "fast reference"):
        cells += [f"{row[f'{name} s']:.2f}", f"{ref_s / row[f'{name} s']:.0f}x",
                  f"{row[f'{name} auc'] - ref_auc:+.4f}", f"{row[f'{name} C']:g}"]
    cells += [f"{ref_s:.1f}", f"{ref_auc:.4f}", f"{row['reference protocol C']:g}"]
    return "| " + " | ".join(cells) + " |"


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"# SVM selection benchmark: {args.n_images} images x {args.dims} features, "
             f"{args.runs} runs of 5x2, C in logspace(-3, 4, 8), seed {args.seed}, "
             f"shift {args.shift}",
             "",
             "Times in seconds for one training half (selection + refit); speed = reference "
             "protocol time / this time; dAUC = this test AUC - reference protocol test AUC "
             "(3 classes: the paper's one-vs-one mean).", "",
             "| classes | run | paper s | paper speed | paper dAUC | paper C | paper-10 s | "
             "paper-10 speed | paper-10 dAUC | paper-10 C | fast-ref s | "
             "fast-ref speed | fast-ref dAUC | fast-ref C | reference s | reference AUC | "
             "reference C |",
             "|" + "---|" * 17]
    lines += [format_row(row) for row in rows]
    for name in ("fast reference", "paper", "paper 10 splits"):
        speed = [r["reference protocol s"] / r[f"{name} s"] for r in rows]
        diff = [abs(r[f"{name} auc"] - r["reference protocol auc"]) for r in rows]
        line = (f"- {name}: speed-up {min(speed):.0f}x to {max(speed):.0f}x; largest |dAUC| "
                f"{max(diff):.4f}")
        if name == "fast reference":  # the like-for-like comparison
            met = min(speed) >= 10 and max(diff) <= 0.01
            line += f". Goal (>= 10x, |dAUC| <= 0.01): {'met' if met else 'NOT met'}."
        else:
            d = sorted(r[f"{name} auc"] - r["reference protocol auc"] for r in rows)
            line += (f"; dAUC min {d[0]:+.4f} / median {float(np.median(d)):+.4f} / max "
                     f"{d[-1]:+.4f} / mean {float(np.mean(d)):+.4f}, within 0.01 in "
                     f"{sum(abs(x) <= 0.01 for x in d)} of {len(d)} runs ("
                     + ("one validation split" if name == "paper" else "10 splits")
                     + ", no class weights: a different protocol, no AUC goal).")
        lines += ["", line]
    return "\n".join(lines) + "\n"


def stage_section(quick: bool = False, seed: int = 0) -> str:
    """The SVM stage's wall time (demo and an Atlas-sized grid) against the reference protocol.

    Used by ``benchmarks/run.py`` (``make bench``); returns its section of BENCHMARKS.md.

    1. ``python -m pipeline svm`` on a copy of the demo experiment (its files copied to a
       temporary folder, so the demo's results and ``make``'s timestamps stay untouched).
    2. The stage's code path (``classify.plan_runs``, then ``classify.run_one`` in a joblib
       ``Parallel`` on every core, as ``classify.run`` calls them) over an Atlas-sized grid:
       ``n_images`` x 4,096 synthetic features, 8 cells x 3 designs x 10 runs of 5x2 folds from
       ``folds.make_folds``, once with ``selection="paper"`` (the default) and once with
       ``selection="reference"`` (the like-for-like comparison).
    3. ``reference_protocol_fit`` on a random sample of runs per design (same training and test
       images), in parallel like the stage, its grid time extrapolated from the sample.

    Args:
        quick: tiny sizes (a smoke check of the code, not a measurement).
        seed: seed of the features, folds, validation splits and the sample.
    """
    import os
    import subprocess
    import tempfile
    from types import SimpleNamespace

    import pandas as pd
    from bench_extract import md_table
    from bench_startup import demo_copy
    from joblib import Parallel, delayed

    from pipeline.stages import svm as classify
    from pipeline.cache.files import save_npy, write_text
    from pipeline.cache.entries import finish_entry
    from pipeline.protocol import SOURCES, Cell, per_training_half
    from pipeline.data.designs import DESIGNS, apply_design
    from pipeline.folds.crossval import make_folds
    from pipeline.folds.table import half_ids, train_ids_digest

    # quick: 2 cells x 1 repeat of tiny features, so the whole section runs in seconds
    # One sampled reference run per design: on ReLU-like features at 1,000 images one takes
    # minutes (libsvm's Platt calibration), and the agreement part below has the distributions.
    n_images, dims, per_design, repeats = (120, 64, 1, 1) if quick else (1000, 4096, 1, 5)
    root = Path(__file__).resolve().parent.parent
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # --- 1. the demo ---
        config, note = demo_copy(tmp, quick=quick)
        demo_config = str(config)
        command = [sys.executable, "-m", "pipeline", "svm", "--config", str(config)]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=root, capture_output=True, text=True)
        demo_s = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
        demo, copy = root / "experiments" / "demo", tmp / "demo"
        same = (not quick and pd.read_csv(copy / "metrics.csv").equals(
            pd.read_csv(demo / "metrics.csv")))
        n_demo = len(pd.read_csv(copy / "metrics.csv"))
        lines += ["Command: `python -m pipeline svm --config experiments/demo.toml`, run on a "
                  "copy of the demo's input files" + (f" ({note})" if note else "") + ".", "",
                  f"- Demo grid: **{demo_s:.1f} s** wall for {n_demo} runs (process start to "
                  f"exit; {os.cpu_count()} cores)" + ("." if quick else
                  f"; metrics identical to `experiments/demo/metrics.csv`: "
                  f"{'yes' if same else 'NO'}."), ""]

        # --- 2. the Atlas-sized grid through the stage's code ---
        X, y = synthetic_features(n_images, dims, 3, seed, relu=True)
        categories = np.array(["benign", "bcc", "melanoma"])[y]  # PROPORTIONS[3]'s order
        ids = [f"img{i:05d}" for i in range(n_images)]
        table = pd.DataFrame({"image": ids, "category": categories, "diagnosis": categories,
                              "group": ids})
        rng = np.random.default_rng(seed)
        cells = [Cell(source, ft) for source in SOURCES for ft in (False, True)]
        cells = cells[:2] if quick else cells
        folds = {d: make_folds(table, d, seed, repeats) for d in DESIGNS}
        index = []
        for number, cell in enumerate(cells):
            # Each cell its own features: rows swapped within each class, so labels still fit.
            order = np.arange(n_images)
            for k in range(3):
                members = np.flatnonzero(y == k)
                order[members] = rng.permutation(members)
            base = tmp / "features_cache" / "features" / f"cell{number}"
            base.mkdir(parents=True)
            save_npy(base / "features.npy", X[order])
            write_text(base / "images.txt", "\n".join(ids) + "\n")
            per_half = per_training_half(cell.source, cell.finetune)
            keys = ([("", 0, 0)] if not per_half else
                    [(d, r, h) for d in DESIGNS for r in range(1, repeats + 1) for h in (1, 2)])
            for d, r, h in keys:
                # A fine-tuned (or centred) cell's entry records the training half it came from
                # (the svm stage checks it against the folds); the arrays are hard links of the
                # cell's.
                entry = base if not per_half else base.with_name(f"{base.name}-{d}-{r}-{h}")
                if entry != base:
                    entry.mkdir()
                    for name in ("features.npy", "images.txt"):
                        os.link(base / name, entry / name)
                train = train_ids_digest(half_ids(folds[d], r, h)) if per_half else None
                finish_entry(entry, {"synthetic": cell.name, "train_ids": train},
                             ["features.npy", "images.txt"])
                index.append({"source": cell.source, "finetune": cell.finetune, "design": d,
                              "repeat": r, "train_half": h, "entry": str(entry)})
        labels = {d: apply_design(table, d).set_index("image")["label"] for d in DESIGNS}
        config = SimpleNamespace(designs=tuple(DESIGNS), path="(synthetic)",
                                 path_of=lambda name: name)
        runs = classify.plan_runs(config, cells, pd.DataFrame(index), folds)
        grid = {}
        for selection in ("paper", "reference"):
            settings = {"C_grid": C_GRID.tolist(), "selection": selection,
                        "validation_fraction": 0.1}
            start = time.perf_counter()
            results = Parallel(n_jobs=-1, batch_size=1)(
                delayed(_timed_run_one)(r, folds[r.design], labels[r.design], settings, seed)
                for r in runs)
            grid[selection] = {"wall": time.perf_counter() - start, "results": results}
            print(f"  stage grid, selection={selection}: {len(runs)} runs in "
                  f"{grid[selection]['wall']:.1f} s", file=sys.stderr, flush=True)

        # --- 3. the reference protocol on a sample of the same runs ---
        # A two-class and the three-class design: one round of 2 workers (minutes each run).
        sampled = list(DESIGNS) if quick else [list(DESIGNS)[0], list(DESIGNS)[-1]]
        picks = [i for d in sampled for i in rng.choice(
            [i for i, r in enumerate(runs) if r.design == d], per_design, replace=False)]
        start = time.perf_counter()
        reference = Parallel(n_jobs=-1, batch_size=1)(
            delayed(_reference_run)(runs[i], folds[runs[i].design], labels[runs[i].design], seed)
            for i in picks)
        reference_wall = time.perf_counter() - start
        print(f"  reference protocol: {len(picks)} runs in {reference_wall:.1f} s",
              file=sys.stderr, flush=True)

        # --- 4. agreement with the reference protocol: dAUC distributions, alternatives ---
        import bench_agreement

        agreement = bench_agreement.section(quick, demo_config=demo_config, seed=seed)

    workers = min(len(picks), os.cpu_count() or 1)
    table_rows, speed, diff = [], [], []
    for i, ref in zip(picks, reference):
        run = runs[i]
        fast, paper = grid["reference"]["results"][i], grid["paper"]["results"][i]
        speed.append(ref["seconds"] / fast["seconds"])
        diff.append(fast["auc"] - ref["auc"])
        table_rows.append([f"{'+'.join([run.source] + (['ft'] if run.finetune else []))}",
                           run.design, f"{run.repeat}/{run.test_half}",
                           f"{fast['seconds']:.2f}", f"{ref['seconds']:.1f}",
                           f"{speed[-1]:.0f}x", f"{fast['auc']:.4f}", f"{ref['auc']:.4f}",
                           f"{diff[-1]:+.4f}", f"{paper['seconds']:.2f}", f"{paper['auc']:.4f}"])
    per_run_ref = float(np.mean([r["seconds"] for r in reference]))
    ref_grid = per_run_ref * len(runs) / (os.cpu_count() or 1)
    met = min(speed) >= 10 and max(abs(d) for d in diff) <= 0.01
    lines += [
        f"Atlas-sized grid: {n_images} images x {dims} synthetic ReLU-like features "
        f"(`bench_svm.synthetic_features(relu=True)`: non-negative, ~70% zeros, like fc7's; "
        f"3 classes, benign/bcc/melanoma "
        f"{'/'.join(str(int(p * 100)) for p in PROPORTIONS[3])} %), {len(cells)} cells x "
        f"{len(DESIGNS)} designs x {2 * repeats} runs = {len(runs)} runs, folds from "
        "`folds.make_folds`, "
        f"C in logspace(-3, 4, 8), seed {seed}; one feature entry per cell. Measured by "
        "`bench_svm.stage_section` (`python benchmarks/run.py`, section svm): `classify.plan_runs` "
        "and `classify.run_one` in `joblib.Parallel(n_jobs=-1)`, as the stage runs them.", "",
        md_table(["stage setting", "runs", "wall s", "s per run (in a worker)"],
                 [[f"`selection = \"{sel}\"`" + (" (default)" if sel == "paper" else ""),
                   len(runs), f"{g['wall']:.1f}",
                   f"{np.mean([r['seconds'] for r in g['results']]):.2f}"]
                  for sel, g in grid.items()]
                 + [["reference protocol (`reference_protocol_fit`), extrapolated", len(runs),
                     f"~{ref_grid:.0f}", f"{per_run_ref:.1f} (mean of {len(picks)} sampled)"]]),
        "",
        f"Sampled runs ({per_design} per design of {', '.join(sampled)}, drawn at random; the reference protocol ran "
        f"{len(picks)} runs in {reference_wall:.0f} s on {workers} workers, one core each, as the "
        "stage's runs do). *Stage* = the stage with `selection = \"reference\"` (10 "
        "validation splits, balanced class weights: the reference protocol's choice of C), the "
        "like-for-like comparison; the default `paper` selection (one split) is shown for "
        "its time and AUC. AUC: the paper's (one-vs-one mean for 3 classes).", "",
        md_table(["cell", "design", "repeat/test half", "stage s", "reference s", "speed-up",
                  "stage AUC", "reference AUC", "dAUC", "paper-selection s",
                  "paper-selection AUC"], table_rows), "",
        f"- Grid: the stage (`selection = \"reference\"`) took {grid['reference']['wall']:.0f} s; "
        f"the reference protocol would take ~{ref_grid:.0f} s (mean sampled run x {len(runs)} "
        f"runs / {os.cpu_count()} cores, an extrapolation): "
        f"**{ref_grid / grid['reference']['wall']:.0f}x** faster "
        f"(default `paper` selection: {ref_grid / grid['paper']['wall']:.0f}x).",
        f"- Per sampled run: speed-up {min(speed):.0f}x to {max(speed):.0f}x, largest |dAUC| "
        f"{max(abs(d) for d in diff):.4f}. Goal (>= 10x, |dAUC| <= 0.01 per run): "
        + ("**met**." if met else "**NOT met**."),
    ]
    lines += ["", "### Agreement with the reference protocol: dAUC distributions", "", agreement]
    if quick:
        lines += ["", "(`--quick`: tiny sizes; the figures check the code, they measure nothing.)"]
    return "\n".join(lines) + "\n"


def _run_data(run, folds, labels):
    """The training and test features and labels of a run, selected as ``classify.run_one`` does."""
    import pandas as pd

    from pipeline.features.extraction import load_features

    X, ids = load_features(run.features)
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    fold = folds[folds["repeat"] == run.repeat]
    train_ids = fold.loc[fold["half"] != run.test_half, "image"].to_numpy()
    test_ids = fold.loc[fold["half"] == run.test_half, "image"].to_numpy()
    return (np.asarray(X[row_of[train_ids].to_numpy()]), labels[train_ids].to_numpy(),
            np.asarray(X[row_of[test_ids].to_numpy()]), labels[test_ids].to_numpy())


def _timed_run_one(run, folds, labels, settings: dict, seed: int) -> dict:
    """``classify.run_one`` and its wall time (in the worker)."""
    from pipeline.stages import svm as classify

    start = time.perf_counter()
    row, _, _ = classify.run_one(run, folds, labels, settings, seed, 0.0)
    return {"seconds": time.perf_counter() - start, "auc": row["auc"], "C": row["C"]}


def _reference_run(run, folds, labels, seed: int) -> dict:
    """``reference_protocol_fit`` on the run's training half, scored on its test half."""
    from pipeline.data.designs import get_design
    from pipeline.evaluation.metrics import cell_metrics

    start = time.perf_counter()
    X_train, y_train, X_test, y_test = _run_data(run, folds, labels)
    classes = get_design(run.design).classes
    fit = reference_protocol_fit(X_train, y_train, C_GRID, seed, classes=classes)
    auc = cell_metrics(y_test, decision_scores(fit, X_test), classes)["auc"]
    return {"seconds": time.perf_counter() - start, "auc": auc, "C": fit.C_}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=1000, help="images in the whole set")
    parser.add_argument("--dims", type=int, default=4096, help="feature dimensions")
    parser.add_argument("--runs", type=int, default=10, help="runs of the 5x2 split (1-10)")
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 3], choices=[2, 3],
                        help="class counts to benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float, default=3.0, help="class mean shift (signal)")
    parser.add_argument("--relu", action="store_true",
                        help="non-negative sparse (ReLU-like) features, as fc7's")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 10:
        parser.error(f"--runs must be 1..10 (5x2 has 10 runs); got {args.runs}")
    rows = run(args.n_images, args.dims, args.runs, args.classes, args.seed, args.shift,
               args.relu)
    report = markdown(rows, args)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
