"""pipeline.demo.lesions: difficulty is graded overlap of the hidden variables, never inversion."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.demo.lesions import DESIGNED_AUC, DIAGNOSES, lesion_plan, seven_point_score

LEVELS = ("low", "medium", "high")


def _sample(level: str, n: int = 2000, seed: int = 0):
    """Plans of ``n`` lesions of ``level``, diagnoses drawn with the demo's shares."""
    rng = np.random.default_rng([seed, LEVELS.index(level)])
    names = list(DIAGNOSES)
    shares = np.array([DIAGNOSES[d][0] for d in names], float)
    diagnoses = rng.choice(names, size=n, p=shares / shares.sum())
    return [lesion_plan(rng, str(d), level) for d in diagnoses]


@pytest.fixture(scope="module")
def plans():
    return {level: _sample(level) for level in LEVELS}


def _auc(plans, positive, score):
    y = np.array([positive(p) for p in plans])
    return roc_auc_score(y, np.array([score(p) for p in plans], float))


def test_the_atypia_separates_melanomas_as_designed_and_less_with_difficulty(plans):
    melanoma = lambda p: p["diagnosis"].startswith("melanoma")  # noqa: E731
    aucs = [_auc(plans[level], melanoma, lambda p: p["x"]) for level in LEVELS]
    for level, auc in zip(LEVELS, aucs):
        assert auc == pytest.approx(DESIGNED_AUC[level], abs=0.04), (level, aucs)
    assert aucs[0] > aucs[1] > aucs[2] > 0.6, aucs  # falls, never reaches chance or inverts


def test_the_observable_metadata_follows_the_same_rule(plans):
    """On what derm7pt's meta.csv holds: the seven-point score of each lesion."""
    melanoma = lambda p: p["diagnosis"].startswith("melanoma")  # noqa: E731
    scores = [_auc(plans[level], melanoma, lambda p: seven_point_score(p["criteria"]))
              for level in LEVELS]
    assert scores[0] > scores[1] > scores[2] > 0.55, scores


def test_basal_cell_cues_follow_the_same_rule(plans):
    bcc = lambda p: p["kind"] == "bcc"  # noqa: E731
    cues = [_auc(plans[level], bcc, lambda p: p["b"]) for level in LEVELS]
    vessels = [_auc(plans[level], bcc,
                    lambda p: p["criteria"]["vascular_structures"] == "arborizing")
               for level in LEVELS]
    assert cues[0] > cues[1] > cues[2] > 0.6, cues
    assert vessels[0] > vessels[2] > 0.5, vessels
