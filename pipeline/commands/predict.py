"""Command ``predict``: apply an exported model folder to image files.

``python -m pipeline predict --model DIR --image FILE... [--out predictions.csv] [--explain
[--explain-dir DIR] [--steps S]] [--age A --sex S --site X | --metadata CSV]`` prints, per image,
the decision score (``score_<class>`` per class for the 3-class design) and the predicted class,
using only the model folder (``pipeline.serving``): no experiment folder or config. ``--out``
writes the same as a CSV table (``image, score | score_<class>..., predicted``); ``--explain``
writes an integrated-gradients PNG per image of its predicted class's score
(``<explain-dir>/<file stem>_ig.png``, default the folder of ``--out``, else the current one).
The metadata options are refused for a model trained without metadata (every model of this
protocol).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.cache.files import write_csv
from pipeline.errors import PipelineError
from pipeline.explain.attributions import DEFAULT_STEPS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model folder written by `export`")
    parser.add_argument("--image", required=True, nargs="+", metavar="FILE",
                        help="image files (JPEG, PNG, TIFF)")
    parser.add_argument("--out", default=None, help="write the scores to this CSV file")
    parser.add_argument("--explain", action="store_true",
                        help="write an integrated-gradients PNG per image")
    parser.add_argument("--explain-dir", default=None,
                        help="folder of the PNGs (default: that of --out, else the current one)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"integrated gradients' trapezoid intervals (default {DEFAULT_STEPS})")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--age", default=None, help="patient age (models with metadata only)")
    parser.add_argument("--sex", default=None, help="patient sex (models with metadata only)")
    parser.add_argument("--site", default=None,
                        help="anatomical site (models with metadata only)")
    parser.add_argument("--metadata", default=None, metavar="CSV",
                        help="per-image metadata table (models with metadata only)")


def run(args: argparse.Namespace) -> int:
    from pipeline.models.device import select_device
    from pipeline.serving.folder import read_model_folder
    from pipeline.serving.predict import check_metadata, explain_files, predict_files

    model = read_model_folder(args.model)
    check_metadata(model, {"--age": args.age, "--sex": args.sex, "--site": args.site,
                           "--metadata": args.metadata})
    if args.batch_size < 1:
        raise PipelineError(f"--batch-size must be >= 1; got {args.batch_size}.")
    select_device()
    network = model.load_network()
    table, pixels = predict_files(model, args.image, args.batch_size, network)
    score_columns = [c for c in table.columns if c.startswith("score")]
    for row in table.to_dict("records"):
        scores = "  ".join(f"{c} {row[c]:+.6f}" for c in score_columns)
        print(f"{row['image']}\t{scores}\tpredicted {row['predicted']}")
    if args.out:
        write_csv(args.out, table)
        print(f"predict: {len(table)} images -> {args.out}", file=sys.stderr)
    if args.explain:
        folder = Path(args.explain_dir or (Path(args.out).parent if args.out else "."))
        written = explain_files(model, network, table, pixels, folder, args.steps)
        print(f"predict: {len(written)} attribution maps -> {folder}", file=sys.stderr)
    return 0
