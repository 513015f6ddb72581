"""Tests for Kim & Rocheteau's statistics (pipeline.evaluation.statistics: the one-tailed Welch t
test against a worked example, the test against the clinicians' published AUROC, the stars) and
their Table 1 and ROC figure (pipeline.reporting.kim_rocheteau) on metrics generated here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.evaluation.statistics import above_reference, one_tailed_t_test, stars
from pipeline.reporting.kim_rocheteau import plot_roc_corner, transfer_section, transfer_tables


def test_one_tailed_t_test_worked_example():
    # Three runs each, both sds 0.01, means 0.93 and 0.90: t = 0.03 / sqrt(2 * 0.01² / 3) and,
    # with equal variances and sizes, Welch's df is n1 + n2 − 2 = 4.
    t, df, p = one_tailed_t_test([0.93, 0.94, 0.92], [0.90, 0.91, 0.89])
    assert t == pytest.approx(0.03 / np.sqrt(2 * 0.0001 / 3)) and t == pytest.approx(3.674, abs=1e-3)
    assert df == pytest.approx(4.0)
    # Student's t table, df 4, one tail: t = 3.747 at p = 0.01, 2.776 at p = 0.025.
    assert 0.01 < p < 0.025 and p == pytest.approx(0.0107, abs=5e-4)
    # The other direction is not significant: p = 1 − p.
    assert one_tailed_t_test([0.90, 0.91, 0.89], [0.93, 0.94, 0.92])[2] == pytest.approx(1 - p)


def test_one_tailed_t_test_unequal_variances_agrees_with_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.5]
    t, df, p = one_tailed_t_test(a, b)
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    assert df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2))
    reference = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert t == pytest.approx(reference.statistic) and p == pytest.approx(reference.pvalue)
    assert all(np.isnan(one_tailed_t_test([1.0], [2.0, 3.0])))


def test_above_reference_by_hand_and_stars():
    z, p = above_reference([0.92, 0.93, 0.94], 0.83, 0.03)
    se = np.sqrt(0.0001 / 3 + (0.03 / 1.959964) ** 2)
    assert z == pytest.approx(0.10 / se, rel=1e-5) and p < 1e-6
    z, p = above_reference([0.89, 0.90, 0.91], 0.91, 0.02)
    assert z < 0 and p > 0.5
    assert (stars(0.0005), stars(0.01), stars(0.2)) == ("**", "*", "")


def metrics_for(auc_without: float, auc_with: float, runs: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for source, centre in (("none", auc_without), ("imagenet", auc_with)):
        for r in range(1, runs + 1):
            auc = centre + rng.normal(scale=0.01)
            rows.append({"source": source, "finetune": True, "design": "melanoma_vs_benign",
                         "repeat": r, "test_half": 2, "auc": auc, "ap": auc - 0.1,
                         "accuracy": auc - 0.05, "f1": auc - 0.3})
    return pd.DataFrame(rows)


def test_tables_order_by_auroc_with_cis_and_stars():
    metrics = {"small": metrics_for(0.70, 0.71, seed=1), "big": metrics_for(0.72, 0.90, seed=2)}
    tables = transfer_tables(metrics, "melanoma_vs_benign")
    assert list(tables["a"]["Model"]) == ["big", "small"]
    assert list(tables["b"]["Model"]) == ["big", "small"]
    big = metrics["big"][metrics["big"]["source"] == "imagenet"]["auc"].to_numpy()
    low, high = stats.t.interval(0.95, 9, loc=big.mean(), scale=stats.sem(big))
    assert tables["b"].loc[0, "AUROC"] == f"{big.mean():.3f} [{low:.3f}, {high:.3f}]"
    assert tables["b"].loc[0, "p (transfer > none)"].endswith("**")  # 0.90 vs 0.72
    small_p = tables["b"].loc[1, "p (transfer > none)"]
    assert float(small_p.rstrip("*")) == pytest.approx(one_tailed_t_test(
        metrics["small"][metrics["small"]["source"] == "imagenet"]["auc"],
        metrics["small"][metrics["small"]["source"] == "none"]["auc"])[2], rel=1e-2)
    # 0.90 is above the GPs' 0.83 but not the dermatologists' 0.91
    assert tables["b"].loc[0, "p (> general practitioners)"].endswith("**")
    assert not tables["b"].loc[0, "p (> dermatologists)"].endswith("*")
    assert "p (transfer > none)" not in tables["a"].columns


def test_section_has_both_halves_clinicians_and_the_roc_figure(tmp_path):
    rng = np.random.default_rng(0)
    predictions = []
    for source, shift in (("none", 0.5), ("imagenet", 2.0)):
        for r in (1, 2, 3):
            y = rng.random(80) < 0.3
            predictions.append(pd.DataFrame({
                "source": source, "finetune": True, "design": "melanoma_vs_benign", "repeat": r,
                "test_half": 2, "image": [f"i{k}" for k in range(80)],
                "y_true": np.where(y, "melanoma", "benign"),
                "score": rng.normal(size=80) + shift * y}))
    predictions = pd.concat(predictions, ignore_index=True)
    lines = transfer_section({"net": metrics_for(0.7, 0.8, runs=3)}, {"net": predictions},
                             tmp_path)
    text = "\n".join(lines)
    assert "(a) without transfer" in text and "(b) with ImageNet transfer" in text
    assert "general practitioners (cited) | — | — | 0.83 ± 0.03" in text
    assert "dermatologists (cited) | — | — | 0.91 ± 0.02" in text
    assert (tmp_path / "roc_corner.png").stat().st_size > 10_000
    curves = plot_roc_corner({"net": predictions}, tmp_path / "again.png")
    assert set(curves["cell"]) == {"none+ft", "imagenet+ft"} and set(curves["runs"]) == {3}
    for _, curve in curves.groupby("cell"):
        assert np.all(np.diff(curve["tpr"]) >= -1e-12)  # a mean of ROC curves rises
    with_transfer = curves[curves["cell"] == "imagenet+ft"]["tpr"].mean()
    assert with_transfer > curves[curves["cell"] == "none+ft"]["tpr"].mean()
