"""The evidence that training worked, from the trained networks' manifests, for ``report.md``.

For every trained network the manifest (``pipeline.training.netstore``) records its history, the
SGD steps taken, the validation split's majority-class share, chance (1/k) and how far the weights
moved. Two checks, both shown: the validation accuracy at the kept epoch against the majority share
(what always answering the commonest class scores), and the balanced accuracy (mean recall per
class) against chance. A network "learned" when its balanced accuracy beats chance: a network
trained on class-balanced epochs (minority augmentation) shifts its prior towards the rare classes,
so its plain accuracy can fall below the majority share while it separates the classes.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from pipeline.protocol import cell_name
from pipeline.reporting.markdown import markdown_table

COLUMNS = ["source", "finetune", "design", "steps", "epochs", "best_epoch", "val_accuracy",
           "val_majority", "val_balanced_accuracy", "val_chance", "weight_change",
           "beat_majority", "learned"]


def training_rows(manifests: Iterable[dict]) -> pd.DataFrame:
    """One row per trained network: ``source, finetune, design, steps, epochs, best_epoch,
    val_accuracy, val_majority, val_balanced_accuracy, val_chance, weight_change, beat_majority,
    learned`` (accuracies at the kept epoch).

    Manifests of networks that were not trained (no ``history``) are left out. A manifest written
    before balanced accuracy was recorded has NaN there and "learned" falls back to beating the
    majority share.
    """
    rows = []
    for m in manifests:
        history = m.get("history") or []
        if not history:
            continue
        best = history[max(0, int(m.get("best_epoch", 1)) - 1)]
        majority = float(m.get("val_majority", np.nan))
        accuracy = float(best["val_accuracy"])
        balanced = float(best.get("val_balanced_accuracy", np.nan))
        chance = float(m.get("val_chance", np.nan))
        beat = accuracy > majority
        rows.append({"source": m["source"], "finetune": m.get("stage") == "finetune",
                     "design": m.get("design", ""), "steps": int(m.get("steps", 0)),
                     "epochs": len(history), "best_epoch": int(m.get("best_epoch", 0)),
                     "val_accuracy": accuracy, "val_majority": majority,
                     "val_balanced_accuracy": balanced, "val_chance": chance,
                     "weight_change": float(m.get("weight_change", np.nan)),
                     "beat_majority": beat,
                     "learned": bool(balanced > chance) if np.isfinite(balanced) else beat})
    return pd.DataFrame(rows, columns=COLUMNS)


def _share(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "—"


def training_section(rows: pd.DataFrame) -> list[str]:
    """``report.md``'s section on training: source networks one by one, fine-tuned ones summed
    up per cell and design."""
    lines = ["## Did the networks learn?", ""]
    if rows.empty:
        return lines + ["No network was trained in this experiment (no fine-tuning, no "
                        "Retinopathy source task).", ""]
    lines += ["Per trained network: the SGD steps it took; at the epoch kept (lowest validation "
              "loss), its validation accuracy against the majority-class share of its validation "
              "split (what always answering the commonest class scores) and its balanced accuracy "
              "(mean recall per class) against chance (1/k, what always answering one class "
              "scores); and how far training moved its weights (‖w_end − w_start‖ / ‖w_start‖). "
              "*Learned* means a balanced accuracy above chance: a network trained on "
              "class-balanced epochs (minority augmentation) leans towards the rare classes, which "
              "can put its plain accuracy below the majority share while it separates them.", ""]
    source = rows[~rows["finetune"]]
    if len(source):
        lines += ["Source networks (trained on the Retinopathy source task):", "",
                  markdown_table(["Source", "Epochs", "SGD steps", "Kept epoch",
                                  "Val. accuracy", "Majority share", "Balanced acc.", "Chance",
                                  "Weights moved", "Learned"],
                                 [[r.source, r.epochs, r.steps, r.best_epoch,
                                   _share(r.val_accuracy), _share(r.val_majority),
                                   _share(r.val_balanced_accuracy), _share(r.val_chance),
                                   f"{100 * r.weight_change:.1f}%", "yes" if r.learned else "NO"]
                                  for r in source.itertuples()]), ""]
    tuned = rows[rows["finetune"]]
    if len(tuned):
        table = []
        for (src, design), part in tuned.groupby(["source", "design"], sort=False):
            table.append([cell_name(src, True), design, len(part), int(part["steps"].median()),
                          _share(part["val_accuracy"].mean()),
                          _share(part["val_majority"].mean()),
                          _share(part["val_balanced_accuracy"].mean()),
                          _share(part["val_chance"].mean()),
                          f"{100 * part['weight_change'].median():.1f}%",
                          f"{int(part['beat_majority'].sum())}/{len(part)}",
                          f"{int(part['learned'].sum())}/{len(part)}"])
        lines += ["Fine-tuned networks, per cell and design (means over runs; steps and weight "
                  "change: medians):", "",
                  markdown_table(["Cell", "Design", "Runs", "SGD steps", "Val. accuracy",
                                  "Majority share", "Balanced acc.", "Chance", "Weights moved",
                                  "Beat the majority", "Learned"], table),
                  ""]
    return lines
