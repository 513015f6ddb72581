"""Stage ``demo-data``: write the synthetic demo datasets (``pipeline.demo.writer``).

``python -m pipeline demo-data --out demo_data`` writes a derm7pt-layout dermoscopy dataset and a
Kaggle-layout fundus dataset, seeded; it does nothing when the folder already holds data made with
the same parameters. ``--layout isic2020 --out demo_data_isic2020 [--cases 360]`` writes the ISIC
2020-layout demo with patient metadata (``pipeline.demo.isic2020``) instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.demo import isic2020
from pipeline.demo.writer import is_current, write_demo_data
from pipeline.errors import PipelineError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m pipeline demo-data``."""
    parser.add_argument("--out", type=Path, default=Path("demo_data"),
                        help="output folder (default: demo_data)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--skin-cases", type=int, default=520,
                        help="derm7pt cases, i.e. dermoscopic images (default: 520)")
    parser.add_argument("--fundus-images", type=int, default=None,
                        help="retinopathy images, an even number (default: 640)")
    parser.add_argument("--layout", choices=("derm7pt", "isic2020"), default="derm7pt",
                        help="derm7pt + retinopathy (default), or ISIC 2020 with metadata")
    parser.add_argument("--cases", type=int, default=None,
                        help="--layout isic2020: images (default: 360)")


def run(args: argparse.Namespace) -> int:
    """Write the demo datasets, or say that they are already there."""
    if args.layout == "isic2020":
        if args.skin_cases != 520 or args.fundus_images is not None:
            raise PipelineError("--skin-cases and --fundus-images size the derm7pt demo; with "
                                "--layout isic2020 they would do nothing. Use --cases.")
        cases = 360 if args.cases is None else args.cases
        if isic2020.is_current(args.out, seed=args.seed, cases=cases):
            print(f"{args.out} already holds the ISIC 2020 demo; nothing to do.")
            return 0
        print(f"wrote {isic2020.write_isic2020_demo(args.out, seed=args.seed, cases=cases)} "
              f"({cases} images)")
        return 0
    if args.cases is not None:
        raise PipelineError("--cases sizes the ISIC 2020 demo (--layout isic2020); for derm7pt "
                            "use --skin-cases.")
    options = {"seed": args.seed, "skin_cases": args.skin_cases,
               "fundus_images": 640 if args.fundus_images is None else args.fundus_images}
    if is_current(args.out, **options):
        print(f"{args.out} already holds demo data made with these parameters; nothing to do.")
        return 0
    paths = write_demo_data(args.out, **options)
    print(f"wrote {paths['derm7pt_meta']} ({args.skin_cases} cases) and "
          f"{paths['retinopathy_labels']} ({options['fundus_images']} images)")
    return 0
