"""``python -m pipeline networks``: the registry, one row per network.

Name, family, input size, feature layer and width, preprocessing, the ImageNet weights file and
whether it is available here (and from where).
"""

from __future__ import annotations

import argparse

import pandas as pd

from pipeline.models.registry import describe_networks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``networks`` (none)."""


def run(args: argparse.Namespace) -> int:
    """Print the registry."""
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(describe_networks().to_string(index=False))
    return 0
