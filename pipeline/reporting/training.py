"""The evidence that training worked, from the trained networks' manifests, for ``report.md``.

For every trained network the manifest (``pipeline.training.netstore``) records its history, the
SGD steps taken, the validation split's majority-class share and how far the weights moved. A
network "learned" when its validation accuracy at the kept epoch beats the majority share (always
answering the commonest class) and its weights moved by more than a few per cent.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from pipeline.protocol import cell_name
from pipeline.reporting.markdown import markdown_table


def training_rows(manifests: Iterable[dict]) -> pd.DataFrame:
    """One row per trained network: ``source, finetune, design, steps, epochs, best_epoch,
    val_accuracy`` (at the kept epoch), ``val_majority, weight_change, learned``.

    Manifests of networks that were not trained (no ``history``) are left out.
    """
    rows = []
    for m in manifests:
        history = m.get("history") or []
        if not history:
            continue
        best = history[max(0, int(m.get("best_epoch", 1)) - 1)]
        majority = float(m.get("val_majority", np.nan))
        rows.append({"source": m["source"], "finetune": m.get("stage") == "finetune",
                     "design": m.get("design", ""), "steps": int(m.get("steps", 0)),
                     "epochs": len(history), "best_epoch": int(m.get("best_epoch", 0)),
                     "val_accuracy": float(best["val_accuracy"]), "val_majority": majority,
                     "weight_change": float(m.get("weight_change", np.nan)),
                     "learned": float(best["val_accuracy"]) > majority})
    return pd.DataFrame(rows, columns=["source", "finetune", "design", "steps", "epochs",
                                       "best_epoch", "val_accuracy", "val_majority",
                                       "weight_change", "learned"])


def training_section(rows: pd.DataFrame) -> list[str]:
    """``report.md``'s section on training: source networks one by one, fine-tuned ones summed
    up per cell and design."""
    lines = ["## Did the networks learn?", ""]
    if rows.empty:
        return lines + ["No network was trained in this experiment (no fine-tuning, no "
                        "Retinopathy source task).", ""]
    lines += ["Per trained network: the SGD steps it took, its validation accuracy at the epoch "
              "kept (lowest validation loss) against the majority-class share of its validation "
              "split (what always answering the commonest class scores), and how far training "
              "moved its weights (‖w_end − w_start‖ / ‖w_start‖).", ""]
    source = rows[~rows["finetune"]]
    if len(source):
        lines += ["Source networks (trained on the Retinopathy source task):", "",
                  markdown_table(["Source", "Epochs", "SGD steps", "Kept epoch",
                                  "Val. accuracy", "Majority share", "Weights moved", "Learned"],
                                 [[r.source, r.epochs, r.steps, r.best_epoch,
                                   f"{r.val_accuracy:.3f}", f"{r.val_majority:.3f}",
                                   f"{100 * r.weight_change:.1f}%", "yes" if r.learned else "NO"]
                                  for r in source.itertuples()]), ""]
    tuned = rows[rows["finetune"]]
    if len(tuned):
        table = []
        for (src, design), part in tuned.groupby(["source", "design"], sort=False):
            table.append([cell_name(src, True), design, len(part), int(part["steps"].median()),
                          f"{part['val_accuracy'].mean():.3f}", f"{part['val_majority'].mean():.3f}",
                          f"{100 * part['weight_change'].median():.1f}%",
                          f"{int(part['learned'].sum())}/{len(part)}"])
        lines += ["Fine-tuned networks, per cell and design (means over runs; steps and weight "
                  "change: medians):", "",
                  markdown_table(["Cell", "Design", "Runs", "SGD steps", "Val. accuracy",
                                  "Majority share", "Weights moved", "Beat the majority"], table),
                  ""]
    return lines
