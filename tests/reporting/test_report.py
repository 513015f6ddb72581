"""Tests of pipeline.reporting.report and pipeline.reporting.tables (and the figures report.md embeds) on result tables
generated here (metrics, predictions, manifest)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from pipeline.reporting import report

from pipeline.reporting import paper, tables
from pipeline.data.designs import DESIGNS
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import cell_metrics

ALL_CELLS = [("none", True), ("retinopathy", False), ("retinopathy", True), ("imagenet", False),
             ("imagenet", True), ("double", True), ("none", False), ("double", False)]
TABLE_ORDER = ["none+ft", "retinopathy", "retinopathy+ft", "imagenet", "imagenet+ft", "double+ft",
               "none", "double"]
RUN_COLUMNS = ["source", "finetune", "design", "repeat", "test_half"]


def make_manifest(n: int = 80, seed: int = 0, high: int | None = None) -> pd.DataFrame:
    """Images with fixed class proportions (60% benign, 25% melanoma, 15% bcc) and a difficulty.

    ``high``: give only that many images (half melanoma, half benign) the level "high", so that
    some test halves hold a single class of it.
    """
    rng = np.random.default_rng(seed)
    category = rng.permutation(np.repeat(["benign", "melanoma", "bcc"],
                                         [int(0.6 * n), int(0.25 * n), n - int(0.85 * n)]))
    difficulty = rng.choice(["low", "medium", "high", ""], size=n, p=[0.35, 0.35, 0.25, 0.05])
    if high is not None:
        difficulty[difficulty == "high"] = "medium"
        for cat in ("melanoma", "benign"):
            difficulty[np.flatnonzero(category == cat)[: high // 2]] = "high"
    return pd.DataFrame({"image": [f"img{i:03d}" for i in range(n)], "category": category,
                         "difficulty": difficulty})


def make_predictions(manifest: pd.DataFrame, cells, repeats: int = 5, halves: int = 2,
                     seed: int = 0) -> pd.DataFrame:
    """Scores that separate the classes more for later cells and for easier images."""
    rng = np.random.default_rng(seed)
    ease = manifest["difficulty"].map({"low": 2.0, "medium": 1.0, "high": 0.3, "": 1.0}).to_numpy()
    frames = []
    for design, d in DESIGNS.items():
        labels = manifest["category"].map(d.mapping)
        keep = labels.notna().to_numpy()
        for repeat in range(repeats):
            parts = np.array_split(rng.permutation(np.flatnonzero(keep)), 2)
            for half in range(halves):
                idx = np.sort(parts[half])
                y = labels.to_numpy()[idx].astype(str)
                for k, (source, finetune) in enumerate(cells):
                    frame = pd.DataFrame({"source": source, "finetune": finetune, "design": design,
                                          "repeat": repeat, "test_half": half,
                                          "image": manifest["image"].to_numpy()[idx], "y_true": y})
                    signal = (0.4 + 0.4 * k) * ease[idx]
                    if d.positive:
                        frame["score"] = signal * (y == d.positive) + rng.normal(size=len(y)) - 0.5
                    else:
                        for c in d.classes:
                            frame[f"score_{c}"] = signal * (y == c) + rng.normal(size=len(y))
                    frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def metrics_from(predictions: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for key, run in predictions.groupby(RUN_COLUMNS, sort=False):
        classes = DESIGNS[key[2]].classes
        columns = ["score"] if len(classes) == 2 else [f"score_{c}" for c in classes]
        scores = run[columns].to_numpy(dtype=float)
        scores = scores[:, 0] if len(columns) == 1 else scores
        values = cell_metrics(run["y_true"].to_numpy(), scores, classes)
        rows.append({**dict(zip(RUN_COLUMNS, key)), "auc_ovr": np.nan, **values,
                     "n_train": len(run), "n_test": len(run), "C": 1.0})
    return pd.DataFrame(rows)


def known_metrics(cells, seed: int = 0) -> pd.DataFrame:
    """AUCs drawn per run, rows shuffled; tests compute the expected summaries themselves."""
    rng = np.random.default_rng(seed)
    rows = [{"source": s, "finetune": f, "design": d, "repeat": r, "test_half": h,
             "auc": float(rng.uniform(0.55, 0.95))}
            for d in DESIGNS for s, f in cells for r in range(5) for h in range(2)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


def expected_mean_sd(values) -> str:
    values = 100 * np.asarray(values, dtype=float)
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


@pytest.fixture(scope="module")
def grid():
    """A 3-cell 5x2 experiment: manifest, predictions, metrics."""
    manifest = make_manifest()
    cells = [("none", True), ("imagenet", False), ("imagenet", True)]
    predictions = make_predictions(manifest, cells)
    return manifest, predictions, metrics_from(predictions)


def test_table1_layout_order_and_values():
    metrics = known_metrics(ALL_CELLS)
    table = tables.table1(metrics)
    assert list(table.index) == list(DESIGNS)
    assert list(table.columns) == TABLE_ORDER
    for design in DESIGNS:
        for source, finetune in ALL_CELLS:
            cell = f"{source}+ft" if finetune else source
            runs = metrics[(metrics["design"] == design) & (metrics["source"] == source)
                           & (metrics["finetune"] == finetune)]
            assert table.loc[design, cell] == expected_mean_sd(runs["auc"]), (design, cell)
    numeric = tables.table1_numeric(metrics)
    expected = 100 * metrics[(metrics["design"] == "melanoma_vs_benign")
                             & (metrics["source"] == "double") & metrics["finetune"]]["auc"].mean()
    assert numeric.loc["melanoma_vs_benign", "double+ft"] == pytest.approx(expected)
    assert list(numeric.columns) == TABLE_ORDER


def test_table1_not_run_cells_and_csv_booleans():
    metrics = known_metrics([("imagenet", True), ("none", True)])
    metrics["finetune"] = metrics["finetune"].map(str)  # as a CSV written with mixed types reads
    not_run = [{"source": "double", "finetune": True, "reason": "no ImageNet weights offline",
                "fix": "place imagenet-vgg-m.mat in weights/"},
               {"source": "none", "finetune": "False", "reason": "r", "fix": "f",
                "design": "melanoma_vs_benign"}]
    table = tables.table1(metrics, not_run)
    assert list(table.columns) == ["none+ft", "imagenet+ft", "double+ft", "none"]
    assert (table["double+ft"] == "not run").all()
    assert table["none"].tolist() == ["no results", "not run", "no results"]
    with pytest.raises(PipelineError, match="not_run entry 0"):
        tables.table1(metrics, [{"source": "double", "finetune": "yes", "reason": "r", "fix": "f"}])
    assert table.loc["malignant_vs_benign", "imagenet+ft"].count("±") == 1


def test_table1_rejects_a_cell_both_run_and_not_run():
    metrics = known_metrics([("imagenet", True)])
    not_run = [{"source": "imagenet", "finetune": True, "reason": "r", "fix": "f"}]
    with pytest.raises(PipelineError, match="also listed as not run"):
        tables.table1(metrics, not_run)


@pytest.mark.parametrize("column, value, message", [
    ("source", "cifar", "row 2: source 'cifar'"),
    ("design", "nevus_vs_all", "row 2: design 'nevus_vs_all'"),
    ("finetune", "maybe", "finetune 'maybe' is not a boolean"),
])
def test_bad_result_rows_are_named(column, value, message):
    metrics = known_metrics([("imagenet", True)])
    metrics[column] = metrics[column].astype(object)
    metrics.loc[0, column] = value
    with pytest.raises(PipelineError, match=re.escape(message)):
        tables.table1(metrics)


def test_duplicate_runs_and_missing_columns_are_errors():
    metrics = known_metrics([("imagenet", True)])
    with pytest.raises(PipelineError, match="several rows for run"):
        tables.table1(pd.concat([metrics, metrics.head(1)]))
    with pytest.raises(PipelineError, match="lacks columns \\['test_half'\\]"):
        tables.table1(metrics.drop(columns="test_half"))


def test_paper_tables_hold_the_published_numbers():
    # PROTOCOL.md, "Reported results".
    assert paper.PAPER_TABLE1.loc["malignant_vs_benign"].tolist() == [76.0, 72.8, 76.0, 79.1,
                                                                        82.5, 78.8]
    assert paper.PAPER_TABLE1.loc["melanoma_vs_bcc_vs_benign", "imagenet+ft"] == 83.6
    assert list(paper.PAPER_TABLE1.columns) == TABLE_ORDER[:6]
    assert paper.PAPER_TABLE3.loc["vgg16"].tolist() == [83.8, 83.5, 84.5]


def test_table_architectures():
    vgg_m = known_metrics([("imagenet", True)], seed=1)
    vgg16 = known_metrics([("imagenet", True)], seed=2)
    vgg16 = vgg16[vgg16["design"] != "melanoma_vs_benign"]
    table = tables.table_architectures({"vgg_m": vgg_m, "vgg16": vgg16})
    assert list(table.index) == ["vgg_m", "vgg16"] and list(table.columns) == list(DESIGNS)
    runs = vgg16[vgg16["design"] == "malignant_vs_benign"]["auc"]
    assert table.loc["vgg16", "malignant_vs_benign"] == expected_mean_sd(runs)
    assert table.loc["vgg16", "melanoma_vs_benign"] == "no results"


def test_table_difficulty_matches_a_direct_computation():
    manifest = make_manifest(high=4)
    predictions = make_predictions(manifest, [("imagenet", True), ("none", True)])
    table, notes = tables.table_difficulty(predictions, manifest, "imagenet+ft")
    assert list(table["design"].unique()) == ["malignant_vs_benign", "melanoma_vs_benign"]
    joined = predictions.merge(manifest[["image", "difficulty"]], on="image")
    joined = joined[(joined["source"] == "imagenet") & joined["finetune"]]
    for design in ("malignant_vs_benign", "melanoma_vs_benign"):
        rows = joined[joined["design"] == design]
        for level in ("low", "medium", "high", "all"):
            aucs = []
            for _, run in rows.groupby(["repeat", "test_half"]):
                part = run if level == "all" else run[run["difficulty"] == level]
                y = part["y_true"] == DESIGNS[design].positive
                if y.nunique() == 2:
                    aucs.append(roc_auc_score(y, part["score"]))
            got = table[(table["design"] == design) & (table["level"] == level)].iloc[0]
            assert got["runs_used"] == len(aucs) and got["runs_total"] == 10
            assert got["mean"] == pytest.approx(np.mean(aucs)), (design, level)
            assert got["sd"] == pytest.approx(np.std(aucs, ddof=1)), (design, level)
    # "All" is the run's AUC, the one in metrics.csv.
    metrics = metrics_from(predictions)
    expected = metrics[(metrics["design"] == "melanoma_vs_benign")
                       & (metrics["source"] == "imagenet") & metrics["finetune"]]["auc"].mean()
    got = table[(table["design"] == "melanoma_vs_benign") & (table["level"] == "all")]["mean"]
    assert float(got.iloc[0]) == pytest.approx(expected)
    high = table[table["level"] == "high"]
    assert (high["runs_used"] < high["runs_total"]).all()  # 4 "high" images: single class often
    assert any("high difficulty" in n and "runs skipped" in n for n in notes)


def test_table_difficulty_without_difficulty_is_skipped_with_a_note(grid):
    manifest, predictions, _ = grid
    table, notes = tables.table_difficulty(predictions, manifest.assign(difficulty=""))
    assert table.empty and "no diagnostic difficulty" in notes[0]
    with pytest.raises(PipelineError, match="not in the manifest"):
        tables.table_difficulty(predictions, manifest.iloc[5:])


def test_comparisons_columns_orientation_and_differences(grid):
    _, _, metrics = grid
    table = tables.comparisons(metrics)
    assert list(table.columns) == ["design", "a", "b", "mean_diff", "t_stat", "t_p", "f_stat",
                                   "f_p"]
    assert len(table) == 3 * 3  # 3 designs x C(3, 2) pairs
    order = {c: i for i, c in enumerate(TABLE_ORDER)}
    assert all(order[a] < order[b] for a, b in zip(table["a"], table["b"]))
    row = table[(table["design"] == "malignant_vs_benign") & (table["a"] == "none+ft")
                & (table["b"] == "imagenet+ft")].iloc[0]
    m = metrics[metrics["design"] == "malignant_vs_benign"].set_index(["repeat", "test_half"])
    a = m[(m["source"] == "none") & m["finetune"]]["auc"]
    b = m[(m["source"] == "imagenet") & m["finetune"]]["auc"]
    assert row["mean_diff"] == pytest.approx((a - b).mean())
    assert 0 <= row["t_p"] <= 1 and 0 <= row["f_p"] <= 1


def test_format_comparison_table_marks_significance():
    table = pd.DataFrame({"design": ["melanoma_vs_benign"] * 2, "a": ["none+ft", "imagenet"],
                          "b": ["imagenet+ft", "imagenet+ft"], "mean_diff": [-0.05, 0.01],
                          "t_stat": [-3.1, 0.4], "t_p": [0.02, 0.7], "f_stat": [6.0, 0.5],
                          "f_p": [0.04, 0.8]})
    lines = report.format_comparison_table(table).splitlines()
    assert lines[0].startswith("| design | a | b |") and len(lines) == 4
    assert "| -5.0 |" in lines[2] and "0.020 *" in lines[2] and "0.040 *" in lines[2]
    assert "*" not in lines[3]


def test_isic_metrics_intervals_contain_the_mean(grid):
    _, _, metrics = grid
    table = tables.table_isic_metrics(metrics)
    assert list(table.columns) == ["AUC", "AUC OvR", "AP", "ACC", "SE", "SP", "F1", "runs", "CI"]
    for value in table[["AUC", "AP", "ACC", "SE", "SP", "F1"]].to_numpy().ravel():
        mean, low, high = map(float, re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", value).groups())
        assert low <= mean <= high
    assert (table["runs"] == 10).all()
    assert table.loc[("malignant_vs_benign", "imagenet+ft"), "AUC OvR"] == "—"
    assert table.loc[("melanoma_vs_bcc_vs_benign", "imagenet+ft"), "AUC OvR"] != "—"


def test_single_run_uses_a_seeded_bootstrap():
    manifest = make_manifest(n=60)
    predictions = make_predictions(manifest, [("imagenet", True)], repeats=1, halves=1)
    metrics = metrics_from(predictions)
    first = tables.summarize(metrics, ["auc", "f1"], predictions, n_boot=40, seed=3)
    again = tables.summarize(metrics, ["auc", "f1"], predictions, n_boot=40, seed=3)
    pd.testing.assert_frame_equal(first, again)
    assert (first["ci"] == "bootstrap, 40 resamples").all() and (first["n_runs"] == 1).all()
    assert (first["low"] <= first["mean"]).all() and (first["mean"] <= first["high"]).all()
    auc = first[(first["design"] == "melanoma_vs_benign") & (first["metric"] == "auc")].iloc[0]
    expected = metrics[metrics["design"] == "melanoma_vs_benign"]["auc"].iloc[0]
    assert auc["mean"] == pytest.approx(expected)
    # Table 1 with a single run shows the value alone, not "± nan".
    table = tables.table1(metrics)
    assert table.loc["melanoma_vs_benign", "imagenet+ft"] == f"{100 * expected:.1f}"


def _check_pngs(folder, text):
    names = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert sorted(names) == ["auc.png", "referral.png", "roc.png"]
    for name in names:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width > 600 and image.height > 300
            image.verify()


def test_write_report_sections_figures_and_files(grid, tmp_path):
    manifest, predictions, metrics = grid
    not_run = [{"source": "double", "finetune": True, "reason": "no ImageNet weights offline",
                "fix": "place imagenet-vgg-m.mat in weights/"}]
    header = {"experiment": "atlas_vgg_m", "dataset": "synthetic", "epochs": 2}
    path = report.write_report(tmp_path, metrics, predictions, manifest, not_run, header)
    text = path.read_text()
    for heading in ("# Report: atlas_vgg_m", "## Table 1: AUC (%) by transfer source",
                    "## Metrics with 95% confidence intervals (ISIC 2016 style)", "## ROC curves",
                    "## Table 4: AUC (%) by diagnostic difficulty", "## Comparisons between cells",
                    "## Cells not run"):
        assert heading in text, heading
    assert "| epochs | 2 |" in text
    assert "| Malignant vs. Benign | this run |" in text and "|  | paper | 76.0 |" in text
    table1_row = next(line for line in text.splitlines()
                      if "Melanoma vs. Benign | this run" in line)
    assert table1_row.endswith("| not run |")  # double+ft is the last of the paper's columns
    assert "no ImageNet weights offline" in text and "place imagenet-vgg-m.mat in weights/" in text
    assert "decision threshold 0" in text and "p < 0.05" in text
    _check_pngs(tmp_path, text)
    saved = pd.read_csv(tmp_path / "comparisons.csv")
    assert list(saved.columns) == ["design", "a", "b", "mean_diff", "t_stat", "t_p", "f_stat",
                                   "f_p"]
    pd.testing.assert_frame_equal(saved, tables.comparisons(metrics), check_dtype=False)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_write_report_single_split_without_manifest(tmp_path):
    manifest = make_manifest(n=60)
    predictions = make_predictions(manifest, [("imagenet", True)], repeats=1, halves=1)
    path = report.write_report(tmp_path, metrics_from(predictions), predictions, paper_table=None,
                               n_boot=30)
    text = path.read_text()
    assert "Not computed: the 5x2cv tests need 5 repeats x 2 test halves" in text
    assert "Skipped: no manifest was given" in text
    assert "bootstrap, 30 resamples" in text and "| paper |" not in text
    assert "None: every cell this experiment asked for ran." in text
    _check_pngs(tmp_path, text)
    assert pd.read_csv(tmp_path / "comparisons.csv").empty


def _table_rows(text: str, title: str) -> list[list[str]]:
    """The rows of the markdown table that follows ``title`` in report.md, split into cells."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif table:
            break
    return table


