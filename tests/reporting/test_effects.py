"""pipeline.reporting.effects and .training: verdicts follow the statistics, never the hope."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.reporting.effects import cell_effects, difficulty_effects, verdict
from pipeline.reporting.tables import comparisons
from pipeline.reporting.training import training_rows, training_section


def _metrics(shift_imagenet: float, shift_scratch: float, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for repeat in range(1, 6):
        for half in (1, 2):
            base = 0.7 + rng.normal(0, 0.02)  # run-to-run variation shared by the cells
            for source, ft, shift in (("none", False, 0.0), ("imagenet", False, shift_imagenet),
                                      ("none", True, shift_scratch)):
                rows.append({"source": source, "finetune": ft, "design": "melanoma_vs_benign",
                             "repeat": repeat, "test_half": half,
                             "auc": base + shift + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_a_clear_effect_is_shown_a_reversed_one_contradicted_a_small_one_within_noise():
    table = comparisons(_metrics(0.08, -0.08, 0.003))
    effects = cell_effects(table)
    # the verdict's p is the combined F test's, the t test's is carried beside it
    pair = table[{"none", "imagenet"} == table[["a", "b"]].apply(set, axis=1)]
    shown = effects.set_index("better").loc["imagenet"]
    assert shown["p"] == pair["f_p"].iloc[0] and shown["t_p"] == pair["t_p"].iloc[0]
    assert shown["p"] != shown["t_p"]
    by_claim = effects.set_index("better")["verdict"].to_dict()
    assert by_claim["imagenet"].startswith("shown")
    assert by_claim["none+ft"].startswith("contradicted")
    small = cell_effects(comparisons(_metrics(0.002, 0.0, 0.02, seed=3)))
    assert all(v.startswith("within noise") for v in small["verdict"]), small
    assert verdict(5.0, float("nan")) == "not tested"


def test_difficulty_effect_from_per_run_aucs():
    rows = []
    for repeat in range(1, 6):
        for half in (1, 2):
            for level, auc in (("low", 0.9), ("medium", 0.8), ("high", 0.62)):
                rows.append({"design": "melanoma_vs_benign", "repeat": repeat, "test_half": half,
                             "level": level, "auc": auc + 0.01 * ((repeat + half) % 3)})
    falling = difficulty_effects(pd.DataFrame(rows)).iloc[0]
    assert falling["difference"] > 25 and falling["verdict"].startswith("shown")
    missing = pd.DataFrame(rows)
    missing.loc[0, "auc"] = np.nan  # a run whose low-difficulty images hold one class
    assert difficulty_effects(missing).iloc[0]["verdict"] == "not tested"


def test_training_evidence_says_whether_each_network_beat_the_majority_and_chance():
    history = [{"val_accuracy": 0.6, "val_loss": 1.0, "val_balanced_accuracy": 0.45},
               {"val_accuracy": 0.8, "val_loss": 0.5, "val_balanced_accuracy": 0.5}]
    rows = training_rows([
        {"source": "retinopathy", "stage": "pretrain", "history": history, "best_epoch": 2,
         "steps": 40, "val_majority": 0.73, "val_chance": 0.2, "weight_change": 0.21},
        {"source": "none", "stage": "finetune", "design": "melanoma_vs_benign",
         "history": history[:1], "best_epoch": 1, "steps": 12, "val_majority": 0.7,
         "val_chance": 0.5, "weight_change": 0.01},
        {"source": "none", "stage": "finetune", "design": "melanoma_vs_benign",  # balanced epochs
         "history": [{"val_accuracy": 0.65, "val_loss": 0.6, "val_balanced_accuracy": 0.7}],
         "best_epoch": 1, "steps": 12, "val_majority": 0.7, "val_chance": 0.5,
         "weight_change": 0.03},
        {"source": "double", "stage": "pretrain", "best_epoch": 1, "steps": 9,  # older manifest
         "history": [{"val_accuracy": 0.9, "val_loss": 0.3}], "val_majority": 0.73,
         "weight_change": 0.1},
        {"source": "imagenet", "stage": "pretrain"},  # not trained: left out
    ])
    assert rows["beat_majority"].tolist() == [True, False, False, True]
    assert rows["learned"].tolist() == [True, False, True, True]
    text = "\n".join(training_section(rows))
    assert "| retinopathy | 2 | 40 | 2 | 0.800 | 0.730 | 0.500 | 0.200 | 21.0% | yes |" in text
    assert "| double | 1 | 9 | 1 | 0.900 | 0.730 | — | — | 10.0% | yes |" in text
    assert ("| none+ft | melanoma_vs_benign | 2 | 12 | 0.625 | 0.700 | 0.575 | 0.500 | 2.0% | "
            "0/2 | 1/2 |") in text
