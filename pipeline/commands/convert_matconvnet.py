"""``python -m pipeline convert-matconvnet --mat imagenet-vgg-m.mat --out FILE.npz``.

Converts MatConvNet's VGG-M into the weights file ``network.imagenet_weights`` names
(``pipeline.models.matconvnet.convert``).
"""

from __future__ import annotations

import argparse

from pipeline.models.matconvnet import convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``convert-matconvnet``."""
    parser.add_argument("--mat", required=True, help="MatConvNet imagenet-vgg-m.mat")
    parser.add_argument("--out", required=True, help="the .npz to write")
    parser.add_argument("--width", type=float, default=1.0,
                        help="width multiplier the file was made at (default 1.0)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="input side in px (default: the file's imageSize, else 224)")


def run(args: argparse.Namespace) -> int:
    """Convert the file and print what was written."""
    meta = convert(args.mat, args.out, width=args.width, input_size=args.input_size)
    print(f"wrote {args.out}: VGG-M width {meta['width']}, {meta['input_size']} px input, "
          f"{meta['classes']} classes, average image {meta['average_image_shape']}")
    return 0
