"""``report.md`` with the paper's tables and plots, from an experiment's result tables.

``write_report`` takes ``metrics.csv`` (one row per run: design x cell x repeat x test half),
``predictions.csv`` (one row per test image per run: ``score`` for two classes, ``score_<class>``
for three) and, for Table 4, the manifest's ``difficulty``, and writes into a folder, every file
atomically:

- ``report.md``: the experiment's facts; Table 1 (AUC % "mean ± sd" over runs) next to the paper's
  numbers; AUC, AP, ACC, SE, SP, F1 with 95% confidence intervals; Table 4 (AUC by diagnostic
  difficulty) when the manifest has difficulty; the 5x2cv t and F tests between cells; the cells
  that could not run, with reason and fix; the figures;
- ``auc.png``, ``roc.png`` and ``referral.png``, drawn by ``pipeline.reporting.figures``;
- ``referral.csv``: the referral curves of every cell of the 2-class designs
  (``pipeline.evaluation.referral``), summarised over runs;
- ``comparisons.csv``: ``pipeline.evaluation.statistics.compare_cells`` for every design.

The tables are built in ``pipeline.reporting.tables``; this module lays them out as markdown
sections. The ``report`` stage (``pipeline.stages.report``) calls it with an experiment's files.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from pipeline.cache.files import write_csv, write_text
from pipeline.data.designs import DESIGNS
from pipeline.data.vocabulary import DIFFICULTY_LEVELS
from pipeline.protocol import CELL_TITLES
from pipeline.reporting.effects import cell_effects, difficulty_effects, effects_section
from pipeline.evaluation.referral import (
    POLICY_TITLES,
    operating_points,
    referral_runs,
    summarize_referral,
)
from pipeline.reporting.figures import plot_auc, plot_referral, plot_roc
from pipeline.reporting.markdown import format_comparison_table, markdown_table
from pipeline.reporting.paper import PAPER_TABLE1, PAPER_TABLE4
from pipeline.reporting.results import not_run_entries, with_cells
from pipeline.reporting.tables import (
    METRIC_TITLES,
    comparisons,
    difficulty_predictions,
    isic_table_from_summary,
    mean_sd,
    run_difficulty_aucs,
    summarize,
    table1_from_summary,
    table_difficulty,
)
from pipeline.reporting.training import training_section


def is_5x2(frame: pd.DataFrame) -> bool:
    """Whether every design x cell of a result table has the 5 x 2 runs the 5x2cv tests need."""
    return all(g["repeat"].nunique() == 5 and g["test_half"].nunique() == 2 and len(g) == 10
               for _, g in frame.groupby(["design", "cell"]))


def _table1_section(summary: pd.DataFrame, entries: list[dict],
                    paper_table: pd.DataFrame | None) -> list[str]:
    table = table1_from_summary(summary[summary["metric"] == "auc"], entries)
    n_runs = sorted(set(summary.loc[summary["metric"] == "auc", "n_runs"]))
    runs = f"{n_runs[0]}" if len(n_runs) == 1 else f"{n_runs[0]}–{n_runs[-1]}"
    head = ["Design", *(["", ] if paper_table is not None else []),
            *(f"{CELL_TITLES[c]} ({c})" for c in table.columns)]
    rows = []
    for design, values in table.iterrows():
        rows.append([DESIGNS[design].title, *(["this run"] if paper_table is not None else []),
                     *values])
        if paper_table is not None:
            rows.append(["", "paper", *(f"{paper_table.loc[design, c]:.1f}"
                                         if design in paper_table.index and c in paper_table.columns
                                         else "—" for c in table.columns)])
    return ["## Table 1: AUC (%) by transfer source", "",
            (f"Mean ± sd over {runs} runs per cell. " if n_runs[-1] > 1 else
             "One run per cell (no sd; confidence intervals in the metrics table). ")
            + "For the 3-class design the AUC is the paper's mean of the three one-vs-one AUCs "
            "(the reference code's one-vs-rest AUC is in the metrics table below). "
            + ("\"paper\": Menegola et al. (2017), Table 1 (Interactive Atlas, VGG-M), for "
               "reference. " if paper_table is not None else "")
            + ("\"not run\": see *Cells not run*." if entries else ""), "",
            markdown_table(head, rows), "",
            "![AUC per cell with 95% confidence intervals](auc.png)"]


def _difficulty_section(predictions: pd.DataFrame, manifest: pd.DataFrame | None, cell: str,
                        paper: pd.DataFrame | None) -> list[str]:
    lines = ["## Table 4: AUC (%) by diagnostic difficulty", ""]
    if manifest is None:
        return lines + ["Skipped: no manifest was given, so the test images' difficulty is "
                        "unknown."]
    table, notes = table_difficulty(predictions, manifest, cell)
    if table.empty:
        return lines + notes
    rows = []
    for design, part in table.groupby("design", sort=False):
        values = []
        for r in part.itertuples():
            partial = r.runs_used < r.runs_total
            values.append(mean_sd(r.mean, r.sd)
                          + (f" ({r.runs_used}/{r.runs_total} runs)" if partial else ""))
        rows.append([DESIGNS[design].title, "this run", *values])
        if paper is not None and design in paper.index:
            rows.append(["", "paper", *(f"{v:.1f}" for v in paper.loc[design])])
    first = table["design"].iloc[0]
    shares = table[table["design"] == first].set_index("level")["share"]
    lines += [f"Cell `{cell}`: the AUC of each run on its test images of one difficulty level, "
              f"then mean ± sd over runs. Share of the {DESIGNS[first].title} test images: "
              + ", ".join(f"{lvl} {100 * shares[lvl]:.1f}%" for lvl in DIFFICULTY_LEVELS)
              + (" (paper: 38.1, 36.3, 25.6%)." if paper is not None else "."), "",
              markdown_table(["Design", "", "Low", "Medium", "High", "All"], rows)]
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])


def _pct(value: float) -> str:
    return "—" if pd.isna(value) else f"{100 * value:.1f}"


def referral_section(predictions: pd.DataFrame, out_dir: str | os.PathLike,
                     threshold: float = 0.0, score: str = "the SVM score") -> list[str]:
    """Write ``referral.csv`` and ``referral.png`` into ``out_dir``; return the report's section.

    ``referral.csv`` is ``pipeline.evaluation.referral.summarize_referral`` of every run of every
    2-class design; the section lists, per design, cell and policy, the lowest referral rate at
    which no more than 5% of the positives are missed (mean over runs), and the lowest at which
    no run misses more.
    """
    out = Path(out_dir)
    lines = ["## Referral to a dermatologist", ""]
    if not any(DESIGNS[d].positive for d in set(predictions["design"].astype(str))
               if d in DESIGNS):
        return lines + ["Skipped: no 2-class design ran (the referral analysis needs a decision "
                        "threshold between one positive class and the rest).", ""]
    summary = summarize_referral(referral_runs(predictions, threshold))
    write_csv(out / "referral.csv", summary)
    plot_referral(summary, out / "referral.png")
    points = operating_points(summary, 0.05)
    rows = [[DESIGNS[r.design].title, r.cell, POLICY_TITLES[r.policy], _pct(r.rate),
             f"{_pct(r.referred)} [{_pct(r.referred_min)}, {_pct(r.referred_max)}]",
             f"{_pct(r.missed)} [{_pct(r.missed_min)}, {_pct(r.missed_max)}]",
             _pct(r.sensitivity), _pct(r.specificity), _pct(r.rate_all_runs)]
            for r in points.itertuples()]
    lines += ["The model decides some test cases and refers the rest to a dermatologist "
              f"(Menegola et al. 2017, §4), at threshold {threshold:g} on {score}. Two "
              "policies: refer the cases whose scores are nearest the threshold; or the paper's, "
              "refer every positive call and the uncertain cases and decide only confident "
              "negatives. A positive reaches a doctor when it is referred or called positive; it "
              "is missed when the model decides it negative. Each run's curve at referral rates "
              "0, 5, ..., 100% (tied cases are never split, so the realised rate can be higher), "
              "then the mean over runs [min, max]; SE and SP are on the cases the model decides. "
              "All rates in `referral.csv`.", "",
              "Operating points at which no more than 5% of the positives (melanomas; malignant "
              "lesions for Malignant vs. Benign) are missed: the lowest nominal referral rate "
              "where the mean share missed over runs is ≤ 5%, and the lowest where every run's is.",
              ""]
    lines += [markdown_table(["Design", "Cell", "Policy", "Rate (%)", "Referred (%)",
                              "Missed (%)", "SE decided", "SP decided", "Rate, every run (%)"],
                             rows) if rows else "No curve reaches 5% missed.", "",
              "The paper's policy decides negative calls only, so on the cases it decides SE is 0 "
              "whenever a positive is among them and SP is 100%: what it costs is the share "
              "missed."]
    return lines + ["", "![Referral curves](referral.png)", ""]


def attributions_section(out_dir: str | os.PathLike) -> list[str]:
    """Links to the grids that ``python -m pipeline explain`` wrote into ``out_dir/explain/``,
    with integrated gradients' completeness error per grid; nothing when there are none."""
    out = Path(out_dir)
    tables = sorted(out.glob("explain/*/attributions.csv"))
    if not tables:
        return []
    lines = ["## Attributions", "",
             "What the network + SVM looks at in some test images (`python -m pipeline explain`): "
             "integrated gradients of the SVM's decision score through the network (black-image "
             "baseline; red raises the score, blue lowers it) and Grad-CAM on the network's last "
             "convolutional layer (its resolution is that layer's: a few cells at small inputs). "
             "Completeness: |sum of the attributions − (f(x) − f(black))| "
             "relative to |f(x) − f(black)|, the largest over the grid's images.", ""]
    for path in tables:
        table = pd.read_csv(path)
        ig = table[table["method"] == "ig"] if "method" in table else table.iloc[:0]
        delta = ig["f_x"] - ig["f_baseline"]
        error = (ig["attribution_sum"] - delta).abs() / delta.abs().clip(lower=1e-12)
        note = f"; completeness error up to {100 * error.max():.2f}%" if len(ig) else ""
        rel = path.parent.relative_to(out).as_posix()
        lines += [f"- `{path.parent.name}`, run {', '.join(map(str, sorted(set(table['run']))))}, "
                  f"{table['image'].nunique()} images{note}: [{rel}/grid.png]({rel}/grid.png)"]
        lines += ["", f"![Attributions {path.parent.name}]({rel}/grid.png)", ""]
    return lines