def test_report_table1_and_comparisons_hold_the_numbers_of_the_metrics(grid, tmp_path):
    manifest, predictions, metrics = grid
    text = report.write_report(tmp_path, metrics, predictions, manifest).read_text()
    rows = _table_rows(text, "## Table 1")
    header, body = rows[0], rows[2:]
    checked = 0
    for row in body:
        if row[1] != "this run":
            continue
        design = next(d for d, spec in DESIGNS.items() if spec.title == row[0])
        for title, value in zip(header[2:], row[2:]):
            cell = re.search(r"\(([^)]+)\)$", title).group(1)
            runs = metrics[(metrics["design"] == design)
                           & (metrics["source"] + np.where(metrics["finetune"], "+ft", "")
                              == cell)]
            assert value == expected_mean_sd(runs["auc"]), (design, cell)
            checked += 1
    assert checked == 9  # 3 designs x 3 cells
    comparison_rows = _table_rows(text, "## Comparisons between cells")[2:]
    expected = tables.comparisons(metrics)
    assert len(comparison_rows) == len(expected)
    for row, want in zip(comparison_rows, expected.itertuples()):
        assert row[1:3] == [want.a, want.b]
        assert row[3] == f"{100 * want.mean_diff:+.1f}" and row[4] == f"{want.t_stat:.2f}"


