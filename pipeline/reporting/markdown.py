"""Markdown for the report: tables and the formatted 5x2cv comparisons."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from pipeline.data.designs import DESIGNS


# ----------------------------------------------------------------------------- markdown
def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured markdown table (``|`` in cells escaped)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report.md
def p_value_text(value: float) -> str:
    if not np.isfinite(value):
        return "—"
    text = "<0.001" if value < 0.001 else f"{value:.3f}"
    return text + " *" if value < 0.05 else text


def format_comparison_table(comparisons: pd.DataFrame) -> str:
    """The comparisons as a markdown table; p < 0.05 marked ``*``; differences in AUC points."""
    rows = [[DESIGNS[r.design].title if r.design in DESIGNS else r.design, r.a, r.b,
             f"{100 * r.mean_diff:+.1f}", f"{r.t_stat:.2f}", p_value_text(r.t_p), f"{r.f_stat:.2f}",
             p_value_text(r.f_p)] for r in comparisons.itertuples()]
    return markdown_table(["design", "a", "b", "mean a − b", "t", "p (t)", "F", "p (F)"], rows)
