"""``python -m pipeline images``: decode a manifest's images into the image cache.

``--manifest manifest.csv --size 224 [--height H] --cache features_cache/images
[--crop-black-frame] [--skip-bad-images] [--full-decode] [--jobs N]``: builds (or finds) the
content-keyed entry (``pipeline.data.image_cache``) and says what was decoded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.data.image_cache import build_image_cache
from pipeline.data.images import MAX_PIXELS
from pipeline.data.manifest import read_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m pipeline images``."""
    parser.add_argument("--manifest", required=True, type=Path, help="manifest CSV")
    parser.add_argument("--size", type=int, default=224,
                        help="width of the cached images in pixels (and height unless --height)")
    parser.add_argument("--height", type=int, default=None, help="height (default: --size)")
    parser.add_argument("--cache", type=Path, default=Path("features_cache/images"),
                        help="cache root folder (default: features_cache/images)")
    parser.add_argument("--crop-black-frame", action="store_true",
                        help="cut black rectangular frames before resizing")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out unreadable images, listing them in skipped.csv")
    parser.add_argument("--full-decode", action="store_true",
                        help="decode JPEGs at full scale (no reduced-scale decoding)")
    parser.add_argument("--jobs", type=int, default=-1, help="decoding processes (-1: all cores)")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="refuse images with more pixels, as possible decompression bombs "
                             f"(default {MAX_PIXELS:,})")


def run(args: argparse.Namespace) -> int:
    """Build (or find) the image cache entry of a manifest and print what was done."""
    size = (args.size, args.height if args.height is not None else args.size)
    result = build_image_cache(read_manifest(args.manifest), args.cache, size,
                               crop_black_frame=args.crop_black_frame,
                               reduced_decode=not args.full_decode, n_jobs=args.jobs,
                               skip_bad_images=args.skip_bad_images, max_pixels=args.max_pixels)
    print(f"entry: {result.path}")
    print(f"images: {len(result)} of size {size[0]}x{size[1]} (width x height), "
          f"{len(result.skipped)} skipped")
    if result.n_decoded:
        print(f"decoded: {result.n_decoded} in {result.decode_seconds:.1f} s "
              f"({result.n_decoded / max(result.decode_seconds, 1e-9):.1f} images/s)")
    else:
        print("decoded: 0 (the entry was already complete)")
    return 0