def test_roc_figure_plots_the_mean_of_each_runs_roc_curve(grid, tmp_path):
    from sklearn.metrics import roc_curve

    from pipeline.reporting.figures import plot_auc, plot_roc

    _, predictions, metrics = grid
    curves = plot_roc(predictions, tmp_path / "roc.png")
    part = predictions[(predictions["design"] == "melanoma_vs_benign")
                       & (predictions["source"] == "imagenet") & predictions["finetune"]]
    grid_points = np.linspace(0, 1, 201)
    tprs = []
    for _, run in part.groupby(["repeat", "test_half"]):
        fpr, tpr, _ = roc_curve(run["y_true"] == "melanoma", run["score"])
        tprs.append(np.interp(grid_points, fpr, tpr))
    drawn = curves[(curves["design"] == "melanoma_vs_benign") & (curves["cell"] == "imagenet+ft")]
    np.testing.assert_allclose(drawn["tpr"], np.mean(tprs, axis=0), atol=1e-12)
    np.testing.assert_allclose(drawn["tpr_sd"], np.std(tprs, axis=0), atol=1e-12)
    assert drawn["runs"].unique().tolist() == [10]
    # The 3-class panel is melanoma against the rest.
    three = curves[curves["design"] == "melanoma_vs_bcc_vs_benign"]
    assert set(three["cell"]) == {"none+ft", "imagenet", "imagenet+ft"}

    points = plot_auc(tables.summarize(metrics, ["auc"]), tmp_path / "auc.png")
    row = points[(points["design"] == "malignant_vs_benign")
                 & (points["cell"] == "imagenet+ft")].iloc[0]
    runs = metrics[(metrics["design"] == "malignant_vs_benign") & (metrics["source"] == "imagenet")
                   & metrics["finetune"]]["auc"]
    assert row["auc"] == pytest.approx(100 * runs.mean())
    assert row["low"] < row["auc"] < row["high"]
    assert row["paper"] == paper.PAPER_TABLE1.loc["malignant_vs_benign", "imagenet+ft"]


