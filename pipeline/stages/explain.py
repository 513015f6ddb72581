"""Command ``explain``: what a cell's network + SVM looks at in chosen test images of one run.

``python -m pipeline explain --config EXP --cell CELL --design DESIGN [--run REPEAT/TEST_HALF]
[--images N | --image ID...] [--method ig|gradcam|both] [--steps S]`` explains the SVM's decision
score through the network (``w . L2(fc7) + b``, differentiable end to end) on test images of one
run of ``predictions.csv`` (default: its first run). The SVM itself is not stored by ``svm``, so
it is refitted here from the cached features exactly as the ``svm`` stage fits it (same C
selection, seed and training half) and refused unless it reproduces the run's
``predictions.csv`` scores. The network is the one whose weights made the run's features
(``runs.csv`` -> feature entry -> weights digest), with the features' preprocessing and mean.

Writes ``explain/<cell>_<design>/``: ``<image>_<method>.png`` overlays (``/`` in ids -> ``_``), ``grid.png`` (linked from
``report.md`` by the next ``report``) and ``attributions.csv``: ``image, run, method, target, f_x,
f_baseline, attribution_sum, score`` (``score`` from ``predictions.csv``; for integrated
gradients ``attribution_sum ~ f_x - f_baseline``, the completeness check).
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np
import pandas as pd

from pipeline.cache.entries import entry_complete
from pipeline.cache.files import read_json, short_key, write_csv
from pipeline.classifiers.svm import decision_scores, select_and_fit
from pipeline.data.designs import apply_design, get_design
from pipeline.compute.cluster import open_client
from pipeline.compute.farm import Task, call, run_tasks
from pipeline.console import log
from pipeline.errors import PipelineError
from pipeline.experiment import artifacts
from pipeline.experiment.config import add_config_arguments, config_from_args
from pipeline.explain.attributions import DEFAULT_STEPS, METHODS
from pipeline.explain.entries import attribution_key, attribution_task, read_attribution
from pipeline.features.extraction import load_features
from pipeline.folds.table import half_ids
from pipeline.models.device import device_kind
from pipeline.protocol import Cell
from pipeline.stages.report import read_results

TARGET = "svm decision score w.L2(features)+b"
SCORE_TOLERANCE = 1e-6  # refit against predictions.csv (written with full float precision)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--cell", required=True, help="the cell, e.g. imagenet+ft")
    parser.add_argument("--design", required=True, help="a 2-class design")
    parser.add_argument("--run", default=None, metavar="REPEAT/TEST_HALF",
                        help="the run, as in predictions.csv (default: its first run)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--images", type=int, default=4, metavar="N",
                       help="N test images spread over the run's score ranking (default 4)")
    which.add_argument("--image", nargs="+", metavar="ID", help="these test images of the run")
    parser.add_argument("--method", choices=("ig", "gradcam", "both"), default="both")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"integrated gradients' trapezoid intervals (default {DEFAULT_STEPS})")


def netstore_mean(net_entry: str):
    """A network entry's own mean as a list (None: the backbone's own preprocessing)."""
    from pipeline.training.netstore import load_mean

    mean = load_mean(net_entry)
    return None if mean is None else [float(v) for v in mean]


def attributions(config, cell: Cell, design: str, run: tuple[int, int], net_entry: str, svm,
                 mean, images, ids: list[str], methods: list[str], steps: int) -> dict:
    """method -> one ``Attribution`` per image of ``ids``: cached entries read back, the missing
    ones computed as tasks (one per image and method) in this process or on the cluster of
    ``[compute]``; TensorFlow is imported only where the tasks run."""
    w, b = svm
    with open_client(artifacts.compute_settings(config)) as client:
        device = call(client, device_kind)
        entries, tasks = {}, []
        state = {"networks": {}, "models": {}}  # this process's; a worker keeps its own
        for image in ids:
            for method in methods:
                key = attribution_key(net_entry, w, b, mean, images.key, image, method, steps,
                                      device)
                entry = config.cache_dir / "attributions" / short_key(key)
                entries[image, method] = entry
                if not entry_complete(entry):
                    tasks.append(Task(
                        f"{cell.name} {design} run {run[0]}/{run[1]} image {image} {method}",
                        attribution_task, (net_entry, w, b, mean, str(images.path), image, method,
                                           steps, key, entry,
                                           *((state,) if client is None else ()))))
        computed = sum(run_tasks(client, tasks, "explain"))
    log(f"explain: {len(entries)} attributions, {computed} computed"
        + ("" if computed else " (all cached)"))
    return {m: [read_attribution(entries[i, m]) for i in ids] for m in methods}


def file_stem(image: str) -> str:
    """An image id as a file name (ids may hold folders: ``ABL/Abl034`` -> ``ABL_Abl034``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", image)


def run_predictions(predictions: pd.DataFrame, cell: Cell, design: str, run: str | None,
                    path) -> tuple[int, int, pd.DataFrame]:
    """(repeat, test half, the run's rows of ``predictions.csv``)."""
    rows = predictions[(predictions["source"] == cell.source)
                       & (predictions["finetune"] == cell.finetune)
                       & (predictions["design"] == design)]
    if rows.empty:
        raise PipelineError(f"{path} has no run of cell {cell.name} in design {design}; run "
                            "`make svm` with that cell and design in the experiment.")
    if run is None:
        repeat, half = min(zip(rows["repeat"], rows["test_half"]))
    else:
        try:
            repeat, half = (int(v) for v in run.split("/"))
        except ValueError:
            raise PipelineError(f"--run must be REPEAT/TEST_HALF, e.g. 1/2; got {run!r}.") from None
    part = rows[(rows["repeat"] == repeat) & (rows["test_half"] == half)]
    if part.empty:
        known = sorted({f"{r}/{h}" for r, h in zip(rows["repeat"], rows["test_half"])})
        raise PipelineError(f"--run {run}: {path} has no such run of {cell.name} {design}; runs "
                            f"are {', '.join(known)}.")
    return int(repeat), int(half), part


def refit_svm(config, design: str, repeat: int, test_half: int, features_entry: str,
              expected: pd.Series | pd.DataFrame):
    """The run's SVM, fitted again as the ``svm`` stage fits it; checked against its scores.

    ``expected``: the run's ``predictions.csv`` scores indexed by image, a Series (``score``,
    2-class designs) or a frame of the ``score_<class>`` columns in class order (3 classes).
    Returns ``(FitResult, largest absolute score difference)``."""
    table = artifacts.manifest(config)
    folds = artifacts.folds(config, design, table)
    labels = apply_design(table, design).set_index("image")["label"]
    X, ids = load_features(features_entry)
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    train = np.array(half_ids(folds, repeat, 3 - test_half), dtype=object)
    test = np.array(half_ids(folds, repeat, test_half), dtype=object)
    svm = config["svm"]
    fit = select_and_fit(np.asarray(X[row_of[train].to_numpy()]), labels[train].to_numpy(),
                         C_grid=svm["C_grid"], selection=svm["selection"],
                         validation_fraction=svm["validation_fraction"],
                         n_splits=svm.get("selection_splits") or None, seed=config.seed,
                         classes=get_design(design).classes)
    values = decision_scores(fit, np.asarray(X[row_of[test].to_numpy()]))
    scores = pd.DataFrame(values.reshape(len(test), -1), index=test)
    if set(scores.index) != set(expected.index):
        raise PipelineError(f"the run's test images in {config.path_of('predictions.csv')} are "
                            "not those the folds give it now; rerun `make svm`.")
    want = np.asarray(expected.to_numpy(), dtype=np.float64).reshape(len(expected), -1)
    gap = float(np.max(np.abs(scores.loc[expected.index].to_numpy() - want)))
    if gap > SCORE_TOLERANCE:
        raise PipelineError(f"the SVM refitted from {features_entry} gives scores up to {gap:.3g} "
                            f"away from {config.path_of('predictions.csv')}: the features or "
                            "[svm] settings changed since `make svm`; rerun it.")
    return fit, gap


def network_entry_of(config, features_entry: str) -> str:
    """The stored network entry whose weights made a feature entry (matched by weights digest;
    read from the manifests, without loading the network)."""
    digest = read_json(f"{features_entry}/manifest.json")["digest"]
    candidates = [info["entry"] for info in artifacts.networks(config).values()
                  if info["status"] == "ok"]
    if config.path_of("finetuned.csv").is_file():
        candidates += artifacts.read_index(config, "finetuned.csv")["entry"].tolist()
    for entry in candidates:
        if read_json(f"{entry}/manifest.json").get("digest") == digest:
            return str(entry)
    raise PipelineError(f"no network of networks.json or finetuned.csv made the features in "
                        f"{features_entry}; rerun `make pretrain finetune features svm`.")


def network_of(config, features_entry: str):
    """The stored network whose weights made a feature entry, loaded (imports TensorFlow)."""
    from pipeline.training import netstore

    return netstore.load(network_entry_of(config, features_entry))


def chosen_images(part: pd.DataFrame, n: int, ids: list[str] | None) -> pd.DataFrame:
    """The run's rows to explain: ``ids``, or ``n`` spread evenly over the score ranking."""
    if ids:
        missing = [i for i in ids if i not in set(part["image"])]
        if missing:
            raise PipelineError(f"--image {missing[:3]} are not test images of this run; choose "
                                f"from e.g. {part['image'].head(5).tolist()}.")
        return part.set_index("image").loc[ids].reset_index()
    if n < 1:
        raise PipelineError(f"--images must be >= 1; got {n}.")
    ranked = part.sort_values(["score", "image"], ascending=[False, True])
    picks = np.unique(np.linspace(0, len(ranked) - 1, min(n, len(ranked))).round().astype(int))
    return ranked.iloc[picks].reset_index(drop=True)


def run(args: argparse.Namespace) -> int:
    from pipeline.explain.overlay import write_grid, write_overlay
    from pipeline.explain.targets import linear_svm

    config = config_from_args(args)
    try:
        cell = Cell.parse(args.cell)
    except ValueError as exc:
        raise PipelineError(f"--cell: {exc}.") from None
    design = get_design(args.design).name
    if get_design(design).positive is None:
        raise PipelineError(f"--design {design}: attributions explain one decision score, so "
                            "they need a 2-class design.")
    _, predictions = read_results(config)
    repeat, half, part = run_predictions(predictions, cell, design, args.run,
                                         config.path_of("predictions.csv"))
    runs = artifacts.read_index(config, "runs.csv")
    artifacts.check_runs(config, runs)
    entry = runs[(runs["source"] == cell.source) & (runs["finetune"] == cell.finetune)
                 & (runs["design"] == design) & (runs["repeat"] == repeat)
                 & (runs["test_half"] == half)]["features"].iloc[0]
    fit, gap = refit_svm(config, design, repeat, half, entry,
                         part.set_index("image")["score"].astype(float))
    w, b = linear_svm(fit.model)
    net_entry = network_entry_of(config, entry)
    recorded = read_json(f"{entry}/manifest.json").get("mean")
    mean = recorded if recorded is not None else netstore_mean(net_entry)
    rows = chosen_images(part, args.images, args.image)
    images = artifacts.target_images(config)
    pixels = images.get(rows["image"].tolist())
    methods = list(METHODS) if args.method == "both" else [args.method]
    maps = attributions(config, cell, design, (repeat, half), net_entry, (w, b), mean, images,
                        rows["image"].tolist(), methods, args.steps)
    out = config.path_of("explain") / f"{cell.name}_{design}"
    out.mkdir(parents=True, exist_ok=True)
    records, titles = [], []
    for i, r in enumerate(rows.itertuples()):
        titles.append(f"{r.image}\n{r.y_true}, score {r.score:.2f}")
        for method in methods:
            a = maps[method][i]
            write_overlay(out / f"{file_stem(r.image)}_{method}.png", pixels[i], a.values, method,
                          f"{cell.name} {design} run {repeat}/{half}: {r.image} ({r.y_true}), "
                          f"SVM score {a.f_x:.3f}")
            records.append({"image": r.image, "run": f"{repeat}/{half}", "method": method,
                            "target": TARGET, "f_x": a.f_x, "f_baseline": a.f_baseline,
                            "attribution_sum": a.attribution_sum, "score": float(r.score)})
    write_grid(out / "grid.png", list(pixels), {m: [a.values for a in maps[m]] for m in methods},
               titles, f"{cell.name}, {design}, run {repeat}/{half}: SVM score through the network")
    table = pd.DataFrame(records)
    write_csv(out / "attributions.csv", table)
    ig = table[table["method"] == "ig"]
    if len(ig):
        delta = (ig["f_x"] - ig["f_baseline"]).abs().clip(lower=1e-12)
        error = ((ig["attribution_sum"] - (ig["f_x"] - ig["f_baseline"])).abs() / delta).max()
        print(f"explain: integrated gradients, {args.steps} steps: completeness error up to "
              f"{100 * error:.2f}% of |f_x - f_baseline|", file=sys.stderr)
    print(f"explain: SVM refitted (scores within {gap:.1e} of predictions.csv); {len(rows)} "
          f"images -> {out}")
    return 0
