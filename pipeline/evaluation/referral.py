"""Referral analysis (Menegola et al. 2017, §4): the model decides some cases, a doctor sees the rest.

For one run's 2-class scores (higher = positive; the model calls a case positive when
``score > threshold``, as ``pipeline.evaluation.metrics.binary_metrics`` does) and a referral rate
``r``, a policy refers at least ``k = ceil(r * n)`` of the ``n`` test cases to a dermatologist:

- ``uncertain``: refer the cases nearest the decision threshold, i.e. every case with
  ``|score - threshold| <= d`` for the smallest ``d`` that refers ``k`` cases; the model decides
  the rest by its threshold.
- ``paper``: the paper's policy, refer the confident positives and the uncertain cases and decide
  only confident negatives: every positive call (``score > threshold``) is referred, plus every
  case with ``|score - threshold| <= d`` for the smallest such ``d`` (``d = -inf``, positive calls
  only, when they already number ``k``); the model decides only negative calls.

A cut never splits tied cases: all cases at the cut-off distance are referred, so the realised rate
``referred`` can exceed ``r`` (and, for ``paper``, is at least the share of positive calls). Each
row reports the realised rate beside the nominal one.

Per run and rate: ``sensitivity`` and ``specificity`` of the model's calls on the cases it decides
(NaN where the decided cases hold no positive, or no negative), ``to_doctor``, the share of the
run's positives that reach a doctor (referred, or decided positive: a positive screening result is
sent to one), and ``missed = 1 - to_doctor``, positives the model decides negative. Runs are
summarised per design, cell, policy and nominal rate by the mean over runs and the range (min, max);
NaN values are left out and ``runs`` counts the runs behind each mean. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.data.designs import DESIGNS
from pipeline.errors import PipelineError
from pipeline.protocol import CELL_TITLES, cell_name, parse_bool

POLICIES = ("uncertain", "paper")
POLICY_TITLES = {"uncertain": "refer the most uncertain",
                 "paper": "refer confident positives + uncertain (paper)"}
RATES = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))
MEASURES = ("referred", "sensitivity", "specificity", "to_doctor", "missed")
RUN_COLUMNS = ["design", "cell", "repeat", "test_half", "policy", "rate", *MEASURES]


def _check_rates(rates: Sequence[float]) -> np.ndarray:
    rates = np.asarray(rates, dtype=float).ravel()
    if rates.size == 0 or not np.all(np.isfinite(rates)) or rates.min() < 0 or rates.max() > 1:
        raise PipelineError(f"referral rates must be a non-empty list of numbers in [0, 1]; got "
                            f"{rates.tolist()}.")
    return rates


def _with_cells(predictions: pd.DataFrame) -> pd.DataFrame:
    needed = ["source", "finetune", "design", "repeat", "test_half", "y_true", "score"]
    missing = [c for c in needed if c not in predictions.columns]
    if missing:
        raise PipelineError(f"predictions table lacks columns {missing}; the referral analysis "
                            f"needs {needed}. Rewrite it with `python -m pipeline svm`.")
    out = predictions.copy()
    out["design"] = out["design"].astype(str)
    unknown = sorted(set(out["design"]) - set(DESIGNS))
    if unknown:
        raise PipelineError(f"predictions table: design {unknown[0]!r} is not one of "
                            f"{', '.join(DESIGNS)}.")
    try:
        out["cell"] = [cell_name(str(s), parse_bool(f))
                       for s, f in zip(out["source"], out["finetune"])]
    except ValueError as exc:
        raise PipelineError(f"predictions table: source/finetune: {exc}.") from None
    return out


def referred_mask(score: np.ndarray, threshold: float, rate: float, policy: str) -> np.ndarray:
    """Which cases a policy refers at a referral rate.

    Args:
        score: finite array of shape (n_cases,), higher = positive.
        threshold: the model calls a case positive when ``score > threshold``.
        rate: the nominal referral rate in [0, 1]; at least ``ceil(rate * n_cases)`` are referred.
        policy: ``"uncertain"`` or ``"paper"`` (see the module docstring).

    Returns:
        Boolean array of shape (n_cases,), True for the referred cases.
    """
    if policy not in POLICIES:
        raise PipelineError(f"referral policy {policy!r} is unknown; known: {', '.join(POLICIES)}.")
    score = np.asarray(score, dtype=float)
    n = score.size
    k = int(np.ceil(_check_rates([rate])[0] * n - 1e-9))
    distance = np.abs(score - threshold)
    base = score > threshold if policy == "paper" else np.zeros(n, dtype=bool)
    if base.sum() >= k:
        return base
    # The (k - |base|)-th nearest case outside the base set sets the cut-off distance.
    cut = np.sort(distance[~base])[k - int(base.sum()) - 1]
    return base | (distance <= cut)


def run_referral(score: Sequence[float], positive: Sequence[bool], threshold: float = 0.0,
                 rates: Sequence[float] = RATES) -> pd.DataFrame:
    """The referral curves of one run, both policies.

    Args:
        score: array of shape (n_cases,) of the run's scores.
        positive: boolean array of shape (n_cases,), True for the positive class (melanoma).
        threshold: the decision threshold (``report.threshold``).
        rates: nominal referral rates in [0, 1].

    Returns:
        One row per policy x rate: ``policy, rate, referred, sensitivity, specificity, to_doctor,
        missed`` (NaN where undefined: see the module docstring).
    """
    score = np.asarray(score, dtype=float).ravel()
    positive = np.asarray(positive).ravel()
    if positive.dtype != bool:
        raise PipelineError(f"positive must be a boolean array; got dtype {positive.dtype}.")
    if score.shape != positive.shape or score.size == 0:
        raise PipelineError(f"score and positive must be non-empty arrays of one length; got "
                            f"{score.size} scores and {positive.size} labels.")
    if not np.all(np.isfinite(score)):
        raise PipelineError(f"scores contain NaN or infinite values (rows "
                            f"{np.flatnonzero(~np.isfinite(score))[:5].tolist()}).")
    called = score > threshold
    n_pos = int(positive.sum())

    def share(numerator: int, denominator: int) -> float:
        return numerator / denominator if denominator else np.nan

    rows = []
    for policy in POLICIES:
        for rate in _check_rates(rates):
            referred = referred_mask(score, threshold, rate, policy)
            decided = ~referred
            pos_dec, neg_dec = positive & decided, ~positive & decided
            missed = int((pos_dec & ~called).sum())
            rows.append({"policy": policy, "rate": float(rate), "referred": referred.mean(),
                         "sensitivity": share(int((pos_dec & called).sum()), int(pos_dec.sum())),
                         "specificity": share(int((neg_dec & ~called).sum()), int(neg_dec.sum())),
                         "to_doctor": share(n_pos - missed, n_pos),
                         "missed": share(missed, n_pos)})
    return pd.DataFrame(rows, columns=["policy", "rate", *MEASURES])


def referral_runs(predictions: pd.DataFrame, threshold: float = 0.0,
                  rates: Sequence[float] = RATES) -> pd.DataFrame:
    """The referral curves of every run of every 2-class design in ``predictions.csv``.

    The 3-class design has no single decision threshold and is left out.

    Args:
        predictions: the ``predictions.csv`` table (``source, finetune, design, repeat,
            test_half, image, y_true, score``).
        threshold: the decision threshold (``report.threshold``).
        rates: nominal referral rates in [0, 1].

    Returns:
        One row per run x policy x rate, columns ``RUN_COLUMNS``.

    Raises:
        PipelineError: a missing column, a label outside the design's classes, or a non-finite
            score, naming the run.
    """
    preds = _with_cells(predictions)
    rates = _check_rates(rates)
    frames = []
    for design in [d for d in DESIGNS if d in set(preds["design"])]:
        positive_class = DESIGNS[design].positive
        if positive_class is None:
            continue
        part = preds[preds["design"] == design]
        for (cell, repeat, half), run in part.groupby(["cell", "repeat", "test_half"], sort=True):
            labels = run["y_true"].astype(str)
            bad = sorted(set(labels) - set(DESIGNS[design].classes))
            what = f"run {cell} {design} repeat {repeat} test half {half}"
            if bad:
                raise PipelineError(f"predictions table, {what}: y_true {bad[:3]} not among the "
                                    f"design's classes {list(DESIGNS[design].classes)}.")
            try:
                curves = run_referral(run["score"].to_numpy(dtype=float),
                                      (labels == positive_class).to_numpy(), threshold, rates)
            except PipelineError as exc:
                raise PipelineError(f"predictions table, {what}: {exc}") from None
            frames.append(curves.assign(design=design, cell=cell, repeat=repeat, test_half=half))
    if not frames:
        raise PipelineError("predictions table has no 2-class design: the referral analysis needs "
                            "a design with one positive class.")
    out = pd.concat(frames, ignore_index=True)[RUN_COLUMNS]
    # Cells in the protocol's order, as every table of the report.
    order = {c: i for i, c in enumerate(CELL_TITLES)}
    return out.sort_values(["design", "cell"], key=lambda col: col.map(order) if col.name == "cell"
                           else col.map(list(DESIGNS).index), kind="stable", ignore_index=True)


def summarize_referral(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and range over runs of ``referral_runs`` output, per design, cell, policy and rate.

    Returns:
        One row per design x cell x policy x rate: ``runs`` (the number of runs), then for each
        measure its mean over the runs where it is defined and ``<measure>_min``/``_max``.
    """
    keys = ["design", "cell", "policy", "rate"]
    grouped = runs.groupby(keys, sort=False)
    out = grouped.size().rename("runs").to_frame()
    for measure in MEASURES:
        out[measure] = grouped[measure].mean()
        out[f"{measure}_min"] = grouped[measure].min()
        out[f"{measure}_max"] = grouped[measure].max()
    return out.reset_index()


def operating_points(summary: pd.DataFrame, max_missed: float = 0.05) -> pd.DataFrame:
    """The lowest referral rate of each design, cell and policy that misses few enough positives.

    Two rates per curve: the lowest at which the mean share missed over runs is at most
    ``max_missed``, and the lowest at which every run's is (``rate_all_runs``; NaN if none).

    Returns:
        One row per design x cell x policy: the ``summarize_referral`` row at the first rate, plus
        ``rate_all_runs``.
    """
    rows = []
    for _, curve in summary.groupby(["design", "cell", "policy"], sort=False):
        curve = curve.sort_values("rate")
        ok = curve[curve["missed"] <= max_missed + 1e-12]
        every = curve[curve["missed_max"] <= max_missed + 1e-12]
        if ok.empty:
            continue
        row = ok.iloc[0].to_dict()
        row["rate_all_runs"] = float(every["rate"].iloc[0]) if len(every) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=[*summary.columns, "rate_all_runs"])
