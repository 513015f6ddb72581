"""``python -m pipeline designs --manifest manifest.csv``: class counts per labelling design."""

from __future__ import annotations

import argparse

import pandas as pd

from pipeline.data.designs import class_counts
from pipeline.data.manifest import read_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest.csv written by `pipeline data`")


def run(args: argparse.Namespace) -> int:
    table = class_counts(read_manifest(args.manifest))
    with pd.option_context("display.width", 120):
        print(table.replace(0, "-").to_string())
    return 0
