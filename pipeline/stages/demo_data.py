"""Stage ``demo-data``: write the synthetic demo datasets (``pipeline.demo.writer``).

``python -m pipeline demo-data --out demo_data`` writes a derm7pt-layout dermoscopy dataset and a
Kaggle-layout fundus dataset, seeded; it does nothing when the folder already holds data made with
the same parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.demo.writer import is_current, write_demo_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m pipeline demo-data``."""
    parser.add_argument("--out", type=Path, default=Path("demo_data"),
                        help="output folder (default: demo_data)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--skin-cases", type=int, default=520,
                        help="derm7pt cases, i.e. dermoscopic images (default: 520)")
    parser.add_argument("--fundus-images", type=int, default=640,
                        help="retinopathy images, an even number (default: 640)")


def run(args: argparse.Namespace) -> int:
    """Write the demo datasets, or say that they are already there."""
    options = {"seed": args.seed, "skin_cases": args.skin_cases,
               "fundus_images": args.fundus_images}
    if is_current(args.out, **options):
        print(f"{args.out} already holds demo data made with these parameters; nothing to do.")
        return 0
    paths = write_demo_data(args.out, **options)
    print(f"wrote {paths['derm7pt_meta']} ({args.skin_cases} cases) and "
          f"{paths['retinopathy_labels']} ({args.fundus_images} images)")
    return 0
