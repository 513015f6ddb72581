"""Stage ``svm``: a linear SVM for every cell, design and fold, on cached features only.

``python -m pipeline svm --config EXP`` reads ``features.csv`` (written by ``extract``), the folds
and the manifest, and for every run (cell x design x repeat x test half) L2-normalises the
features, picks C on a stratified validation split of the training half by AUC (on a hold-out,
on its validation part instead), refits on the whole training half and scores the test half
(``pipeline.classifiers.svm``). With ``classifier.kind =
"network"`` (Kim & Rocheteau) the entries hold the fine-tuned network's own softmax outputs and
the test half is scored with them (``network_scores``), the same files written. With ``classifier.metadata`` (Kim &
Rocheteau's age, sex, site) the encoded metadata, fitted on the training half, join the features
first (``pipeline.classifiers.metadata``). It writes the result-file contract:

- ``predictions.csv``: ``source, finetune, design, repeat, test_half, image, y_true``, then
  ``score`` for 2-class designs (higher = positive) or ``score_<class>`` per class for the 3-class
  design;
- ``metrics.csv``: ``source, finetune, design, repeat, test_half, auc, auc_ovr, ap, accuracy,
  sensitivity, specificity, f1, n_train, n_test, C``;
- ``runs.csv``: each run's provenance, ``source, finetune, design, repeat, test_half, train_ids,
  test_ids, features`` (digests of its training and test images, its feature entry), which the
  report checks against the current folds.

A fine-tuned cell's features are refused unless the network was fine-tuned on exactly the images
the current folds put in that training half.

It never imports TensorFlow (features are memory-mapped ``.npy`` files), so it starts in about a
second and reruns alone when only ``[svm]`` settings change. Runs go in parallel on every core,
or, with ``[compute]`` naming a cluster, on its workers (joblib's Dask backend).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.cache.entries import read_entry_manifest, verify_entry
from pipeline.cache.files import write_csv
from pipeline.classifiers.metadata import MetadataEncoder, join_metadata
from pipeline.classifiers.svm import decision_scores, select_and_fit
from pipeline.compute.cluster import open_client
from pipeline.data.designs import apply_design, get_design
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import cell_metrics
from pipeline.experiment import artifacts
from pipeline.experiment.config import add_config_arguments, config_from_args
from pipeline.features.extraction import OUTPUT_LAYER, load_features
from pipeline.folds.table import VALIDATION_PART, fold_runs, half_ids, train_ids_digest
from pipeline.protocol import cell_name, per_training_half

RESULT_KEYS = ["source", "finetune", "design", "repeat", "test_half"]
METRIC_COLUMNS = ["auc", "auc_ovr", "ap", "accuracy", "sensitivity", "specificity", "f1"]


@dataclass(frozen=True)
class Run:
    """One SVM run: a cell, a design, a repeat, the half it is tested on and its features."""

    source: str
    finetune: bool
    design: str
    repeat: int
    test_half: int
    features: str  # feature entry folder

    @property
    def name(self) -> str:
        return (f"{cell_name(self.source, self.finetune)} {self.design} repeat {self.repeat} "
                f"test half {self.test_half}")


def plan_runs(config, cells, features_index: pd.DataFrame, folds_by_design: dict) -> list[Run]:
    """Every run of ``cells``, with the feature entry it reads.

    Cells without fine-tuning read their source network's features (one entry for every design
    and fold); fine-tuned cells read the network fine-tuned on the run's training half.

    Raises:
        PipelineError: a run's features are missing from ``features.csv``, naming the cell and the
            command that makes them.
    """
    entries = {(r.source, bool(r.finetune), r.design, int(r.repeat), int(r.train_half)): r.entry
               for r in features_index.itertuples()}
    folds_file = {d: config.path_of(f"folds/{d}.csv") for d in config.designs}
    runs = []
    for cell in cells:
        for design in config.designs:
            for repeat, train_half, test_half in fold_runs(folds_by_design[design]):
                per_half = per_training_half(cell.source, cell.finetune)
                key = ((cell.source, cell.finetune, design, repeat, train_half) if per_half
                       else (cell.source, False, "", 0, 0))
                if key not in entries:
                    raise PipelineError(
                        f"features for cell {cell.name}, design {design}, repeat {repeat}, "
                        f"training half {train_half} are missing from "
                        f"{config.path_of('features.csv')}; run `make features EXP={config.path}`.")
                if per_half:
                    _check_provenance(entries[key], folds_by_design[design], repeat, train_half,
                                      f"cell {cell.name}, design {design}, repeat {repeat}, "
                                      f"training half {train_half}", folds_file[design], config)
                runs.append(Run(cell.source, cell.finetune, design, repeat, test_half,
                                entries[key]))
    return runs


def _check_provenance(features: str, folds: pd.DataFrame, repeat: int, train_half: int,
                      what: str, folds_file, config) -> None:
    """Refuse features made from other images than the fold's training half (a network fine-tuned
    on them, or the mean of the untrained network)."""
    # The manifest alone: the entry's files are verified by the process that loads them
    # (``load_features``), so planning hashes nothing and the first fit starts sooner.
    recorded = read_entry_manifest(features).get("train_ids")
    current = train_ids_digest(half_ids(folds, repeat, train_half))
    if recorded != current:
        raise PipelineError(
            f"the features of {what} come from a network fine-tuned (or centred) on other images "
            f"than {folds_file} now puts in that training half (the folds changed afterwards, "
            "so the run would score images it was trained on). Rerun "
            f"`make finetune features svm EXP={config.path}` (make does so by itself when the "
            "folds file is newer).")


def network_scores(probabilities: np.ndarray) -> np.ndarray:
    """The scores of the network as the classifier, from its softmax outputs of shape (n, k):
    for two classes the log-odds ``log p1 − log p0`` (higher = positive; threshold 0 is the
    network's own argmax decision, as 0 is the SVM's), for more the log-probabilities, shape
    (n, k). Probabilities are clipped to [1e-7, 1] first (float32 softmax outputs may be 0)."""
    logp = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-7, 1.0))
    return logp[:, 1] - logp[:, 0] if logp.shape[1] == 2 else logp


def run_one(run: Run, folds: pd.DataFrame, labels: pd.Series, svm: dict, seed: int,
            threshold: float, root: str | None = None,
            metadata: pd.DataFrame | None = None,
            kind: str = "svm") -> tuple[dict, pd.DataFrame]:
    """Fit the SVM of one run on its training half and score its test half.

    Args:
        run: the run.
        folds: the design's folds (``image, repeat, half``).
        labels: the design's label of every kept image, indexed by image id.
        svm: the ``[svm]`` settings.
        seed: seed of the validation split.
        threshold: decision threshold of the 2-class metrics.
        root: the folder a relative feature entry is relative to (the calling process's working
            folder: a reused worker process may have started in another one); default: this
            process's.
        metadata: ``classifier.metadata`` columns of the manifest indexed by image (None or no
            columns: images only). Encoded on the training half (``MetadataEncoder``) and joined
            to the features (``join_metadata``, whose docstring states the scaling).
        kind: ``"svm"``, or ``"network"``: the entry holds the fine-tuned network's softmax
            outputs, scored as they are (``network_scores``), nothing fitted (``C`` is NaN).

    Returns:
        The ``metrics.csv`` row, the ``predictions.csv`` rows and the ``runs.csv`` row (the run's
        provenance: digests of its training and test images, its feature entry).
    """
    X, ids = load_features(os.path.join(root, run.features) if root else run.features)
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    # Two halves per repeat: the run trains on the one it does not test on.
    train_ids = np.array(half_ids(folds, run.repeat, 3 - run.test_half), dtype=object)
    test_ids = np.array(half_ids(folds, run.repeat, run.test_half), dtype=object)
    # A hold-out's validation part (half 3) picks C; 5x2 and official splits have none.
    val_ids = np.array(half_ids(folds, run.repeat, VALIDATION_PART), dtype=object)
    missing = [i for i in np.concatenate([train_ids, test_ids, val_ids]) if i not in row_of.index]
    if missing:
        raise PipelineError(f"feature entry {run.features} lacks {len(missing)} images of run "
                            f"{run.name} (e.g. {missing[:3]}); rerun `make features`.")
    classes = get_design(run.design).classes
    X_train = np.asarray(X[row_of[train_ids].to_numpy()])
    X_test = np.asarray(X[row_of[test_ids].to_numpy()])
    y_train, y_test = labels[train_ids].to_numpy(), labels[test_ids].to_numpy()
    if kind == "network":
        entry = os.path.join(root, run.features) if root else run.features
        layer = verify_entry(entry).get("layer")
        if layer != OUTPUT_LAYER or X_test.shape[1] != len(classes):
            raise PipelineError(f"feature entry {run.features} of run {run.name} holds layer "
                                f"{layer!r}, not the network's {len(classes)} outputs that "
                                "`classifier.kind = \"network\"` scores; rerun `make features`.")
        scores, C = network_scores(X_test), np.nan
    else:
        validation = (np.asarray(X[row_of[val_ids].to_numpy()]), labels[val_ids].to_numpy(),
                      val_ids) if len(val_ids) else None
        scores, C = _svm_scores(X_train, y_train, X_test, classes, train_ids, test_ids, svm,
                                seed, metadata, validation)
    metrics = cell_metrics(y_test, scores, classes, threshold if len(classes) == 2 else 0.0)
    keys = {"source": run.source, "finetune": run.finetune, "design": run.design,
            "repeat": run.repeat, "test_half": run.test_half}
    row = {**keys, **{m: metrics.get(m, np.nan) for m in METRIC_COLUMNS},
           "n_train": len(train_ids), "n_test": len(test_ids), "C": C}
    if len(classes) == 2:
        row["auc_ovr"] = metrics["auc"]  # one-vs-rest of two classes is the AUC itself
        score_columns = {"score": scores}
    else:
        score_columns = {f"score_{c}": scores[:, k] for k, c in enumerate(classes)}
    predictions = pd.DataFrame({**keys, "image": test_ids, "y_true": y_test, **score_columns})
    provenance = {**keys, "train_ids": train_ids_digest(train_ids),
                  "test_ids": train_ids_digest(test_ids), "features": run.features}
    return row, predictions, provenance


def _svm_scores(X_train, y_train, X_test, classes, train_ids, test_ids, svm, seed, metadata,
                validation=None):
    """The SVM's test scores and chosen C, metadata joined first when given. ``validation``:
    ``(X, y, ids)`` of a hold-out's validation part, on which C is chosen (else on a split of the
    training part, ``svm.validation_fraction``)."""
    if metadata is not None and len(metadata.columns):
        encoder = MetadataEncoder(list(metadata.columns)).fit(metadata.loc[train_ids])

        def joined(X, ids):
            return join_metadata(X, encoder.transform(metadata.loc[ids]), len(metadata.columns))

        X_train, X_test = joined(X_train, train_ids), joined(X_test, test_ids)
        if validation is not None:
            validation = (joined(validation[0], validation[2]), *validation[1:])
    fit = select_and_fit(X_train, y_train, C_grid=svm["C_grid"], selection=svm["selection"],
                         validation_fraction=svm["validation_fraction"],
                         n_splits=svm.get("selection_splits") or None, seed=seed,
                         classes=classes,
                         validation=None if validation is None else validation[:2])
    return decision_scores(fit, X_test), fit.C_


def _jobs(n_jobs: int, n_runs: int) -> int:
    """Worker count for ``n_runs`` runs: ``n_jobs`` (-1: every core), at most ``n_runs``, >= 1."""
    cores = os.cpu_count() or 1
    wanted = cores if n_jobs in (-1, 0) else (n_jobs if n_jobs > 0 else cores + 1 + n_jobs)
    return max(1, min(wanted, n_runs))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from joblib import Parallel, delayed, parallel_config

    started = time.perf_counter()
    config = config_from_args(args)
    table = artifacts.manifest(config)
    folds = {d: artifacts.folds(config, d, table) for d in config.designs}
    labels = {d: apply_design(table, d).set_index("image")["label"] for d in config.designs}
    index = artifacts.read_index(config, "features.csv")
    skipped = {(n["source"], n["finetune"]) for n in artifacts.not_run(config)}
    cells = [c for c in config.cells if (c.source, c.finetune) not in skipped]
    runs = plan_runs(config, cells, index, folds)
    svm = config["svm"]
    keys = list(config["classifier"]["metadata"])
    metadata = table.set_index("image")[keys] if keys else None
    with open_client(artifacts.compute_settings(config)) as client:
        # On a cluster, joblib's runs go to its workers (each reads the shared feature cache).
        with parallel_config(backend="dask") if client is not None else contextlib.nullcontext():
            # Never more workers than runs (each worker process costs seconds to start); one run
            # or n_jobs = 1 runs in this process. Results do not depend on n_jobs.
            n_jobs = svm["n_jobs"] if client is not None else _jobs(svm["n_jobs"], len(runs))
            args = (svm, config.seed, config["report"]["threshold"], os.getcwd(), metadata,
                    config["classifier"]["kind"])
            # The first run in this process, while no worker exists yet: the first fit starts
            # without waiting for joblib's worker processes (seconds); the rest in parallel.
            head = [] if client is not None or n_jobs == 1 or not runs else \
                [run_one(runs[0], folds[runs[0].design], labels[runs[0].design], *args)]
            results = head + Parallel(n_jobs=n_jobs, batch_size=1)(
                delayed(run_one)(r, folds[r.design], labels[r.design], *args)
                for r in tqdm(runs[len(head):], desc="svm", unit="run", file=sys.stderr))
    metrics = pd.DataFrame([row for row, _, _ in results],
                           columns=RESULT_KEYS + METRIC_COLUMNS + ["n_train", "n_test", "C"])
    predictions = pd.concat([p for _, p, _ in results], ignore_index=True) if results else \
        pd.DataFrame(columns=RESULT_KEYS + ["image", "y_true", "score"])
    runs_table = pd.DataFrame([r for _, _, r in results],
                              columns=RESULT_KEYS + ["train_ids", "test_ids", "features"])
    score_columns = [c for c in predictions.columns if c.startswith("score")]
    predictions = predictions[RESULT_KEYS + ["image", "y_true"] + sorted(score_columns)]
    write_csv(config.path_of("predictions.csv"), predictions)
    write_csv(config.path_of("runs.csv"), runs_table)
    write_csv(config.path_of("metrics.csv"), metrics)  # last: the make target
    print(f"svm: {len(runs)} runs ({len(cells)} cells x {len(config.designs)} designs) in "
          f"{time.perf_counter() - started:.1f} s -> {config.path_of('metrics.csv')}",
          file=sys.stderr)
    return 0