def test_referral_section_files_and_the_no_referral_point(grid, tmp_path):
    manifest, predictions, metrics = grid
    text = report.write_report(tmp_path, metrics, predictions, manifest, n_boot=20).read_text()
    assert "## Referral to a dermatologist" in text and "![Referral curves](referral.png)" in text
    saved = pd.read_csv(tmp_path / "referral.csv")
    # Only the 2-class designs; 3 cells x 2 policies x 21 rates each.
    assert set(saved["design"]) == {"malignant_vs_benign", "melanoma_vs_benign"}
    assert len(saved) == 2 * 3 * 2 * 21 and (saved["runs"] == 10).all()
    # With nothing referred, the decided cases are all cases: SE and SP are metrics.csv's.
    start = saved[(saved["policy"] == "uncertain") & (saved["rate"] == 0)]
    for row in start.itertuples():
        source, finetune = (row.cell[:-3], True) if row.cell.endswith("+ft") else (row.cell, False)
        runs = metrics[(metrics["design"] == row.design) & (metrics["source"] == source)
                       & (metrics["finetune"] == finetune)]
        assert row.sensitivity == pytest.approx(runs["sensitivity"].mean()), row
        assert row.specificity == pytest.approx(runs["specificity"].mean()), row
        assert row.missed == pytest.approx(1 - runs["sensitivity"].mean()), row
    # Everything referred: every positive reaches a doctor; the paper's policy never refers less.
    assert (saved.loc[saved["rate"] == 1, "to_doctor"] == 1).all()
    paper = saved[saved["policy"] == "paper"].set_index(["design", "cell", "rate"])
    uncertain = saved[saved["policy"] == "uncertain"].set_index(["design", "cell", "rate"])
    assert (paper["referred"] >= uncertain["referred"] - 1e-12).all()
    # The operating-point rows: each the first rate whose mean share missed is <= 5%.
    rows = _table_rows(text, "## Referral to a dermatologist")[2:]
    assert rows, "no operating point in the report"
    for cells in rows:
        design = next(d for d, spec in DESIGNS.items() if spec.title == cells[0])
        policy = "paper" if "paper" in cells[2] else "uncertain"
        curve = saved[(saved["design"] == design) & (saved["cell"] == cells[1])
                      & (saved["policy"] == policy)]
        first = curve.loc[curve["missed"] <= 0.05, "rate"].min()
        assert float(cells[3]) == pytest.approx(100 * first), cells


def test_holdout_report_leaves_out_menegolas_sections(tmp_path):
    """A hold-out experiment (Kim & Rocheteau) gets neither the 5x2cv effects and comparisons nor
    Menegola's Table 4, even with a difficulty column and 10 runs per cell; a 5x2 one keeps them."""
    manifest = make_manifest(n=60)
    predictions = make_predictions(manifest, [("none", True), ("imagenet", True)], repeats=5)
    metrics = metrics_from(predictions)
    kept = report.write_report(tmp_path / "5x2", metrics, predictions, manifest, n_boot=20,
                               paper_table=None).read_text()
    extra = ["## Table 1 (Kim & Rocheteau 2020)", "", "their table"]
    text = report.write_report(tmp_path / "holdout", metrics, predictions, manifest, n_boot=20,
                               paper_table=None, extra_sections=extra,
                               holdout=True).read_text()
    menegola = ("## The paper's effects, tested on these runs", "## Table 4: AUC (%) by diagnostic "
                "difficulty", "## Comparisons between cells", "5x2cv")
    assert all(h in kept for h in menegola)
    assert not any(h in text for h in menegola), [h for h in menegola if h in text]
    assert "## Table 1 (Kim & Rocheteau 2020)" in text and "## Cells not run" in text
