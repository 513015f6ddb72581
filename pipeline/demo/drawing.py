"""Drawing primitives of the synthetic demo images: smooth noise, coordinate grids, colour mixing
and dots, shared by the dermoscopy (``pipeline.demo.skin``) and fundus (``pipeline.demo.fundus``)
painters.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

_RGB = {"tan": (200, 152, 114), "light_brown": (168, 110, 72), "brown": (124, 76, 50),
        "dark_brown": (80, 48, 36), "black": (40, 32, 36), "blue_grey": (106, 116, 140),
        "blue_white": (142, 152, 180), "white": (236, 226, 222), "red": (186, 92, 92),
        "pink": (224, 150, 146), "steel_blue": (70, 92, 134), "vessel": (184, 36, 48)}


C = {name: np.array(rgb, np.float32) for name, rgb in _RGB.items()}


def noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth random field of shape ``shape``, unit variance, with blobs about ``cell`` px wide."""
    h, w = shape
    small = rng.standard_normal((h // cell + 4, w // cell + 4)).astype(np.float32)
    # Interpolate only the (h, w) window, one cell in from the edge (bicubic needs neighbours).
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC,
                                                   box=(1, 1, 1 + w / cell, 1 + h / cell)))
    sample = big[::4, ::4]   # the statistics of a subsample are plenty and 16x cheaper
    return (big - sample.mean()) * (1 / (sample.std() + 1e-6))


@functools.lru_cache(maxsize=4)
def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 row and column index grids of shape (h, w)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def mix(img: np.ndarray, colour, weight: np.ndarray) -> None:
    """Blend ``colour`` (RGB vector or (h, w, 3) array) into ``img`` in place with ``weight``."""
    img += (np.asarray(colour, np.float32) - img) * np.clip(weight, 0, 1)[..., None]


def rgba(colour, alpha: int = 235) -> tuple[int, int, int, int]:
    return (*(int(v) for v in np.clip(colour, 0, 255)), alpha)


def dot(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill) -> None:
    draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
