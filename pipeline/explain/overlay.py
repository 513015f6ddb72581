"""Attribution maps drawn over their images: one PNG per image and method, and a grid figure.

Integrated gradients are summed over the colour channels and shown diverging (red raises the
score, blue lowers it) on a symmetric scale at the 99th percentile of their absolute values;
Grad-CAM (in [0, 1]) as a heat map. Drawn with matplotlib's object-oriented API (no pyplot state),
each PNG written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from pipeline.cache.files import atomic_path

METHOD_TITLES = {"ig": "integrated gradients", "gradcam": "Grad-CAM"}


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _draw(ax, image: np.ndarray, values: np.ndarray | None, method: str | None) -> None:
    ax.imshow(image)
    if values is not None:
        if method == "ig":
            total = values.sum(axis=-1) if values.ndim == 3 else values
            scale = float(np.percentile(np.abs(total), 99)) or 1.0
            ax.imshow(total, cmap="bwr", vmin=-scale, vmax=scale, alpha=0.6)
        else:
            ax.imshow(values, cmap="jet", vmin=0, vmax=1, alpha=0.45)
    ax.set_xticks([])
    ax.set_yticks([])


def write_overlay(path: str | os.PathLike, image: np.ndarray, values: np.ndarray, method: str,
                  title: str) -> Path:
    """The image beside the image with its attribution map over it.

    Args:
        path: the PNG to write.
        image: uint8 array of shape (h, w, 3), RGB.
        values: the attribution, shape (h, w, 3) (integrated gradients) or (h, w) (Grad-CAM).
        method: ``"ig"`` or ``"gradcam"``.
        title: the figure's title (image id, score).
    """
    fig = Figure(figsize=(6.0, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    _draw(left, image, None, None)
    _draw(right, image, values, method)
    right.set_title(METHOD_TITLES[method], fontsize="small")
    fig.suptitle(title, fontsize="small")
    return _save(fig, Path(path))


def write_grid(path: str | os.PathLike, images: Sequence[np.ndarray],
               maps: dict[str, Sequence[np.ndarray]], titles: Sequence[str], title: str) -> Path:
    """One row per image: the image, then one column per method with its map over the image.

    Args:
        path: the PNG to write.
        images: uint8 arrays of shape (h, w, 3).
        maps: method -> one attribution per image.
        titles: one title per row (image id, label, score).
        title: the figure's title.
    """
    columns = 1 + len(maps)
    fig = Figure(figsize=(2.3 * columns, 2.3 * len(images) + 0.6), layout="constrained")
    axes = fig.subplots(len(images), columns, squeeze=False)
    for i, (row, image) in enumerate(zip(axes, images)):
        _draw(row[0], image, None, None)
        row[0].set_ylabel(titles[i], fontsize="x-small")
        for ax, (method, values) in zip(row[1:], maps.items()):
            _draw(ax, image, values[i], method)
            if i == 0:
                ax.set_title(METHOD_TITLES[method], fontsize="small")
    fig.suptitle(title, fontsize="small")
    return _save(fig, Path(path))
