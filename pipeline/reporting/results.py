"""The result tables as inputs: checking ``metrics.csv`` / ``predictions.csv`` and their cells.

``with_cells`` validates a result table and adds its ``cell`` column; ``not_run_entries`` normalises
the cells that could not run; ``run_scores`` reads one run's scores. Used by the tables, figures and
report of ``pipeline.reporting``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from pipeline.data.designs import DESIGNS, get_design
from pipeline.errors import PipelineError
from pipeline.protocol import SOURCES, cell_name, parse_bool

RUN_KEY = ["design", "cell", "repeat", "test_half"]


def with_cells(frame: pd.DataFrame, what: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Validate a result table (``metrics.csv`` or ``predictions.csv``) and add its ``cell``."""
    needed = ["source", "finetune", "design", "repeat", "test_half", *extra]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise PipelineError(f"{what} lacks columns {missing}; it needs {needed} (columns found: "
                            f"{list(frame.columns)}). Rewrite it with `python -m pipeline svm`.")
    if frame.empty:
        raise PipelineError(f"{what} has no rows: no cell ran. Run `python -m pipeline svm` for "
                            "the experiment first (cells that cannot run are listed in not_run).")
    out = frame.copy()
    for column, allowed in (("source", SOURCES), ("design", tuple(DESIGNS))):
        out[column] = out[column].astype(str)
        bad = ~out[column].isin(allowed)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PipelineError(f"{what}, row {i + 2}: {column} {out[column].iloc[i]!r} is not "
                                f"one of {', '.join(allowed)}.")
    flags = []
    for i, value in enumerate(out["finetune"].tolist()):
        try:
            flags.append(parse_bool(value))
        except ValueError as exc:
            raise PipelineError(f"{what}, row {i + 2}: finetune {exc}.") from None
    out["finetune"] = np.array(flags, dtype=bool)
    out["cell"] = [cell_name(s, f) for s, f in zip(out["source"], out["finetune"])]
    return out


def ordered(values: Iterable[str], order: Iterable[str]) -> list[str]:
    """The members of ``order`` that occur in ``values``, in ``order``'s order."""
    present = set(values)
    return [v for v in order if v in present]


def not_run_entries(not_run: Iterable[dict]) -> list[dict]:
    """Normalise ``not_run`` entries: ``cell``, ``designs`` (None = every design), reason, fix."""
    entries = []
    for i, entry in enumerate(not_run):
        missing = [k for k in ("source", "finetune", "reason", "fix") if k not in entry]
        try:
            finetune = parse_bool(entry.get("finetune"))
        except ValueError:
            finetune = None
        if missing or entry["source"] not in SOURCES or finetune is None:
            raise PipelineError(f"not_run entry {i} ({entry!r}) needs keys source (one of "
                                f"{', '.join(SOURCES)}), finetune (True/False), reason and fix"
                                + (f"; missing {missing}." if missing else "."))
        design = entry.get("design")
        entries.append({"cell": cell_name(entry["source"], finetune),
                        "designs": None if design is None else {get_design(design).name},
                        "reason": str(entry["reason"]), "fix": str(entry["fix"])})
    return entries


def skipped_entry(entries: list[dict], design: str, cell: str) -> dict | None:
    """The ``not_run_entries`` entry that covers ``cell`` in ``design``, if any."""
    for entry in entries:
        if entry["cell"] == cell and (entry["designs"] is None or design in entry["designs"]):
            return entry
    return None


def score_columns(design: str) -> list[str]:
    """``predictions.csv``'s score columns of a design: ``score``, or ``score_<class>`` each."""
    classes = get_design(design).classes
    return ["score"] if len(classes) == 2 else [f"score_{c}" for c in classes]


def run_scores(run: pd.DataFrame, design: str, what: str) -> np.ndarray:
    """Scores of one run: array of shape (n_images,) or (n_images, 3)."""
    columns = score_columns(design)
    missing = [c for c in columns if c not in run.columns]
    if missing:
        raise PipelineError(f"{what} lacks score columns {missing} for design {design!r}.")
    scores = run[columns].to_numpy(dtype=float)
    return scores[:, 0] if len(columns) == 1 else scores
