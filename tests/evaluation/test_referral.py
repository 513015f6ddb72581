"""Tests of pipeline.evaluation.referral: curves worked out by hand on toy score tables, ties,
all-referred, decided sets without positives, the summary over runs, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.evaluation.referral import (
    operating_points,
    referral_runs,
    referred_mask,
    run_referral,
    summarize_referral,
)

# Threshold 0. Positive calls (score > 0): e f g h. Distances to the threshold:
# a 3, b 2, c 1, d 0.5, e 0.2, f 0.8, g 1.5, h 2.5. Positives: c f g h.
NAMES = list("abcdefgh")
SCORE = np.array([-3.0, -2.0, -1.0, -0.5, 0.2, 0.8, 1.5, 2.5])
POSITIVE = np.array([0, 0, 1, 0, 0, 1, 1, 1], dtype=bool)
NAN = np.nan

# (policy, rate) -> (referred cases, referred share, SE decided, SP decided, to_doctor, missed),
# worked out by hand from the table above.
EXPECTED = {
    # Nothing referred: the threshold's own calls. c is a missed positive, e a false positive.
    ("uncertain", 0.0): ("", 0.0, 3 / 4, 3 / 4, 3 / 4, 1 / 4),
    # k = 2: the two nearest, e (0.2) and d (0.5). Decided a b c f g h: SE 3/4, SP 2/2.
    ("uncertain", 0.25): ("de", 0.25, 3 / 4, 1.0, 3 / 4, 1 / 4),
    # k = ceil(2.4) = 3: e d f. Decided a b c g h.
    ("uncertain", 0.3): ("def", 3 / 8, 2 / 3, 1.0, 3 / 4, 1 / 4),
    # k = 4: e d f c. Decided a b g h, all right.
    ("uncertain", 0.5): ("cdef", 0.5, 1.0, 1.0, 1.0, 0.0),
    # Everything referred: nothing decided, so SE and SP are undefined.
    ("uncertain", 1.0): ("abcdefgh", 1.0, NAN, NAN, 1.0, 0.0),
    # The paper's policy always refers the four positive calls e f g h.
    ("paper", 0.0): ("efgh", 0.5, 0.0, 1.0, 3 / 4, 1 / 4),
    ("paper", 0.25): ("efgh", 0.5, 0.0, 1.0, 3 / 4, 1 / 4),
    ("paper", 0.5): ("efgh", 0.5, 0.0, 1.0, 3 / 4, 1 / 4),
    # k = 5: one more, the nearest negative call d. Decided a b c, all called negative.
    ("paper", 0.625): ("defgh", 5 / 8, 0.0, 1.0, 3 / 4, 1 / 4),
    # k = 6: d and c. Decided a b: no positive among them, so SE is undefined; none missed.
    ("paper", 0.75): ("cdefgh", 0.75, NAN, 1.0, 1.0, 0.0),
    ("paper", 1.0): ("abcdefgh", 1.0, NAN, NAN, 1.0, 0.0),
}


@pytest.mark.parametrize("policy, rate", sorted(EXPECTED))
def test_referred_cases_match_the_hand_worked_table(policy, rate):
    mask = referred_mask(SCORE, 0.0, rate, policy)
    assert "".join(n for n, m in zip(NAMES, mask) if m) == EXPECTED[policy, rate][0]


def test_curves_match_the_hand_worked_table():
    rates = sorted({r for _, r in EXPECTED})
    table = run_referral(SCORE, POSITIVE, 0.0, rates).set_index(["policy", "rate"])
    for key, (_, referred, se, sp, to_doctor, missed) in EXPECTED.items():
        got = table.loc[key, ["referred", "sensitivity", "specificity", "to_doctor", "missed"]]
        np.testing.assert_allclose(got.to_numpy(dtype=float), [referred, se, sp, to_doctor, missed],
                                   atol=1e-12, err_msg=f"curve at {key}")


def test_threshold_moves_the_calls_and_the_distances():
    # Threshold 1: positive calls g h; distances a 4, b 3, c 2, d 1.5, e 0.8, f 0.2, g 0.5, h 1.5.
    table = run_referral(SCORE, POSITIVE, 1.0, [0.0, 0.25]).set_index(["policy", "rate"])
    # No referral: c and f missed (2 of 4); negatives a b d e all called negative.
    assert table.loc[("uncertain", 0.0), "missed"] == pytest.approx(0.5)
    assert table.loc[("uncertain", 0.0), "specificity"] == pytest.approx(1.0)
    # Refer f (0.2) and g (0.5): decided positives c (missed) and h (caught): SE 1/2, missed 1/4.
    assert table.loc[("uncertain", 0.25), "sensitivity"] == pytest.approx(0.5)
    assert table.loc[("uncertain", 0.25), "missed"] == pytest.approx(0.25)
    assert list(referred_mask(SCORE, 1.0, 0.25, "uncertain")) == [0, 0, 0, 0, 0, 1, 1, 0]


def test_ties_at_the_cut_are_referred_together():
    score = np.array([-1.0, 1.0, -1.0, 0.5, 3.0])
    # Distances 1, 1, 1, 0.5, 3: k = 2 cuts inside the three tied cases, so all three go.
    mask = referred_mask(score, 0.0, 0.4, "uncertain")
    assert mask.tolist() == [True, True, True, True, False]
    table = run_referral(score, np.array([1, 0, 0, 1, 1], dtype=bool), 0.0, [0.4])
    assert table.set_index("policy").loc["uncertain", "referred"] == pytest.approx(0.8)


def test_a_score_on_the_threshold_is_a_negative_call_and_the_most_uncertain_case():
    score = np.array([0.0, -2.0, 2.0, -1.0])
    positive = np.array([1, 0, 1, 0], dtype=bool)
    table = run_referral(score, positive, 0.0, [0.0, 0.25]).set_index(["policy", "rate"])
    assert table.loc[("uncertain", 0.0), "missed"] == pytest.approx(0.5)  # 0.0 is not > 0
    assert table.loc[("uncertain", 0.25), "missed"] == pytest.approx(0.0)  # referred first
    # The paper's policy at rate 0.25 (k = 1) refers the positive call only: 0.0 stays decided.
    assert referred_mask(score, 0.0, 0.25, "paper").tolist() == [False, False, True, False]
    assert referred_mask(score, 0.0, 0.5, "paper").tolist() == [True, False, True, False]


def predictions_table() -> pd.DataFrame:
    """Two runs of one cell in a 2-class design, plus a 3-class run that must be left out."""
    run1 = pd.DataFrame({"image": NAMES, "y_true": np.where(POSITIVE, "melanoma", "benign"),
                         "score": SCORE, "repeat": 1, "test_half": 1})
    # Run 2: only benign images; to_doctor and missed are undefined (no positives at all).
    run2 = pd.DataFrame({"image": ["x", "y", "z", "w"], "y_true": "benign",
                         "score": [-1.0, -0.2, 0.4, -3.0], "repeat": 1, "test_half": 2})
    two = pd.concat([run1, run2]).assign(source="imagenet", finetune=True,
                                         design="melanoma_vs_benign")
    three = pd.DataFrame({"source": "imagenet", "finetune": True,
                          "design": "melanoma_vs_bcc_vs_benign", "repeat": 1, "test_half": 1,
                          "image": ["a", "b"], "y_true": ["bcc", "melanoma"], "score": np.nan,
                          "score_melanoma": [0.1, 0.9]})
    return pd.concat([two, three], ignore_index=True)


def test_runs_of_the_table_and_their_summary():
    runs = referral_runs(predictions_table(), 0.0, [0.0, 0.25, 1.0])
    assert set(runs["design"]) == {"melanoma_vs_benign"}
    assert set(runs["cell"]) == {"imagenet+ft"}
    assert len(runs) == 2 * 2 * 3  # runs x policies x rates
    second = runs[(runs["test_half"] == 2) & (runs["policy"] == "uncertain")].set_index("rate")
    # Run 2 at rate 0.25 (k = 1) refers -0.2; decided -1, 0.4 (a false positive), -3: SP 2/3.
    assert second.loc[0.25, "specificity"] == pytest.approx(2 / 3)
    assert second[["sensitivity", "to_doctor", "missed"]].isna().all().all()

    summary = summarize_referral(runs).set_index(["policy", "rate"])
    row = summary.loc[("uncertain", 0.0)]
    assert row["runs"] == 2
    # Specificity: run 1 3/4, run 2 (0.4 is a false positive) 3/4 -> both 0.75.
    assert row["specificity"] == pytest.approx(0.75)
    row = summary.loc[("uncertain", 0.25)]
    assert row["specificity"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert (row["specificity_min"], row["specificity_max"]) == pytest.approx((2 / 3, 1.0))
    # Missed is defined in run 1 only, so its mean is run 1's value.
    assert row["missed"] == pytest.approx(0.25)
    assert summary.loc[("paper", 0.0), "referred"] == pytest.approx((0.5 + 0.25) / 2)


def test_operating_points_are_the_first_rates_that_miss_at_most_5_percent():
    summary = pd.DataFrame({
        "design": "melanoma_vs_benign", "cell": "imagenet", "policy": "uncertain",
        "rate": [0.0, 0.1, 0.2, 0.3], "runs": 2, "referred": [0.0, 0.1, 0.2, 0.3],
        "missed": [0.2, 0.06, 0.04, 0.01], "missed_max": [0.3, 0.1, 0.07, 0.02]})
    points = operating_points(summary, 0.05)
    assert len(points) == 1
    assert points["rate"].iloc[0] == pytest.approx(0.2)
    assert points["rate_all_runs"].iloc[0] == pytest.approx(0.3)
    never = summary.assign(missed=0.5, missed_max=0.5)
    assert operating_points(never, 0.05).empty


@pytest.mark.parametrize("change, match", [
    (lambda t: t.drop(columns="y_true"), "lacks columns"),
    (lambda t: t.assign(y_true=t["y_true"].replace("melanoma", "naevus")), "naevus"),
    (lambda t: t.assign(score=t["score"].where(t["image"] != "c", np.inf)), "infinite"),
    (lambda t: t.assign(design="melanoma_vs_nothing"), "melanoma_vs_nothing"),
    (lambda t: t[t["design"] == "melanoma_vs_bcc_vs_benign"], "no 2-class design"),
])
def test_bad_tables_are_clear_errors(change, match):
    with pytest.raises(PipelineError, match=match):
        referral_runs(change(predictions_table()), 0.0)


def test_bad_rates_policies_and_arrays_are_clear_errors():
    with pytest.raises(PipelineError, match=r"in \[0, 1\]"):
        run_referral(SCORE, POSITIVE, 0.0, [0.5, 1.5])
    with pytest.raises(PipelineError, match="policy 'random'"):
        referred_mask(SCORE, 0.0, 0.5, "random")
    with pytest.raises(PipelineError, match="boolean"):
        run_referral(SCORE, POSITIVE.astype(int))
    with pytest.raises(PipelineError, match="one length"):
        run_referral(SCORE[:3], POSITIVE)
