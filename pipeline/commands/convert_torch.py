"""``python -m pipeline convert-torch --weights FILE.pth --network NAME --out FILE.weights.h5``.

Reads a PyTorch state dict without importing PyTorch (both ``torch.save`` formats; a restricted
unpickler refuses anything but tensors, storages and ordered dicts, so a ``.pth`` cannot run code),
maps its names and layouts onto the registry network (``pipeline.models.torch_backbones``) and
writes the Keras weights file that ``network.imagenet_weights`` can name. A missing or unexpected
key, or a shape mismatch, is an error that lists them.
"""

from __future__ import annotations

import argparse

from pipeline.models.torch_backbones import TORCH_LAYOUTS, convert_torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="the PyTorch state dict (.pth)")
    parser.add_argument("--network", required=True, choices=sorted(TORCH_LAYOUTS),
                        metavar="NAME", help=f"registry network: {', '.join(TORCH_LAYOUTS)}")
    parser.add_argument("--out", required=True, help="Keras weights file to write (.weights.h5)")


def run(args: argparse.Namespace) -> int:
    done = convert_torch(args.network, args.weights, args.out)
    print(f"wrote {done['out']}: {done['arrays']} arrays of {args.network} from {args.weights} "
          f"(SHA-256 {done['sha256']}); set `network.imagenet_weights = \"{done['out']}\"`")
    return 0
