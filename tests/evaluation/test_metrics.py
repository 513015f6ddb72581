"""Tests of pipeline.evaluation.metrics: metrics against independent computations, 5x2cv tests by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import auc_ovo_mean, auc_ovr_macro, binary_metrics, cell_metrics, class_indices, fast_auc
from pipeline.evaluation.statistics import bootstrap_ci, combined_5x2cv_f_test, compare_cells, mean_ci, paired_5x2cv_t_test

# --- independent implementations -----------------------------------------------------------------


def auc_by_pairs(y, score) -> float:
    """AUC as the share of (positive, negative) pairs ranked correctly, ties counting one half."""
    pos, neg = score[y == 1], score[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def ap_by_thresholds(y, score) -> float:
    """Average precision: sum over thresholds t, high to low, of ΔRecall(t) * Precision(t)."""
    total, previous_recall = 0.0, 0.0
    for t in sorted(set(score.tolist()), reverse=True):
        called = score >= t
        recall = np.sum(called & (y == 1)) / np.sum(y == 1)
        precision = np.sum(called & (y == 1)) / np.sum(called)
        total += (recall - previous_recall) * precision
        previous_recall = recall
    return total


# Three classes, unequal sizes (with equal sizes macro OvR equals the OvO mean), rows sum to 1.
HAND_Y = np.array([0, 0, 0, 1, 1, 2, 2])
HAND_SCORES = np.array([[0.9, 0.1, 0.0],
                        [0.4, 0.5, 0.1],
                        [0.15, 0.05, 0.8],
                        [0.5, 0.2, 0.3],
                        [0.2, 0.7, 0.1],
                        [0.1, 0.2, 0.7],
                        [0.3, 0.1, 0.6]])
# By hand, A(i|j) = share of (class i, class j) pairs where the class-i sample has the higher
# column-i score (ties 1/2):
#   A(0|1) = 3/6, A(1|0) = 5/6 -> 2/3;  A(0|2) = 5/6, A(2|0) = 4/6 -> 3/4;
#   A(1|2) = 3.5/4, A(2|1) = 4/4 -> 15/16.   Mean: (2/3 + 3/4 + 15/16) / 3 = 113/144.
HAND_OVO = 113 / 144
# One-vs-rest by hand: class 0: 8/12, class 1: 8.5/10, class 2: 8/10 -> mean 139/180.
HAND_OVR = 139 / 180
CLASSES = ("benign", "bcc", "melanoma")


def test_binary_auc_and_ap_match_independent_computations():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    score = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
    got = binary_metrics(y, score)
    assert got["auc"] == pytest.approx(auc_by_pairs(y, score), abs=1e-12)
    assert got["ap"] == pytest.approx(ap_by_thresholds(y, score), abs=1e-12)


def test_binary_operating_point_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    score = np.array([2.0, 0.5, -0.1, 0.0, 1.0, -1.0, -2.0, -0.5, 0.3, -3.0])
    # score > 0: positives 2.0, 0.5 called (TP=2), -0.1 and 0.0 not (FN=2; 0 is not > 0);
    # negatives 1.0, 0.3 called (FP=2), four not (TN=4).
    got = binary_metrics(y, score)
    assert got["sensitivity"] == pytest.approx(2 / 4)
    assert got["specificity"] == pytest.approx(4 / 6)
    assert got["accuracy"] == pytest.approx(6 / 10)
    assert got["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    moved = binary_metrics(y, score, threshold=-0.2)  # now -0.1 and 0.0 are called positive
    assert moved["sensitivity"] == pytest.approx(1.0)
    assert moved["auc"] == got["auc"]


def test_binary_metrics_rejects_bad_input():
    with pytest.raises(PipelineError, match="both classes"):
        binary_metrics([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(PipelineError, match="0/1"):
        binary_metrics([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(PipelineError, match="NaN"):
        binary_metrics([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(PipelineError, match="same shape"):
        binary_metrics([0, 1, 1], [0.1, 0.3])


def test_ovo_mean_auc_by_hand():
    assert auc_ovo_mean(HAND_Y, HAND_SCORES, CLASSES) == pytest.approx(HAND_OVO, abs=1e-12)
    labels = np.array(CLASSES)[HAND_Y]
    assert auc_ovo_mean(labels, HAND_SCORES, CLASSES) == pytest.approx(HAND_OVO, abs=1e-12)
    # The same definition as scikit-learn's Hand & Till, which needs probabilities (rows sum to 1).
    assert roc_auc_score(HAND_Y, HAND_SCORES, multi_class="ovo") == pytest.approx(HAND_OVO)


def test_ovr_macro_auc_by_hand():
    assert auc_ovr_macro(HAND_Y, HAND_SCORES) == pytest.approx(HAND_OVR, abs=1e-12)
    assert roc_auc_score(HAND_Y, HAND_SCORES, multi_class="ovr") == pytest.approx(HAND_OVR)
    assert HAND_OVR != pytest.approx(HAND_OVO)


def test_ovo_mean_of_two_classes_is_the_auc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    s = rng.normal(size=40) + y
    assert auc_ovo_mean(y, np.column_stack([-s, s]), ("a", "b")) == pytest.approx(
        auc_by_pairs(y, s))


def test_class_indices_accepts_labels_or_indices_but_not_ambiguous_ones():
    np.testing.assert_array_equal(class_indices(["bcc", "benign"], CLASSES), [1, 0])
    np.testing.assert_array_equal(class_indices(np.array([2, 0]), CLASSES), [2, 0])
    np.testing.assert_array_equal(class_indices(np.array([3, 5]), (5, 3)), [1, 0])
    with pytest.raises(PipelineError, match="not among the classes"):
        class_indices(np.array([0, 1]), (0, 2))  # 1 is neither a label nor taken as an index


def test_multiclass_auc_errors():
    with pytest.raises(PipelineError, match=r"\['melanoma'\] have none"):
        auc_ovo_mean(HAND_Y[:5], HAND_SCORES[:5], CLASSES)
    with pytest.raises(PipelineError, match="shape"):
        auc_ovo_mean(HAND_Y, HAND_SCORES[:, :2], CLASSES)
    with pytest.raises(PipelineError, match="not among the classes"):
        auc_ovo_mean(np.array(["benign"] * 6 + ["nevus"]), HAND_SCORES, CLASSES)


def test_cell_metrics_three_classes_by_hand():
    got = cell_metrics(HAND_Y, HAND_SCORES, CLASSES)
    assert got["auc"] == pytest.approx(HAND_OVO)
    assert got["auc_ovr"] == pytest.approx(HAND_OVR)
    # argmax per row: 0, 1, 2, 0, 1, 2, 2 -> rows 0, 4, 5, 6 right.
    assert got["accuracy"] == pytest.approx(4 / 7)
    # melanoma (column 2) called for rows 2, 5, 6; true melanoma rows 5, 6: TP 2, FN 0, FP 1, TN 4.
    assert got["sensitivity"] == pytest.approx(1.0)
    assert got["specificity"] == pytest.approx(4 / 5)
    assert got["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1))
    expected_ap = np.mean([ap_by_thresholds((HAND_Y == k).astype(int), HAND_SCORES[:, k])
                           for k in range(3)])
    assert got["ap"] == pytest.approx(expected_ap)


def test_cell_metrics_two_classes_is_binary_metrics_with_positive_last():
    y = np.array(["benign", "melanoma", "melanoma", "benign", "melanoma"])
    score = np.array([-1.0, 2.0, 0.5, 0.2, -0.3])
    got = cell_metrics(y, score, ("benign", "melanoma"))
    assert got == binary_metrics((y == "melanoma").astype(int), score)


def test_cell_metrics_refuses_useless_threshold_and_missing_melanoma():
    with pytest.raises(PipelineError, match="threshold"):
        cell_metrics(HAND_Y, HAND_SCORES, CLASSES, threshold=0.5)
    with pytest.raises(PipelineError, match="melanoma"):
        cell_metrics(HAND_Y, HAND_SCORES, ("a", "b", "c"))


def test_mean_ci_against_t_table():
    mean, sd, low, high = mean_ci([1, 2, 3, 4, 5])
    # t(0.975, 4 d.o.f.) = 2.7764 from the table; sd = sqrt(2.5); half width 2.7764 sd / sqrt(5).
    assert (mean, sd) == (pytest.approx(3.0), pytest.approx(np.sqrt(2.5)))
    assert high - mean == pytest.approx(2.7764 * np.sqrt(2.5) / np.sqrt(5), abs=1e-3)
    assert mean - low == pytest.approx(high - mean)
    assert np.isnan(mean_ci([0.8])[1])
    with pytest.raises(PipelineError, match="finite"):
        mean_ci([0.8, np.nan])
    with pytest.raises(PipelineError, match="finite"):
        mean_ci([])


def test_bootstrap_ci_deterministic_and_contains_estimate():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(40, int), np.ones(8, int)]  # few positives: plain resamples could lose all
    score = rng.normal(size=48) + y
    first = bootstrap_ci(y, score, roc_auc_score, n_boot=100, seed=5)
    assert first == bootstrap_ci(y, score, roc_auc_score, n_boot=100, seed=5)
    assert first != bootstrap_ci(y, score, roc_auc_score, n_boot=100, seed=6)
    estimate, low, high = first
    assert estimate == pytest.approx(auc_by_pairs(y, score))
    assert low < estimate < high
    # Perfect separation stays perfect in every stratified resample.
    assert bootstrap_ci(y, y + 0.0, roc_auc_score, n_boot=20) == (1.0, 1.0, 1.0)


# --- 5x2cv tests ---------------------------------------------------------------------------------

# Differences p = a - b by hand (repeat x fold):   s_i^2 = (p_i1 - mean_i)^2 + (p_i2 - mean_i)^2
#   (2, 0) -> 2;  (1, 1) -> 0;  (3, 1) -> 2;  (0, 2) -> 2;  (1, 3) -> 2.   Sum 8, mean 1.6.
#   t = p_1^(1) / sqrt(1.6) = 2 / sqrt(1.6);  f = sum p^2 / (2 * 8) = 30 / 16.
DIFF = np.array([[2, 0], [1, 1], [3, 1], [0, 2], [1, 3]], dtype=float)


def _pair(diff, scale=0.01):
    b = 0.7 + 0.001 * np.arange(10).reshape(5, 2)
    return b + scale * diff, b


def test_5x2cv_t_test_by_hand():
    a, b = _pair(DIFF)
    t, p = paired_5x2cv_t_test(a, b)
    assert t == pytest.approx(2 / np.sqrt(1.6))
    assert p == pytest.approx(2 * stats.t.sf(2 / np.sqrt(1.6), 5))
    t_ba, p_ba = paired_5x2cv_t_test(b, a)
    assert (t_ba, p_ba) == (pytest.approx(-t), pytest.approx(p))


def test_5x2cv_f_test_by_hand():
    a, b = _pair(DIFF)
    f, p = combined_5x2cv_f_test(a, b)
    assert f == pytest.approx(30 / 16)
    assert p == pytest.approx(stats.f.sf(30 / 16, 10, 5))
    assert combined_5x2cv_f_test(b, a) == (pytest.approx(f), pytest.approx(p))


def test_5x2cv_p_values_at_table_critical_values():
    # Scale p_1^(1) so that t equals the tabulated t(0.975, 5) = 2.5706: two-sided p = 0.05.
    diff = DIFF.copy()
    diff[0] = [2.5706 * np.sqrt(1.6), 2.5706 * np.sqrt(1.6) - 2]  # keeps s_1^2 = 2
    a, b = _pair(diff)
    assert paired_5x2cv_t_test(a, b)[1] == pytest.approx(0.05, abs=2e-4)
    # F(0.95; 10, 5) = 4.735 from the table: a difference table with sum p^2 = 4.735 * 2 * sum s^2.
    base = np.array([[1, -1], [1, -1], [1, -1], [1, -1], [1, -1]], dtype=float)  # s_i^2 = 2 each
    shift = np.sqrt((4.735 * 2 * 10 - 10) / 10)  # adding c to both folds keeps s^2, adds 2c^2
    a, b = _pair(base + shift)
    assert combined_5x2cv_f_test(a, b)[1] == pytest.approx(0.05, abs=2e-4)


def test_5x2cv_degenerate_cases():
    same = np.full((5, 2), 0.8)
    t, p = paired_5x2cv_t_test(same, same)
    assert np.isnan(t) and p == 1.0
    assert np.isnan(combined_5x2cv_f_test(same, same)[0])
    assert combined_5x2cv_f_test(same, same)[1] == 1.0
    assert paired_5x2cv_t_test(same + 0.01, same) == (np.inf, 0.0)
    assert combined_5x2cv_f_test(same, same + 0.01) == (np.inf, 0.0)
    with pytest.raises(PipelineError, match=r"shape \(5, 2\)"):
        paired_5x2cv_t_test(np.zeros((2, 5)), np.zeros((2, 5)))
    with pytest.raises(PipelineError, match=r"shape \(5, 2\)"):
        combined_5x2cv_f_test(np.zeros((5, 2)), np.zeros(10))
    with pytest.raises(PipelineError, match="finite"):
        paired_5x2cv_t_test(np.full((5, 2), np.nan), same)


def _metrics_table(finetune_as_text=False) -> pd.DataFrame:
    rows = []
    cells = {("none", False): 0.70, ("imagenet", False): 0.78, ("imagenet", True): 0.82}
    for (source, ft), base in cells.items():
        for r, h in itertools.product(range(5), (0, 1)):
            auc = base + (0.01 * DIFF[r, h] if ft else 0.002 * (r + h))
            rows.append({"source": source, "finetune": str(ft) if finetune_as_text else ft,
                         "design": "melanoma_vs_benign", "repeat": r, "test_half": h,
                         "auc": auc, "ap": 0.5})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("finetune_as_text", [False, True])
def test_compare_cells_pairs_and_statistics(finetune_as_text):
    table = _metrics_table(finetune_as_text)
    got = compare_cells(table, "melanoma_vs_benign")
    assert list(got.columns) == ["design", "a", "b", "mean_diff", "t_stat", "t_p", "f_stat", "f_p"]
    assert [(a, b) for a, b in zip(got["a"], got["b"])] == [
        ("imagenet", "imagenet+ft"), ("imagenet", "none"), ("imagenet+ft", "none")]
    first = got.iloc[0]
    a = 0.82 + 0.01 * DIFF
    b = 0.78 + 0.002 * (np.arange(5)[:, None] + np.arange(2)[None, :])
    assert first["mean_diff"] == pytest.approx(-(a - b).mean())
    # fold 1 of a repeat is the run tested on half 2 (trained on half 1): columns reversed
    assert first["t_stat"] == pytest.approx(paired_5x2cv_t_test(b[:, ::-1], a[:, ::-1])[0])
    assert first["f_p"] == pytest.approx(combined_5x2cv_f_test(b, a)[1])
    assert got.iloc[1]["mean_diff"] == pytest.approx(0.08)


def test_compare_cells_errors():
    table = _metrics_table()
    with pytest.raises(PipelineError, match="no rows for design"):
        compare_cells(table, "malignant_vs_benign")
    gap = table.drop(index=table.index[(table["source"] == "none") & (table["repeat"] == 3)
                                       & (table["test_half"] == 1)])
    with pytest.raises(PipelineError, match=r"cell 'none'.*\(3, 1\)"):
        compare_cells(gap, "melanoma_vs_benign")
    with pytest.raises(PipelineError, match=r"cell .imagenet.: several rows .*\[\[0, 1\]\]"):
        compare_cells(pd.concat([table, table.iloc[[11]]]), "melanoma_vs_benign")
    with pytest.raises(PipelineError, match="lacks columns"):
        compare_cells(table.drop(columns="repeat"), "melanoma_vs_benign")
    with pytest.raises(PipelineError, match="5 repeats"):
        compare_cells(table[table["repeat"] < 4], "melanoma_vs_benign")


def test_fast_auc_matches_pair_counting_and_sklearn():
    rng = np.random.default_rng(9)
    for _ in range(5):
        y = rng.integers(0, 2, 40)
        score = np.round(rng.normal(size=40) + y, 1)
        expected = auc_by_pairs(y, score)
        assert fast_auc(y == 1, score) == pytest.approx(expected, abs=1e-12)
        assert roc_auc_score(y, score) == pytest.approx(expected, abs=1e-12)


def test_5x2cv_t_numerator_is_the_run_trained_on_the_first_half_as_dietterich_defines():
    """Dietterich (1998), eq. for t: p_1^(1) is repeat 1's fold 1, trained on the first half and
    tested on the second (mlxtend's paired_ttest_5x2cv uses the same), i.e. test_half 2 here."""
    import pandas as pd
    from scipy import stats

    from pipeline.evaluation.statistics import compare_cells

    # a - b per repeat: (tested on half 2, tested on half 1)
    diffs = [(0.04, 0.00), (0.02, 0.01), (0.03, -0.01), (0.01, 0.02), (0.05, 0.03)]
    rows = []
    for repeat, (on2, on1) in enumerate(diffs, start=1):
        for half, d in ((2, on2), (1, on1)):
            rows.append({"source": "imagenet", "finetune": True, "design": "melanoma_vs_benign",
                         "repeat": repeat, "test_half": half, "auc": 0.8 + d})
            rows.append({"source": "none", "finetune": True, "design": "melanoma_vs_benign",
                         "repeat": repeat, "test_half": half, "auc": 0.8})
    table = compare_cells(pd.DataFrame(rows), "melanoma_vs_benign")
    row = table.iloc[0]
    assert (row["a"], row["b"]) == ("imagenet+ft", "none+ft")
    # by hand: s_i^2 = .0008, .00005, .0008, .00005, .0002; mean .00038; t = .04 / sqrt(.00038)
    t = 0.04 / np.sqrt(0.00038)
    assert row["t_stat"] == pytest.approx(t, rel=1e-9)
    assert row["t_p"] == pytest.approx(2 * stats.t.sf(t, df=5), rel=1e-9)