def write_report(out_dir: str | os.PathLike, metrics: pd.DataFrame, predictions: pd.DataFrame,
                 manifest: pd.DataFrame | None = None, not_run: Iterable[dict] = (),
                 header: dict | None = None, paper_table: pd.DataFrame | None = PAPER_TABLE1, *,
                 paper_difficulty: pd.DataFrame | None = PAPER_TABLE4,
                 difficulty_cell: str = "imagenet+ft", threshold: float = 0.0,
                 n_boot: int = 1000, seed: int = 0, extra_sections: Sequence[str] = (),
                 training: pd.DataFrame | None = None, holdout: bool = False,
                 score: str = "the SVM score") -> Path:
    """Write ``report.md``, ``auc.png``, ``roc.png``, ``referral.png``, ``referral.csv`` and
    ``comparisons.csv`` into ``out_dir``.

    ``report.md`` is written last, so its presence means the report is complete.

    Args:
        out_dir: the experiment's output folder.
        metrics: ``metrics.csv`` table.
        predictions: ``predictions.csv`` table.
        manifest: manifest table, for Table 4 (None: Table 4 is skipped with a note).
        not_run: ``{source, finetune, reason, fix[, design]}`` for cells that could not run.
        header: experiment facts, printed in order at the top (name, dataset, network, ...);
            its ``experiment`` entry titles the report (default: the folder's name).
        paper_table: the paper's AUC (%) designs x cells shown beside Table 1 and in ``auc.png``,
            or None where the paper has no comparable numbers (another dataset or network).
        paper_difficulty: the paper's Table 4, or None.
        difficulty_cell: the cell of Table 4 (the paper: ``imagenet+ft``).
        threshold: decision threshold of ACC, SE, SP and F1 (0 = the SVM's decision).
        n_boot: bootstrap resamples for single-run intervals.
        seed: bootstrap seed.
        extra_sections: markdown lines inserted before the comparisons (e.g. Table 3).
        training: ``pipeline.reporting.training.training_rows`` of the experiment's trained
            networks, for the section on whether they learned (None: no such section).
        holdout: a hold-out experiment (Kim & Rocheteau's protocol): Menegola's sections that do
            not apply are left out (the paper's 5x2cv effects, Table 4 by difficulty and the
            5x2cv comparisons between cells; ``comparisons.csv`` is still written, empty); its
            own tables come in ``extra_sections``.
        score: what the threshold applies to, in the report's words (``classifier.kind =
            "network"``: the network's log-odds).

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    not_run = list(not_run)
    entries = not_run_entries(not_run)
    names = [c for c in METRIC_TITLES if c in metrics.columns]
    summary = summarize(metrics, names, predictions, threshold=threshold, n_boot=n_boot, seed=seed)
    header = dict(header or {})
    title = header.get("experiment", out.name)
    lines = [f"# Report: {title}", "",
             markdown_table(["fact", "value"], [[k, v] for k, v in header.items()])
             if header else "No experiment facts were given.", ""]
    lines += _table1_section(summary, entries, paper_table) + [""]
    frame = with_cells(metrics, "metrics table")
    table = comparisons(metrics) if is_5x2(frame) else pd.DataFrame(
        columns=["design", "a", "b", "mean_diff", "t_stat", "t_p", "f_stat", "f_p"])
    difficulty = None
    if manifest is not None and "difficulty" in manifest.columns and is_5x2(frame):
        per_run = run_difficulty_aucs(difficulty_predictions(predictions, manifest,
                                                             difficulty_cell))
        difficulty = difficulty_effects(per_run) if len(per_run) else None
    if not holdout:
        lines += effects_section(cell_effects(table), difficulty, difficulty_cell)
    if training is not None:
        lines += training_section(training)

    isic = isic_table_from_summary(summary)
    lines += ["## Metrics with 95% confidence intervals (ISIC 2016 style)", "",
              f"In %. ACC, SE, SP and F1 at decision threshold {threshold:g} on {score} "
              "(score > threshold = positive); for the 3-class design ACC is that of the argmax "
              "and SE, SP, F1 are melanoma against the rest; AP is averaged over one-vs-rest "
              "classes there, and AUC OvR is the reference code's macro one-vs-rest AUC. "
              "Intervals: Student's t over runs (optimistic: 5x2 runs share training images), or "
              "a stratified bootstrap of the test images for a single run (column CI).", "",
              markdown_table(["Design", "Cell", *isic.columns],
                             [[DESIGNS[d].title, c, *row] for (d, c), row in isic.iterrows()]), ""]

    plot_roc(predictions, out / "roc.png")
    lines += ["## ROC curves", "", "Mean ROC curve of each cell over its runs (true-positive "
              "rates averaged at fixed false-positive rates), band ±1 sd; the legend gives the "
              "mean AUC of the plotted curves (for the 3-class design: melanoma against the rest, "
              "not Table 1's one-vs-one mean).", "", "![ROC curves per design](roc.png)", ""]
    lines += referral_section(predictions, out, threshold, score)
    if not holdout:
        lines += _difficulty_section(predictions, manifest, difficulty_cell, paper_difficulty)
        lines += [""]

    lines += list(extra_sections)
    comparisons_text = [] if holdout else ["## Comparisons between cells", ""]
    if holdout:
        lines += comparisons_text  # the 5x2cv tests do not apply; Table 1 (KR) has its t tests
    elif is_5x2(frame):
        lines += comparisons_text + ["AUC of cell a minus cell b (in points), with Dietterich's 5x2cv paired t test "
                  "(its numerator the difference of repeat 1's run trained on half 1 and tested on "
                  "half 2, as Dietterich 1998 and mlxtend define it) and Alpaydin's combined 5x2cv "
                  "F test; * marks p < 0.05. Also in `comparisons.csv`.", "", format_comparison_table(table)]
    else:
        lines += comparisons_text + ["Not computed: the 5x2cv tests need 5 repeats x 2 test halves per cell, and this "
                  "experiment's cells have other run counts (e.g. one official train/test split)."]
    write_csv(out / "comparisons.csv", table)

    lines += ["", "## Cells not run", ""]
    if entries:
        lines += [markdown_table(["Cell", "Designs", "Reason", "Fix"], [
            [f"{CELL_TITLES[e['cell']]} ({e['cell']})", "all" if e["designs"] is None
             else ", ".join(DESIGNS[d].title for d in sorted(e["designs"])), e["reason"],
             e["fix"]] for e in entries])]
    else:
        lines += ["None: every cell this experiment asked for ran."]
    plot_auc(summary, out / "auc.png", paper_table, not_run)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"


# --- the `report` and `compare` stages -----------------------------------------------------------

