"""Stage ``compare``: print the paired 5x2cv comparison of the experiment's cells.

``python -m pipeline compare --config EXP [--metric auc]`` reads ``metrics.csv`` and prints
Dietterich's 5x2cv t test and Alpaydin's F test for every pair of cells of every design.
"""

from __future__ import annotations

import argparse

from pipeline.errors import PipelineError
from pipeline.experiment.config import add_config_arguments, config_from_args
from pipeline.reporting.markdown import format_comparison_table
from pipeline.reporting.tables import METRIC_TITLES, comparisons
from pipeline.stages.report import read_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--metric", default="auc", help="metric compared (default auc)")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    metrics, _ = read_results(config)
    if args.metric not in metrics.columns:
        raise PipelineError(f"--metric {args.metric!r} is not a column of metrics.csv; choose one "
                            f"of {', '.join(METRIC_TITLES)}.")
    print(format_comparison_table(comparisons(metrics, metric=args.metric)))
    return 0
