"""``python -m pipeline imagenet-top5 --network NAME [--weights FILE] --image FILE...``.

Runs a network's 1000-class ImageNet head on photographs through the pipeline's own decoding
(``pipeline.data.images.load_image``: EXIF orientation, resizing to the network's input with the
paper's aspect distortion) and preprocessing (the registry's, with the mean of the weights), and
prints rank, class index, class name and probability. It is how a user checks converted weights:
a wrong channel order or mean shows as implausible classes.
"""

from __future__ import annotations

import argparse

import numpy as np

from pipeline.data.images import load_image
from pipeline.errors import PipelineError
from pipeline.models.imagenet import top_k
from pipeline.models.registry import NETWORKS, get_network


def imagenet_top5(network: str, images: list[str], weights: str | None = None,
                  input_size: int | None = None, k: int = 5) -> list[list[tuple]]:
    """The top-``k`` ImageNet classes of each image.

    Args:
        network: registry name; its ImageNet weights must include the 1000-class head.
        images: image files.
        weights: a local weights file (else the one the registry finds).
        input_size: the input side (default the network's).
        k: how many classes per image.

    Returns:
        Per image, ``(rank, class index, class name, probability)`` rows.
    """
    from pipeline.models.build import build_network
    from pipeline.models.preprocessing import preprocess
    from pipeline.models.weights import imagenet_mean

    spec = get_network(network)
    if spec.imagenet is None or not spec.imagenet.has_head:
        with_head = [n for n, s in NETWORKS.items() if s.imagenet and s.imagenet.has_head]
        raise PipelineError(f"{network}'s ImageNet weights include no 1000-class head to check "
                            f"them with; networks whose weights do: {', '.join(with_head)}.")
    model = build_network(network, weights="imagenet", weights_path=weights,
                          input_size=input_size, classes=1000)
    size = int(input_size or spec.input_size)
    pixels = np.stack([load_image(path, size) for path in images])
    x = preprocess(spec, pixels, imagenet_mean(spec, weights))
    probabilities = model.predict(x, verbose=0)
    return [top_k(p, k) for p in probabilities]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--network", required=True, help="registry network, e.g. efficientnet-lite0")
    parser.add_argument("--weights", help="local ImageNet weights file (default: as the registry "
                                          "finds them)")
    parser.add_argument("--image", required=True, nargs="+", help="photographs to classify")
    parser.add_argument("--input-size", type=int, help="input side (default: the network's)")


def run(args: argparse.Namespace) -> int:
    for path, rows in zip(args.image, imagenet_top5(args.network, args.image, args.weights,
                                                    args.input_size)):
        print(path)
        for rank, index, name, probability in rows:
            print(f"  {rank}  {index:4d}  {name:<30s} {probability:.4f}")
    return 0
