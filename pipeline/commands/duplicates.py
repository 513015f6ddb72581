"""``python -m pipeline duplicates --manifest manifest.csv``: candidate near-duplicate images.

Exact copies (the same bytes) are the data stage's business (``data.duplicates``). This report
finds the copies it cannot see: the same lesion resized, re-encoded or slightly recoloured, by the
Hamming distance of a 64-bit perceptual hash (``pipeline.data.duplicates.perceptual_hashes``).
It changes nothing: it lists candidate pairs, nearest first, in a CSV (``--out``) and, side by
side, in a picture (``--sheet``), for a person to judge; pairs with different labels are marked.
Then remove or group the real copies in the label file (``data.duplicates`` covers exact ones).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.cache.files import write_csv
from pipeline.data.duplicates import near_duplicate_pairs, perceptual_hashes
from pipeline.data.images import load_image
from pipeline.data.manifest import read_manifest
from pipeline.errors import PipelineError

SIDE = 64  # px: images are decoded this small for the hash (it reduces them to 32 x 32 anyway)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest.csv written by `pipeline data`")
    parser.add_argument("--max-distance", type=int, default=6,
                        help="largest Hamming distance of a candidate pair, of 64 bits (default 6;"
                             " 0: only images whose hashes agree)")
    parser.add_argument("--out", type=Path, help="write the pairs as CSV here")
    parser.add_argument("--sheet", type=Path,
                        help="write the nearest pairs side by side as a PNG here")
    parser.add_argument("--sheet-pairs", type=int, default=24,
                        help="pairs on the sheet (default 24)")
    parser.add_argument("--crop-black-frame", action="store_true",
                        help="crop black frames first, as the data stage does by default")


def find_pairs(manifest: pd.DataFrame, max_distance: int, crop: bool = False,
               progress: bool = True) -> pd.DataFrame:
    """Candidate pairs of ``manifest`` (``image``, ``abspath``, ``category``): ``image_a``,
    ``image_b``, ``distance``, their categories and paths, and ``labels_differ``."""
    if not 0 <= max_distance <= 64:
        raise PipelineError(f"--max-distance {max_distance}: a distance between 64-bit hashes is "
                            "0 to 64 (6, the default, finds resized and re-encoded copies).")
    images = np.stack([load_image(p, SIDE, crop_black_frame=crop) for p in
                       tqdm(manifest["abspath"], desc="hashing", unit="img",
                            disable=not progress)])
    pairs = near_duplicate_pairs(perceptual_hashes(images), max_distance)
    rows = []
    for i, j, distance in pairs:
        a, b = manifest.iloc[i], manifest.iloc[j]
        rows.append({"image_a": a["image"], "image_b": b["image"], "distance": distance,
                     "category_a": a["category"], "category_b": b["category"],
                     "labels_differ": a["category"] != b["category"],
                     "path_a": a["abspath"], "path_b": b["abspath"]})
    columns = ["image_a", "image_b", "distance", "category_a", "category_b", "labels_differ",
               "path_a", "path_b"]
    return pd.DataFrame(rows, columns=columns)


def write_sheet(pairs: pd.DataFrame, path: Path, n: int) -> None:
    """The first ``n`` pairs, one row each: the two images and their ids, labels, distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.cache.files import atomic_path

    shown = pairs.head(n)
    fig, axes = plt.subplots(len(shown), 2, figsize=(5, 2.4 * len(shown)), squeeze=False)
    for row, pair in zip(axes, shown.itertuples()):
        for ax, side in zip(row, "ab"):
            ax.imshow(load_image(getattr(pair, f"path_{side}"), 160))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{getattr(pair, f'image_{side}')} ({getattr(pair, f'category_{side}')})",
                         fontsize=7, color="red" if pair.labels_differ else "black")
        row[0].set_ylabel(f"distance {pair.distance}", fontsize=7)
    fig.suptitle("candidate near-duplicates, nearest first (red: labels differ)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.manifest)
    pairs = find_pairs(manifest, args.max_distance, args.crop_black_frame)
    differ = int(pairs["labels_differ"].sum())
    print(f"{len(pairs)} candidate pairs among {len(manifest)} images within {args.max_distance} "
          f"of 64 bits" + (f", {differ} with different labels" if differ else "")
          + (": judge them, then remove or group the real copies in the label file."
             if len(pairs) else "."))
    with pd.option_context("display.width", 140, "display.max_colwidth", 40):
        if len(pairs):
            print(pairs.drop(columns=["path_a", "path_b"]).head(20).to_string(index=False))
    if args.out:
        write_csv(args.out, pairs)
        print(f"wrote {args.out}")
    if args.sheet:
        if len(pairs):
            write_sheet(pairs, args.sheet, args.sheet_pairs)
            print(f"wrote {args.sheet}")
        else:
            print(f"no pair to show; {args.sheet} not written")
    return 0
