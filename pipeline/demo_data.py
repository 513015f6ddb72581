"""Synthetic demo datasets in the published layouts of derm7pt and Kaggle Diabetic Retinopathy.

The Atlas and Kaggle images cannot be shipped, so ``demo-data`` draws look-alikes that every stage
can run on. ``python -m pipeline demo-data --out demo_data [--seed 0] [--skin-cases 240]
[--fundus-images 300]`` writes, under the output folder:

- ``derm7pt/meta/meta.csv`` (exactly the derm7pt columns, one row per case, sorted by diagnosis as
  the release is), ``derm7pt/meta/{train,valid,test}_indexes.csv`` (the release's split files:
  0-based row positions, lesions kept whole) and ``derm7pt/images/<FOLDER>/<Name>NNN.jpg``
  (384x256; ``clinic`` and ``derm`` columns are paths relative to ``images/``);
- ``retinopathy/trainLabels.csv`` (``image,level``) and ``retinopathy/train/<patient>_left.jpeg``,
  ``<patient>_right.jpeg`` (256x256, both eyes of every patient);
- ``manifest.json`` (seed and counts), written last: an output folder with the same manifest is
  left as it is.

Mix: ~25% melanoma, ~12% basal cell carcinoma; difficulty low/medium/high 38/36/26% (Menegola et
al., Table 4); ~15% of rows are a second view of a lesion and share its ``case_id`` (``case_id`` is
empty for single-image lesions, as in the release); ~5% acral lesions; ~15% of pictures inside a
black frame; retinopathy grades 73/7/15/2.5/2.5% as in Kaggle. Classes differ in what
dermatologists look at (asymmetry, border, colours, network, dots, streaks, veil, vessels); the
difficulty sets how far melanomas drift towards nevi (and nevi towards melanomas). Everything is
seeded: the same seed gives byte-identical files with the same Pillow/libjpeg build.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from pipeline.cache import MANIFEST, read_json, write_csv, write_json
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

SKIN_SIZE = (384, 256)   # (width, height): the Atlas's usual 768x512, halved for speed
FUNDUS_SIZE = 256
FORMAT_VERSION = 1
JPEG = {"format": "JPEG", "quality": 90, "subsampling": 2, "optimize": False}

DERM7PT_COLUMNS = (
    "case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks", "pigmentation",
    "regression_structures", "dots_and_globules", "blue_whitish_veil", "vascular_structures",
    "level_of_diagnostic_difficulty", "elevation", "location", "sex", "management", "clinic",
    "derm", "case_id", "notes")
CRITERIA = DERM7PT_COLUMNS[3:10]
# diagnosis -> (share of lesions in %, how it is drawn)
DIAGNOSES = {
    "melanoma (in situ)": (8, "melanocytic"), "melanoma (less than 0.76 mm)": (10, "melanocytic"),
    "melanoma (0.76 to 1.5 mm)": (7, "melanocytic"), "basal cell carcinoma": (12, "bcc"),
    "clark nevus": (25, "melanocytic"), "reed or spitz nevus": (8, "melanocytic"),
    "dermal nevus": (5, "melanocytic"), "blue nevus": (4, "blue"),
    "seborrheic keratosis": (6, "sk"), "vascular lesion": (4, "vascular"),
    "lentigo": (4, "melanocytic"), "dermatofibroma": (4, "df"), "miscellaneous": (3, "misc")}
DIFFICULTIES = {"low": 38.1, "medium": 36.3, "high": 25.6}   # share in %
# How clearly a melanoma shows its malignant features at each difficulty (1 = textbook).
STRENGTH = {"low": 1.0, "medium": 0.55, "high": 0.2}
GRADES = (73.0, 7.0, 15.0, 2.5, 2.5)   # Kaggle: 25,810 / 2,443 / 5,292 / 873 / 708 images
SHARED_SHARE, ACRAL_SHARE, FRAME_SHARE = 0.15, 0.05, 0.15
LOCATIONS = {"back": 30, "lower limbs": 20, "upper limbs": 11, "abdomen": 10, "chest": 10,
             "head neck": 11, "buttocks": 5, "genital areas": 3}
SPLITS = {"train": 413, "valid": 203, "test": 395}   # derm7pt's split sizes, used as shares

_RGB = {"tan": (200, 152, 114), "light_brown": (168, 110, 72), "brown": (124, 76, 50),
        "dark_brown": (80, 48, 36), "black": (40, 32, 36), "blue_grey": (106, 116, 140),
        "blue_white": (142, 152, 180), "white": (236, 226, 222), "red": (186, 92, 92),
        "pink": (224, 150, 146), "steel_blue": (70, 92, 134), "vessel": (184, 36, 48)}
C = {name: np.array(rgb, np.float32) for name, rgb in _RGB.items()}


# ----------------------------------------------------------------------------- shared drawing

def _noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth random field of shape ``shape``, unit variance, with blobs about ``cell`` px wide."""
    h, w = shape
    small = rng.standard_normal((h // cell + 4, w // cell + 4)).astype(np.float32)
    # Interpolate only the (h, w) window, one cell in from the edge (bicubic needs neighbours).
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC,
                                                   box=(1, 1, 1 + w / cell, 1 + h / cell)))
    sample = big[::4, ::4]   # the statistics of a subsample are plenty and 16x cheaper
    return (big - sample.mean()) * (1 / (sample.std() + 1e-6))


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 row and column index grids of shape (h, w)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _mix(img: np.ndarray, colour, weight: np.ndarray) -> None:
    """Blend ``colour`` (RGB vector or (h, w, 3) array) into ``img`` in place with ``weight``."""
    img += (np.asarray(colour, np.float32) - img) * np.clip(weight, 0, 1)[..., None]


def _rgba(colour, alpha: int = 235) -> tuple[int, int, int, int]:
    return (*(int(v) for v in np.clip(colour, 0, 255)), alpha)


def _dot(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill) -> None:
    draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


class _Lesion:
    """Pixel grids of one canvas and the lesion's outline on it, in polar form.

    The outline radius is a Fourier series in the angle: low orders (1-3) make the shape
    asymmetric, high orders (4-24) make the border irregular and notched.
    """

    def __init__(self, rng, shape, radius, asym, rough, ecc):
        h, w = shape
        self.shape, self.radius = shape, radius
        self.cx, self.cy = w / 2 + rng.normal(0, 0.03 * w), h / 2 + rng.normal(0, 0.03 * h)
        yy, xx = _grid(h, w)
        self.dx, self.dy = xx - self.cx, yy - self.cy
        k = np.arange(1, 25)
        amp = rng.standard_normal(24) * np.where(k <= 3, asym * 0.16 / k, rough * 0.07 / k ** 0.5)
        amp[1] += ecc
        t = np.linspace(-np.pi, np.pi, 720, endpoint=False)
        r = 1 + (amp[:, None] * np.cos(k[:, None] * t + rng.uniform(0, 6.3, (24, 1)))).sum(0)
        self.r = radius * np.clip(r, 0.5, None).astype(np.float32)
        self.idx = ((np.arctan2(self.dy, self.dx) + np.pi) * (720 / (2 * np.pi))).astype(int) % 720
        self.rho = np.hypot(self.dx, self.dy) / self.r[self.idx]

    def xy(self, angle, rho):
        """Canvas coordinates of the points at ``angle`` (radians) and relative radius ``rho``."""
        angle = np.asarray(angle, float)
        r = self.r[((angle + np.pi) % (2 * np.pi) * (720 / (2 * np.pi))).astype(int) % 720] * rho
        return self.cx + r * np.cos(angle), self.cy + r * np.sin(angle)

    def blob(self, rng, cell, bias=1.0, thr=0.8):
        """Weight (0..1) of an irregular patch inside the lesion, pushed to one side by ``bias``."""
        a = rng.uniform(0, 2 * np.pi)
        side = (self.dx * math.cos(a) + self.dy * math.sin(a)) / self.radius
        inside = np.clip((0.95 - self.rho) / 0.15, 0, 1)
        return np.clip((_noise(rng, self.shape, cell) + bias * side - thr) / 0.8, 0, 1) * inside

    def edge(self, rng, sharpness_spread):
        """Alpha of the lesion body: 1 inside, 0 outside, a border whose width varies with angle."""
        t = np.linspace(-np.pi, np.pi, 720, endpoint=False)
        u = sum(np.cos(k * t + rng.uniform(0, 6.3)) for k in range(1, 5)) / 4 * 0.5 + 0.5
        width = 0.12 * (1 - sharpness_spread) + sharpness_spread * (0.02 + 0.4 * u)
        return np.clip((1 - self.rho) / width[self.idx] + 0.5, 0, 1)

    def mesh(self, rng, period, warp, width):
        """Pigment network: a warped grid of dark lines (0..1), holes between them."""
        u = self.dx + warp * _noise(rng, self.shape, 12)
        v = self.dy + warp * _noise(rng, self.shape, 12)
        a = rng.uniform(0, np.pi)
        co, si = math.cos(a), math.sin(a)
        m = np.minimum(np.abs(np.sin(np.pi * (u * co + v * si) / period)),
                       np.abs(np.sin(np.pi * (v * co - u * si) / period)))
        return np.clip(1 - m / width, 0, 1)


# ----------------------------------------------------------------------------- dermoscopy

def lesion_plan(rng: np.random.Generator, diagnosis: str, difficulty: str) -> dict:
    """Sample the seven-point criteria and atypia of one lesion.

    Args:
        rng: random generator.
        diagnosis: a derm7pt diagnosis string (a key of ``DIAGNOSES``).
        difficulty: ``low``, ``medium`` or ``high``.

    Returns:
        dict with ``diagnosis``, ``difficulty``, ``kind`` (how it is drawn), ``x`` (atypia in
        0..1: melanomas lose it as difficulty rises, benign lesions gain some) and ``criteria``
        (the seven derm7pt criteria columns -> value).
    """
    if diagnosis not in DIAGNOSES or difficulty not in DIFFICULTIES:
        raise PipelineError(f"lesion: diagnosis must be one of {sorted(DIAGNOSES)} and "
                            f"difficulty one of {list(DIFFICULTIES)}; got {diagnosis!r}, "
                            f"{difficulty!r}. Use the derm7pt strings.")
    kind, s = DIAGNOSES[diagnosis][1], STRENGTH[difficulty]
    if kind == "misc" and rng.random() < 0.5:
        kind = "melanocytic"   # half of the miscellanea are pigmented (melanosis, combined...)
    depth = {"melanoma (in situ)": 0.8, "melanoma (0.76 to 1.5 mm)": 1.15}.get(diagnosis, 1.0)
    if diagnosis.startswith("melanoma"):
        x = float(np.clip(s * depth * rng.uniform(0.8, 1.15), 0.05, 1.0))
    else:
        x = float((1 - s) * rng.uniform(0.2, 0.7))
    c = dict.fromkeys(CRITERIA, "absent")

    def yes(p):
        return rng.random() < p

    def pick(*values):
        return str(rng.choice(values))

    if kind == "melanocytic":
        spitz, dermal = diagnosis == "reed or spitz nevus", diagnosis == "dermal nevus"
        c["pigment_network"] = ("atypical" if yes(0.1 + 0.7 * x) else
                                "typical" if yes(0.15 if spitz or dermal else 0.8) else "absent")
        c["streaks"] = "irregular" if yes(0.55 * x) else "regular" if spitz else "absent"
        c["pigmentation"] = (pick("diffuse irregular", "localized irregular") if yes(0.1 + 0.7 * x)
                             else pick("diffuse regular", "localized regular") if yes(0.6)
                             else "absent")
        c["dots_and_globules"] = ("irregular" if yes(0.1 + 0.6 * x) else
                                  "regular" if yes(0.9 if dermal else 0.4) else "absent")
        c["regression_structures"] = (pick("blue areas", "white areas", "combinations")
                                      if yes(0.65 * x) else "absent")
        c["blue_whitish_veil"] = "present" if yes(0.6 * x * depth) else "absent"
        c["vascular_structures"] = (pick("dotted", "linear irregular") if yes(0.35 * x)
                                    else "comma" if dermal and yes(0.6) else "absent")
    elif kind == "bcc":
        c["vascular_structures"] = "arborizing" if yes(0.85) else "absent"
        # blue-grey ovoid nests (drawn with the pigmentation); every BCC shows vessels or nests
        c["pigmentation"] = ("localized irregular" if yes(0.45) or c["vascular_structures"] ==
                             "absent" else "absent")
        c["dots_and_globules"] = "irregular" if yes(0.3) else "absent"
        c["regression_structures"] = "blue areas" if yes(0.2) else "absent"
    elif kind == "sk":
        c["pigmentation"] = pick("diffuse regular", "diffuse irregular")
        c["dots_and_globules"] = "irregular" if yes(0.3) else "absent"
        c["vascular_structures"] = "hairpin" if yes(0.3) else "absent"
    elif kind == "blue":
        c["pigmentation"] = "diffuse regular"
        c["blue_whitish_veil"] = "present" if yes(0.5) else "absent"
        c["regression_structures"] = "blue areas" if yes(0.2) else "absent"
    elif kind == "df":
        c["pigment_network"] = "typical" if yes(0.8) else "absent"
        c["regression_structures"] = "white areas" if yes(0.4) else "absent"
    elif kind == "vascular":
        c["vascular_structures"] = "dotted" if yes(0.1) else "absent"
    else:   # miscellaneous: a pinkish inflammatory macule
        c["vascular_structures"] = "dotted"
    return {"diagnosis": diagnosis, "difficulty": difficulty, "kind": kind, "x": x, "criteria": c}


def seven_point_score(criteria: dict) -> int:
    """The seven-point checklist score: 2 per major criterion, 1 per minor one."""
    major = (criteria["pigment_network"] == "atypical") + (
        criteria["blue_whitish_veil"] == "present") + (
        criteria["vascular_structures"] in ("dotted", "linear irregular"))
    minor = (criteria["streaks"] == "irregular") + ("irregular" in criteria["pigmentation"]) + (
        criteria["dots_and_globules"] == "irregular") + (
        criteria["regression_structures"] != "absent")
    return int(2 * major + minor)


def _skin(rng, shape, acral):
    """Skin as seen through a dermoscope: pinkish beige, mottled, furrows; ridges if acral."""
    h, w = shape
    base = (np.array([226, 172, 150]) * rng.uniform(0.86, 1.04) + rng.normal(0, 5, 3)).astype(
        np.float32)
    shade = 1 + 0.05 * _noise(rng, shape, 64) + 0.02 * _noise(rng, shape, 10)
    shade += rng.standard_normal(shape, dtype=np.float32) * 0.012   # sensor grain
    red = 1 - np.clip(_noise(rng, shape, 40), 0, None) * 0.035
    yy, xx = _grid(h, w)
    a = rng.uniform(0, np.pi)
    co, si = math.cos(a), math.sin(a)
    v = xx * co + yy * si + 8 * _noise(rng, shape, 40)
    if acral:   # dermatoglyphics: parallel ridges and furrows
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * v / rng.uniform(8, 10))
        shade *= 1 - 0.08 * stripes
    else:       # criss-cross skin lines
        stripes = None
        u = yy * co - xx * si + 8 * _noise(rng, shape, 40)
        lines = np.maximum(np.abs(np.sin(np.pi * v / rng.uniform(18, 30))),
                           np.abs(np.sin(np.pi * u / rng.uniform(25, 40)))) > 0.99
        shade *= 1 - 0.03 * lines
    img = base * shade[..., None]
    img[..., 1:] *= red[..., None]   # erythema: less green and blue
    return img, stripes


def _vessel_tree(draw, rng, x, y, heading, length, width, depth, colour):
    """Arborizing vessel: a wiggly trunk that forks into thinner and thinner branches."""
    pts = [(x, y)]
    for _ in range(6):
        heading += rng.normal(0, 0.25)
        x, y = x + length / 6 * math.cos(heading), y + length / 6 * math.sin(heading)
        pts.append((x, y))
    draw.line(pts, fill=colour, width=max(1, int(round(width))), joint="curve")
    if depth > 0:
        for turn in (-1, 1):
            _vessel_tree(draw, rng, x, y, heading + turn * rng.uniform(0.3, 0.8),
                         length * rng.uniform(0.5, 0.75), width * 0.7, depth - 1, colour)


def _vessels(draw, rng, les, kind, x):
    """Vascular structures of the derm7pt vocabulary, drawn over the lesion."""
    r, red = les.radius, _rgba(C["vessel"] * rng.uniform(0.85, 1.05), 225)
    if kind == "arborizing":
        for _ in range(rng.integers(2, 5)):
            a = rng.uniform(0, 2 * np.pi)
            x0, y0 = les.xy(a, rng.uniform(0.6, 0.95))
            _vessel_tree(draw, rng, x0, y0, a + np.pi + rng.normal(0, 0.6), 0.35 * r,
                         rng.uniform(2.5, 3.5), 3, red)
        return
    n = {"dotted": 30 + int(40 * x), "within regression": 30, "linear irregular": 6,
         "comma": 10, "hairpin": 8}.get(kind, 0)
    for _ in range(n):
        a, rho = rng.uniform(0, 2 * np.pi), math.sqrt(rng.uniform(0.01, 0.7))
        px, py = les.xy(a, rho)
        if kind in ("dotted", "within regression"):
            _dot(draw, px, py, rng.uniform(0.8, 1.4), red)
        else:
            steps, length = {"linear irregular": (8, 5), "comma": (3, 3), "hairpin": (4, 2.5)}[kind]
            h, pts = rng.uniform(0, 2 * np.pi), [(px, py)]
            for _ in range(steps):
                h += rng.normal(0, 0.7 if kind == "linear irregular" else 0.35)
                pts.append((pts[-1][0] + length * math.cos(h), pts[-1][1] + length * math.sin(h)))
            if kind == "hairpin":   # a loop with a whitish halo (keratinising lesions)
                _dot(draw, px, py, 5, _rgba(C["white"], 120))
                pts += [(p[0] + 2.5 * math.cos(h + 1.6), p[1] + 2.5 * math.sin(h + 1.6))
                        for p in reversed(pts)]
            draw.line(pts, fill=red, width=1 if kind != "linear irregular" else 2)


def _paint_melanocytic(rng, img, les, plan, stripes):
    """Nevi, lentigines and melanomas: pigment, network, dots, streaks, veil, regression."""
    d, x, c = plan["diagnosis"], plan["x"], plan["criteria"]
    spitz, dermal, lentigo = (d == "reed or spitz nevus", d == "dermal nevus", d == "lentigo")
    light = C["tan"] if dermal or lentigo else C["light_brown"] * rng.uniform(0.85, 1.1)
    if dermal:
        light = light * 0.5 + C["pink"] * 0.5
    dark = C["black" if spitz else "brown"] * rng.uniform(0.8, 1.1)
    if "regular" in c["pigmentation"] and "irregular" not in c["pigmentation"] or spitz:
        dark = dark * 0.75   # two browns, darker centre, symmetric
    profile = np.clip((1.0 - les.rho) / 0.85, 0, 1) ** rng.uniform(0.6, 1.6)
    col = light + (dark - light) * profile[..., None] * (0.3 if lentigo else 0.85)
    col *= (1 + 0.04 * _noise(rng, les.shape, 6))[..., None]
    if "irregular" in c["pigmentation"]:
        for _ in range(1 if c["pigmentation"].startswith("localized") else 3):
            _mix(col, C[rng.choice(["dark_brown", "black"])], 0.75 * les.blob(rng, 24))
    for name in rng.choice(["black", "blue_grey", "red", "light_brown", "dark_brown"],
                           size=rng.binomial(3, x), replace=False):
        _mix(col, C[name], (0.35 + 0.4 * x) * les.blob(rng, 28, thr=1.0))
    if c["pigment_network"] == "typical":
        lines = les.mesh(rng, rng.uniform(7, 10), 2.0, 0.3)
        col *= (1 - rng.uniform(0.3, 0.45) * lines * np.clip((1 - les.rho) / 0.45, 0, 1))[
            ..., None]
    elif c["pigment_network"] == "atypical":
        lines = les.mesh(rng, rng.uniform(9, 13), 6.0, 0.3 + 0.2 * (_noise(rng, les.shape, 20)
                                                                   > 0))
        broken = np.clip(_noise(rng, les.shape, 16) + 0.6, 0, 1) * (les.rho < 0.98)
        col *= (1 - (0.35 + 0.25 * x) * lines * broken)[..., None]
    if c["blue_whitish_veil"] == "present":
        veil = C["blue_white"] * (1 + 0.04 * _noise(rng, les.shape, 5))[..., None]
        _mix(col, veil, (0.45 + 0.3 * x) * les.blob(rng, 40, bias=1.5, thr=0.4))
    regression = np.zeros(les.shape, np.float32)
    if c["regression_structures"] != "absent":
        regression = les.blob(rng, 20, thr=0.6)
        if c["regression_structures"] != "blue areas":
            _mix(col, C["white"], 0.85 * regression)
        if c["regression_structures"] != "white areas":
            _mix(col, C["blue_grey"], 0.45 * regression)
    asym_edge = x if d.startswith("melanoma") or x > 0.2 else 0.0
    alpha = les.edge(rng, asym_edge) * (0.6 if lentigo else rng.uniform(0.85, 0.97))
    if stripes is not None:   # acral: pigment in the furrows (nevi) or on the ridges (melanoma)
        ridge = x > 0.5
        alpha *= 0.35 + 0.65 * np.clip(((stripes if ridge else 1 - stripes) - 0.4) * 4, 0, 1)
    _mix(img, col, alpha)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im, "RGBA")
    r = les.radius
    if c["dots_and_globules"] == "regular" or dermal:
        n = int(rng.integers(30, 50)) if dermal else int(rng.integers(8, 20))
        a0 = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)
        rho = rng.uniform(0.1, 0.8, n) if dermal else np.full(n, rng.uniform(0.55, 0.8))
        size = rng.uniform(0.04, 0.06) * r if dermal else rng.uniform(0.025, 0.035) * r
        for px, py in zip(*les.xy(a0 + rng.normal(0, 0.05, n), rho)):
            _dot(draw, px, py, size, _rgba(dark * (1.1 if dermal else 0.8), 200))
    if c["dots_and_globules"] == "irregular":
        n, a0 = 8 + int(30 * x), rng.uniform(0, 2 * np.pi)
        for px, py in zip(*les.xy(a0 + rng.normal(0, 0.9, n), rng.uniform(0.3, 1.05, n))):
            _dot(draw, px, py, rng.uniform(0.8, 4.0),
                 _rgba(C[rng.choice(["black", "dark_brown", "blue_grey"])], 235))
    if c["streaks"] != "absent":
        regular = c["streaks"] == "regular"
        n = int(rng.integers(28, 44)) if regular else int(rng.integers(6, 16))
        a0 = rng.uniform(0, 2 * np.pi)
        angles = (np.linspace(0, 2 * np.pi, n, endpoint=False) + a0 if regular
                  else a0 + rng.normal(0, 0.6, n))
        for a in angles:
            end = 1.12 if regular else 1.0 + rng.uniform(0.08, 0.35)
            (x0, x1), (y0, y1) = les.xy([a, a], np.array([0.85, end]))
            colour = _rgba(C["dark_brown"] * 0.8, 230)
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=2 if regular else
                      int(rng.integers(1, 4)))
            if regular or rng.random() < 0.5:   # globular (spitz) or bulbous (pseudopod) tips
                _dot(draw, x1, y1, 1.5 if regular else 2.2, colour)
    if c["regression_structures"] != "absent":   # peppering: fine blue-grey granules
        ys, xs = np.nonzero(regression > 0.5)
        for i in rng.choice(len(ys), min(len(ys), 80), replace=False) if len(ys) else []:
            _dot(draw, xs[i], ys[i], 0.9, _rgba(C["blue_grey"] * 0.7, 220))
    if c["vascular_structures"] != "absent":
        _vessels(draw, rng, les, c["vascular_structures"], x)
    return im


def _paint_other(rng, img, les, plan):
    """Non-melanocytic lesions (and the 'miscellaneous' pink macules)."""
    kind, c, rho = plan["kind"], plan["criteria"], les.rho
    decor = []
    if kind == "bcc":   # pinkish translucent, shiny white, blue-grey nests, ulceration, vessels
        col = np.broadcast_to(np.array([234, 188, 184], np.float32) * rng.uniform(0.95, 1.03),
                              img.shape).copy()
        _mix(col, C["white"], 0.7 * les.blob(rng, 20, bias=0, thr=0.5))
        if rng.random() < 0.35:
            _mix(col, np.array([112, 36, 30]), 0.9 * les.blob(rng, 14, bias=0, thr=1.2))
        if "irregular" in c["pigmentation"]:
            _mix(col, C["brown"], 0.5 * les.blob(rng, 18))
            decor.append("nests")
        if c["dots_and_globules"] == "irregular":
            decor.append("globules")
        alpha = np.clip((1 - rho) / 0.3 + 0.5, 0, 1) * rng.uniform(0.6, 0.8)
    elif kind == "sk":  # sharp border, cerebriform furrows, milia-like cysts, comedo openings
        col = (C["light_brown"] + (C["brown"] - C["light_brown"]) * rng.uniform(0, 1)) * (
            1 + 0.12 * _noise(rng, les.shape, 8))[..., None]
        col *= (1 - 0.3 * np.clip(1 - np.abs(_noise(rng, les.shape, 9)) / 0.2, 0, 1))[..., None]
        alpha = np.clip((1 - rho) / 0.03 + 0.5, 0, 1) * rng.uniform(0.85, 0.97)
        decor += ["milia", "comedo"]
    elif kind == "vascular":   # red-purple lacunae divided by whitish septa
        col = np.broadcast_to(np.array([226, 176, 176], np.float32), img.shape).copy()
        alpha = np.clip((1 - rho) / 0.05 + 0.5, 0, 1) * 0.9
        decor.append("lacunae")
    elif kind == "blue":       # homogeneous steel blue, structureless
        col = C["blue_grey"] + (C["steel_blue"] * 0.8 - C["blue_grey"]) * np.clip(
            1.2 - rho, 0, 1)[..., None] * (1 + 0.05 * _noise(rng, les.shape, 10))[..., None]
        alpha = np.clip((1 - rho) / 0.25 + 0.5, 0, 1) * 0.95
    elif kind == "df":         # central white scar-like patch, delicate peripheral network
        col = np.broadcast_to(C["light_brown"] * 0.6 + C["pink"] * 0.4, img.shape).copy()
        col *= (1 - 0.3 * les.mesh(rng, 8, 2, 0.3) * ((rho > 0.45) & (rho < 1)))[..., None]
        _mix(col, C["white"], np.clip((0.45 - rho + 0.12 * _noise(rng, les.shape, 12)) / 0.1,
                                      0, 0.85))
        alpha = np.clip((1 - rho) / 0.2 + 0.5, 0, 1) * 0.75
    else:                      # miscellaneous: pinkish inflammatory macule with dotted vessels
        col = np.broadcast_to(C["pink"] * 0.9 + C["red"] * 0.1, img.shape).copy()
        alpha = np.clip((1 - rho) / 0.3 + 0.5, 0, 1) * 0.6
    _mix(img, col, alpha)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw, r = ImageDraw.Draw(im, "RGBA"), les.radius
    for what in decor:
        n = {"nests": rng.integers(2, 7), "globules": rng.integers(5, 15),
             "milia": rng.integers(3, 14),
             "comedo": rng.integers(3, 11), "lacunae": int(2.0 * r ** 2 / 60)}[what]
        for px, py in zip(*les.xy(rng.uniform(0, 2 * np.pi, n), np.sqrt(rng.uniform(0, 0.8, n)))):
            if what == "nests":
                rx, ry = rng.uniform(4, 11), rng.uniform(3, 7)
                draw.ellipse((px - rx, py - ry, px + rx, py + ry),
                             fill=_rgba(C["blue_grey"] * rng.uniform(0.6, 0.85), 215))
            elif what == "globules":
                _dot(draw, px, py, rng.uniform(1.2, 2.8), _rgba(C["blue_grey"] * 0.7, 225))
            elif what == "milia":
                _dot(draw, px, py, rng.uniform(1.5, 3.2), _rgba((238, 232, 200), 230))
            elif what == "comedo":
                _dot(draw, px, py, rng.uniform(2.0, 3.6), _rgba((150, 110, 80), 230))
                _dot(draw, px, py, rng.uniform(1.0, 1.8), _rgba((60, 40, 32), 240))
            else:
                colour = [(186, 40, 56), (126, 26, 46), (112, 46, 96), (72, 26, 46)][
                    rng.integers(4)]
                _dot(draw, px, py, rng.uniform(0.06, 0.14) * r, _rgba(colour, 235))
    if c["vascular_structures"] != "absent":
        _vessels(draw, rng, les, c["vascular_structures"], plan["x"])
    return im


def _hairs_and_bubbles(rng, im):
    """Dark hairs across the field and, now and then, an air bubble: the usual artefacts."""
    draw = ImageDraw.Draw(im, "RGBA")
    w, h = im.size
    for _ in range(min(int(rng.poisson(3)), 10)):
        x, y, a = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * np.pi)
        bend, step, pts = rng.uniform(-0.04, 0.04), rng.uniform(8, 22), [(x, y)]
        for _ in range(12):
            a += bend
            pts.append((pts[-1][0] + step * math.cos(a), pts[-1][1] + step * math.sin(a)))
        draw.line(pts, fill=_rgba(rng.uniform(20, 60, 3), 230), width=int(rng.choice([1, 1, 2])),
                  joint="curve")
    if rng.random() < 0.15:   # an air bubble in the immersion fluid
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 16)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=(245, 245, 245, 200), width=2)


_MOVES = ("angle", "zoom", "shift")
_SOFTEN = ImageFilter.Kernel((3, 3), (1, 2, 1, 2, 4, 2, 1, 2, 1))   # binomial, ~Gaussian(0.7)


def _view(im, size, view):
    """Crop ``size`` out of the canvas, rotated, shifted and zoomed, then relit and softened."""
    (w, h), (cw, ch) = size, im.size
    if any(k in view for k in _MOVES):
        angle, zoom = math.radians(view.get("angle", 0.0)), view.get("zoom", 1.0)
        sx, sy = view.get("shift", (0.0, 0.0))
        co, si = math.cos(angle) / zoom, math.sin(angle) / zoom
        coeffs = (co, -si, cw / 2 + sx - (co * w / 2 - si * h / 2),
                  si, co, ch / 2 + sy - (si * w / 2 + co * h / 2))
        im = im.transform((w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC)
    else:
        im = im.crop(((cw - w) // 2, (ch - h) // 2, (cw - w) // 2 + w, (ch - h) // 2 + h))
    # The blur turns ImageDraw's hard pixels into optics; vignetting as in a dermatoscope's field.
    out = np.asarray(im.filter(_SOFTEN), np.float32)
    yy, xx = _grid(h, w)
    vignette = 1 - view.get("vignette", 0.0) * (((xx / w - 0.5) * 2) ** 2 + ((yy / h - 0.5) * 2)
                                                 ** 2) / 2
    out = out * vignette[..., None] * np.asarray(view.get("gain", (1.0, 1.0, 1.0)), np.float32)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def draw_lesion_views(rng: np.random.Generator, plan: dict, views: list[dict],
                      size: tuple[int, int] = SKIN_SIZE, *, acral: bool = False
                      ) -> list[Image.Image]:
    """Draw one lesion once and photograph it from each of ``views``.

    Args:
        rng: random generator.
        plan: criteria and atypia from ``lesion_plan``.
        views: one dict per picture, each with optional ``angle`` (degrees, |angle| <= 8),
            ``zoom`` (1 to 1.15), ``shift`` ((dx, dy) px, each |.| <= 8), ``gain`` (RGB factors)
            and ``vignette`` (0..0.3).
        size: (width, height) of the pictures.
        acral: palm/sole skin (parallel ridges; pigment follows furrows or ridges).

    Returns:
        list of RGB images of the given size, one per view.
    """
    w, h = size
    # Room for the rotations and shifts of a second view; none needed for a plain picture.
    margin = int(round(0.16 * h)) if any(k in v for v in views for k in _MOVES) else 0
    shape = (h + 2 * margin, w + 2 * margin)
    img, stripes = _skin(rng, shape, acral)
    kind, x = plan["kind"], plan["x"]
    # Melanomas are larger, less so the more they look like nevi.
    grow = 0.05 * x if plan["diagnosis"].startswith("melanoma") else 0.0
    lo, hi = {"blue": (0.16, 0.26), "vascular": (0.18, 0.3), "df": (0.17, 0.26)}.get(
        kind, (0.24 + grow, 0.38 + grow))
    asym = x if kind == "melanocytic" else 0.3
    les = _Lesion(rng, shape, h * rng.uniform(lo, hi), 0.15 + 0.85 * asym, 0.15 + 0.85 * asym
                  if kind != "sk" else 0.5, rng.uniform(0, 0.2))
    if kind == "melanocytic":
        im = _paint_melanocytic(rng, img, les, plan, stripes)
    else:
        im = _paint_other(rng, img, les, plan)
    _hairs_and_bubbles(rng, im)
    return [_view(im, size, view) for view in views]


def draw_lesion(rng: np.random.Generator, diagnosis: str, difficulty: str,
                size: tuple[int, int] = SKIN_SIZE, *, acral: bool = False) -> Image.Image:
    """Draw one dermoscopic picture of a new lesion.

    Args:
        rng: random generator.
        diagnosis: a derm7pt diagnosis string (a key of ``DIAGNOSES``).
        difficulty: ``low``, ``medium`` or ``high``: how subtle the malignant features are.
        size: (width, height) of the picture.
        acral: palm/sole skin.

    Returns:
        RGB image of the given size.
    """
    return draw_lesion_views(rng, lesion_plan(rng, diagnosis, difficulty), [{}], size,
                             acral=acral)[0]


def add_frame(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Black rectangular frame around the picture, as some Atlas images have (a new image)."""
    arr = np.array(image)
    top, bottom, left, right = rng.integers(6, 24, 4)
    h, w = arr.shape[:2]
    arr[:top], arr[h - bottom:], arr[:, :left], arr[:, w - right:] = 0, 0, 0, 0
    return Image.fromarray(arr)


# ----------------------------------------------------------------------------- fundus

def _retinal_vessel(draw, rng, x, y, heading, turn, width, colour, inside, depth):
    """A vessel leaving the disc: a random walk that bends by ``turn`` per step and branches."""
    headings = heading + np.cumsum(turn + rng.normal(0, 0.05, 200))
    xs, ys = x + np.cumsum(3.0 * np.cos(headings)), y + np.cumsum(3.0 * np.sin(headings))
    outside = ~inside(xs, ys)
    n = int(np.argmax(outside)) if outside.any() else len(xs)
    if depth > 0:
        forks = np.nonzero(rng.random(n) < 0.045)[0]
        for i in forks[forks > 6]:
            _retinal_vessel(draw, rng, xs[i], ys[i], headings[i] + rng.choice([-1, 1])
                            * rng.uniform(0.4, 1.0), turn * 0.5, width * 0.65, colour, inside,
                            depth - 1)
    pts = [(x, y)] + list(zip(xs[:n].tolist(), ys[:n].tolist()))
    for i in range(0, len(pts) - 1, 8):   # thinner as it goes
        w = max(1, int(round(width * (1 - 0.6 * i / len(pts)))))
        draw.line(pts[i:i + 9], fill=colour, width=w, joint="curve")


def draw_fundus(rng: np.random.Generator, grade: int, size: int = FUNDUS_SIZE, *,
                eye: str = "left") -> Image.Image:
    """Draw one colour fundus photograph with diabetic retinopathy of the given grade.

    Args:
        rng: random generator.
        grade: 0 (none), 1 (mild: microaneurysms), 2 (moderate: + haemorrhages, hard exudates,
            cotton-wool spots), 3 (severe: many of them), 4 (proliferative: + new vessels and
            preretinal haemorrhage).
        size: width and height in pixels.
        eye: ``left`` or ``right``; the optic disc sits on the nasal side.

    Returns:
        RGB image: an orange-red retina on a black background.
    """
    if grade not in range(5) or eye not in ("left", "right"):
        raise PipelineError(f"draw_fundus: grade must be 0..4 and eye 'left' or 'right'; got "
                            f"grade={grade!r}, eye={eye!r}.")
    n, k = size, size / 256
    yy, xx = _grid(n, n)
    cx, cy, rad = n / 2 + rng.normal(0, 1.5 * k), n / 2 + rng.normal(0, 1.5 * k), n * rng.uniform(
        0.45, 0.5)
    rho = np.hypot(xx - cx, yy - cy) / rad
    base = (np.array([204, 90, 40]) * rng.uniform(0.8, 1.08) + rng.normal(0, 6, 3)).astype(
        np.float32)
    shade = (1 - 0.5 * np.clip(rho, 0, 1) ** 2.5) * (1 + 0.06 * _noise(rng, (n, n), int(24 * k))
                                                     + 0.03 * _noise(rng, (n, n), int(5 * k)))
    img = base * shade[..., None]
    side = 1 if eye == "right" else -1
    disc = (cx + side * rad * rng.uniform(0.33, 0.4), cy + rng.normal(0, 0.04 * rad))
    rd = rad * rng.uniform(0.09, 0.11)
    fovea = (cx - side * rad * rng.uniform(0.02, 0.08), cy + rad * rng.uniform(0.0, 0.06))
    md = np.hypot(xx - fovea[0], yy - fovea[1])
    img *= (1 - 0.35 * np.exp(-(md / (0.14 * rad)) ** 2))[..., None]
    dd = np.hypot(xx - disc[0], yy - disc[1])
    _mix(img, np.array([244, 206, 140]), (rd - dd) / (1.5 * k) + 0.5)
    _mix(img, np.array([252, 238, 196]), ((0.45 * rd - dd) / (2 * k) + 0.5) * 0.8)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im, "RGBA")
    # Camera settings are drawn before the vessels and lesions, so that the same generator state
    # gives the same eye and photograph at every grade, differing only by the lesions.
    focus, exposure = rng.uniform(0.4, 1.3) * k, rng.uniform(0.75, 1.2)
    tint = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    # Like Kaggle's, the circle is often cut off at the top and bottom.
    top, bottom = cy - rad * rng.uniform(0.85, 1.0), cy + rad * rng.uniform(0.85, 1.0)

    def inside(px, py):
        return (px - cx) ** 2 + (py - cy) ** 2 < (0.97 * rad) ** 2

    temporal = math.atan2(fovea[1] - disc[1], fovea[0] - disc[0])
    for vein in (True, False):   # veins darker and wider than arteries
        colour = _rgba((118, 24, 24) if vein else (168, 48, 32), 235)
        width, off = (4.2 if vein else 3.0) * k, 0.12 if vein else -0.12
        for start, turn in ((temporal + side * 1.0, -side * 0.022),
                            (temporal - side * 1.0, side * 0.022),
                            (temporal + np.pi - side * 0.7, -side * 0.004),
                            (temporal + np.pi + side * 0.7, side * 0.004)):
            _retinal_vessel(draw, rng, *disc, start + off, turn, width, colour, inside, 2)

    def spots(count, near=None, spread=0.0):
        """Random points on the retina away from the disc (optionally clustered)."""
        out = []
        while len(out) < count:
            if near is None:
                r, a = 0.9 * rad * math.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
                px, py = cx + r * math.cos(a), cy + r * math.sin(a)
            else:
                px, py = near[0] + rng.normal(0, spread), near[1] + rng.normal(0, spread)
            if inside(px, py) and math.hypot(px - disc[0], py - disc[1]) > 1.6 * rd:
                out.append((px, py))
        return out

    lam = {"ma": (0, 5, 10, 22, 22), "blot": (0, 0, 5, 18, 20), "flame": (0, 0, 1, 5, 6),
           "exudate": (0, 0, 3, 5, 6), "cws": (0, 0, 1, 3, 4)}
    count = {name: int(rng.poisson(v[grade])) + (1 if name == "ma" and grade else 0)
             for name, v in lam.items()}
    for px, py in spots(count["exudate"], fovea, 0.25 * rad):   # circinate clusters
        for qx, qy in spots(int(rng.integers(3, 9)), (px, py), 5 * k):
            _dot(draw, qx, qy, rng.uniform(0.8, 2.2) * k, _rgba((236, 214, 96), 235))
    for px, py in spots(count["cws"]):                            # fluffy white patches
        for _ in range(5):
            _dot(draw, px + rng.normal(0, 2.5 * k), py + rng.normal(0, 2.5 * k),
                 rng.uniform(3, 6.5) * k, _rgba((232, 220, 190), 70))
    for px, py in spots(count["blot"]):
        rx, ry = rng.uniform(1.5, 4.5) * k, rng.uniform(1.5, 4.5) * k
        draw.ellipse((px - rx, py - ry, px + rx, py + ry), fill=_rgba((138, 22, 18), 235))
    for px, py in spots(count["flame"]):   # along the nerve fibres, i.e. radial from the disc
        a, ln = math.atan2(py - disc[1], px - disc[0]), rng.uniform(5, 10) * k
        draw.line([(px, py), (px + ln * math.cos(a), py + ln * math.sin(a))],
                  fill=_rgba((150, 26, 20), 230), width=int(3 * k))
    for px, py in spots(count["ma"]):
        _dot(draw, px, py, rng.uniform(0.8, 1.5) * k, _rgba((120, 16, 16), 245))
    if grade == 4:   # new vessels at the disc or along an arcade, sometimes a preretinal bleed
        for px, py in [disc] + spots(int(rng.integers(0, 3))):
            for _ in range(int(rng.integers(8, 16))):
                h, pts = rng.uniform(0, 2 * np.pi), [(px + rng.normal(0, 4 * k),
                                                      py + rng.normal(0, 4 * k))]
                for _ in range(6):
                    h += rng.normal(0, 0.9)
                    pts.append((pts[-1][0] + 3 * k * math.cos(h), pts[-1][1] + 3 * k * math.sin(h)))
                draw.line(pts, fill=_rgba((176, 36, 36), 220), width=1)
        if rng.random() < 0.5:
            (px, py), r = spots(1)[0], rng.uniform(8, 16) * k
            draw.chord((px - r, py - r, px + r, py + r), 0, 180, fill=_rgba((110, 12, 10), 240))
    out = np.asarray(im.filter(ImageFilter.BoxBlur(focus)), np.float32) * exposure * tint
    out *= ((rho <= 1) & (yy >= top) & (yy <= bottom))[..., None]
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------- writing

def _counts(n: int, shares) -> np.ndarray:
    """Split ``n`` items by ``shares`` with largest-remainder rounding (counts sum to ``n``)."""
    raw = np.asarray(list(shares), float) / float(sum(shares)) * n
    out = np.floor(raw).astype(int)
    out[np.argsort(-(raw - out), kind="stable")[: n - out.sum()]] += 1
    return out


def _shuffled(rng: np.random.Generator, mix: dict, n: int) -> list[str]:
    """``n`` keys of ``mix`` in the proportions of its values (share or (share, ...)), shuffled."""
    shares = [v[0] if isinstance(v, tuple) else v for v in mix.values()]
    return [str(v) for v in np.repeat(list(mix), _counts(n, shares))[rng.permutation(n)]]


def _save(image: Image.Image, path: Path) -> None:
    """JPEG with fixed encoder settings and no metadata, so the bytes depend on the pixels only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **JPEG)


def _clinical(derm: Image.Image) -> Image.Image:
    """The close-up clinical picture: no magnifier or immersion, so blurrier and flatter."""
    image = ImageEnhance.Contrast(derm.filter(ImageFilter.BoxBlur(2.5))).enhance(0.6)
    return ImageEnhance.Color(image).enhance(0.8)


def _patient(rng, diagnosis, difficulty, acral) -> dict:
    """Elevation, location, sex and management of one lesion, in derm7pt's vocabulary."""
    malignant = diagnosis.startswith("melanoma") or diagnosis == "basal cell carcinoma"
    raised = {"dermal nevus": 0.9, "basal cell carcinoma": 0.7, "seborrheic keratosis": 0.6,
              "dermatofibroma": 0.8, "vascular lesion": 0.6,
              "melanoma (0.76 to 1.5 mm)": 0.6}.get(diagnosis, 0.15)
    elevation = ("flat" if rng.random() >= raised else
                 "nodular" if rng.random() < 0.3 else "palpable")
    # Atlas cases are teaching cases: most benign ones were excised too, more so when hard.
    p_excise = {"low": 0.4, "medium": 0.55, "high": 0.7}[difficulty]
    management = "excision" if malignant or rng.random() < p_excise else str(
        rng.choice(["clinical follow up", "no further examination"]))
    location = "acral" if acral else str(rng.choice(list(LOCATIONS), p=np.array(
        list(LOCATIONS.values())) / sum(LOCATIONS.values())))
    sex = str(rng.choice(["female", "male"]))
    return {"elevation": elevation, "location": location, "sex": sex, "management": management}


def _write_derm7pt(root: Path, seed: np.random.SeedSequence, n_cases: int) -> None:
    """Write derm7pt's meta/meta.csv, split index files and images under ``root``."""
    meta_seed, lesion_seed = seed.spawn(2)
    rng = np.random.default_rng(meta_seed)
    n_pairs = int(round(n_cases * SHARED_SHARE / 2))
    n_lesions = n_cases - n_pairs
    diagnoses = _shuffled(rng, DIAGNOSES, n_lesions)
    difficulty = _shuffled(rng, DIFFICULTIES, n_lesions)
    # Acral lesions are melanocytic in the Atlas (acral nevi and melanomas).
    melanocytic = [i for i, d in enumerate(diagnoses) if d == "clark nevus" or "melanoma" in d]
    others = sorted(set(range(n_lesions)) - set(melanocytic))
    order = list(rng.permutation(melanocytic)) + list(rng.permutation(others))
    acral = set(order[: int(round(ACRAL_SHARE * n_lesions))])
    paired = set(rng.choice(n_lesions, n_pairs, replace=False).tolist())
    framed = set(rng.choice(n_cases, int(round(FRAME_SHARE * n_cases)), replace=False).tolist())
    # The release lists cases grouped by diagnosis; both views of a lesion are adjacent rows.
    lesions = sorted(range(n_lesions), key=lambda i: (diagnoses[i], i))
    rows, split_of_row = [], []
    split_names = _shuffled(rng, SPLITS, n_lesions)
    for i, seeds in zip(lesions, lesion_seed.spawn(n_lesions)):
        plan_seed, draw_seed, view_seed = seeds.spawn(3)
        plan_rng = np.random.default_rng(plan_seed)
        plan = lesion_plan(plan_rng, diagnoses[i], difficulty[i])
        patient = _patient(plan_rng, diagnoses[i], difficulty[i], i in acral)
        view_rng = np.random.default_rng(view_seed)
        views = [{"gain": tuple(view_rng.uniform(0.96, 1.04, 3)),
                  "vignette": view_rng.uniform(0.05, 0.25)} for _ in range(1 + (i in paired))]
        if i in paired:   # second picture of the same lesion: slightly rotated, shifted, zoomed
            views[1].update(angle=view_rng.uniform(-8, 8), zoom=view_rng.uniform(1.0, 1.12),
                            shift=tuple(view_rng.uniform(-8, 8, 2)))
        images = draw_lesion_views(np.random.default_rng(draw_seed), plan, views,
                                   acral=i in acral)
        first = len(rows) + 1
        for v, image in enumerate(images):
            case = len(rows)
            # Atlas-style names: 20 cases per folder, e.g. AAL/Aal001.jpg (clinic), Aal002 (derm)
            folder = (string.ascii_uppercase[case // 520 % 26]
                      + string.ascii_lowercase[case // 20 % 26] + "l")
            clinic, derm = (f"{folder.upper()}/{folder}{2 * (case % 20) + j:03d}.jpg"
                            for j in (1, 2))
            _save(_clinical(image), root / "images" / clinic)
            _save(add_frame(view_rng, image) if case in framed else image, root / "images" / derm)
            rows.append({"case_num": case + 1, "diagnosis": diagnoses[i],
                         "seven_point_score": seven_point_score(plan["criteria"]),
                         **plan["criteria"], "level_of_diagnostic_difficulty": difficulty[i],
                         "elevation": patient["elevation"], "location": patient["location"],
                         "sex": patient["sex"], "management": patient["management"],
                         "clinic": clinic, "derm": derm,
                         "case_id": f"lesion_{i + 1:04d}" if i in paired else "",
                         "notes": f"second dermoscopic image of case {first}" if v else ""})
            split_of_row.append(split_names[i])
    write_csv(root / "meta" / "meta.csv", pd.DataFrame(rows, columns=list(DERM7PT_COLUMNS)))
    for name in SPLITS:
        indexes = [k for k, s in enumerate(split_of_row) if s == name]
        write_csv(root / "meta" / f"{name}_indexes.csv", pd.DataFrame({"indexes": indexes}))


def _write_retinopathy(root: Path, seed: np.random.SeedSequence, n_images: int) -> None:
    """Write Kaggle's trainLabels.csv and train/<patient>_<eye>.jpeg under ``root``."""
    meta_seed, image_seed = seed.spawn(2)
    rng = np.random.default_rng(meta_seed)
    n_patients = n_images // 2
    # Both eyes of a patient mostly share the grade: pair sorted grades, then re-pair a quarter.
    eyes = np.sort(np.repeat(np.arange(5), _counts(n_images, GRADES))).reshape(n_patients, 2)
    mixed = rng.choice(n_patients, int(round(0.25 * n_patients)), replace=False)
    eyes[mixed, 1] = eyes[rng.permutation(mixed), 1]
    eyes = eyes[rng.permutation(n_patients)]
    patients = 10 + np.cumsum(rng.integers(1, 8, n_patients)) - 1   # Kaggle ids start at 10
    rows = []
    for pid, grades, seeds in zip(patients, eyes, image_seed.spawn(n_patients)):
        for eye, grade, eye_seed in zip(("left", "right"), grades, seeds.spawn(2)):
            image = f"{pid}_{eye}"
            _save(draw_fundus(np.random.default_rng(eye_seed), int(grade), eye=eye),
                  root / "train" / f"{image}.jpeg")
            rows.append({"image": image, "level": int(grade)})
    write_csv(root / "trainLabels.csv", pd.DataFrame(rows, columns=["image", "level"]))


def _params(seed: int, skin_cases: int, fundus_images: int) -> dict:
    return {"generator": "pipeline.demo_data", "format_version": FORMAT_VERSION, "seed": seed,
            "skin_cases": skin_cases, "fundus_images": fundus_images}


def demo_paths(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Where ``write_demo_data`` puts each dataset (whether or not it exists yet)."""
    out = Path(out_dir)
    return {"root": out, "manifest": out / MANIFEST, "derm7pt": out / "derm7pt",
            "derm7pt_meta": out / "derm7pt" / "meta" / "meta.csv",
            "derm7pt_images": out / "derm7pt" / "images", "retinopathy": out / "retinopathy",
            "retinopathy_labels": out / "retinopathy" / "trainLabels.csv",
            "retinopathy_images": out / "retinopathy" / "train"}


def is_current(out_dir: str | os.PathLike, *, seed: int = 0, skin_cases: int = 240,
               fundus_images: int = 300) -> bool:
    """Whether ``out_dir`` already holds complete demo data made with these parameters."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return False
    recorded = read_json(path)
    return all(recorded.get(k) == v for k, v in _params(seed, skin_cases, fundus_images).items())


def write_demo_data(out_dir: str | os.PathLike, *, seed: int = 0, skin_cases: int = 240,
                    fundus_images: int = 300) -> dict[str, Path]:
    """Write the synthetic derm7pt and retinopathy datasets (see the module docstring).

    Idempotent: if ``out_dir/manifest.json`` records the same parameters nothing is written.
    The datasets are built in a temporary sibling folder that is renamed into place once its
    manifest is written, so an interrupted run never leaves a folder that looks complete.

    Args:
        out_dir: output folder; must not exist, be empty, or hold demo data with these parameters.
        seed: seed of every random choice; the same seed gives byte-identical files.
        skin_cases: rows of derm7pt's meta.csv (dermoscopic images), at least 1.
        fundus_images: retinopathy images, an even number (both eyes of each patient), >= 2.

    Returns:
        dict name -> path: ``root``, ``manifest``, ``derm7pt``, ``derm7pt_meta``,
        ``derm7pt_images``, ``retinopathy``, ``retinopathy_labels``, ``retinopathy_images``.

    Raises:
        PipelineError: bad counts, or ``out_dir`` holds something else.
    """
    for name, value, ok, rule in (
            ("skin_cases", skin_cases, isinstance(skin_cases, int) and skin_cases >= 1, ">= 1"),
            ("fundus_images", fundus_images, isinstance(fundus_images, int) and fundus_images >= 2
             and fundus_images % 2 == 0, "an even number >= 2 (both eyes of each patient)"),
            ("seed", seed, isinstance(seed, int) and seed >= 0, "an integer >= 0")):
        if not ok:
            raise PipelineError(f"demo-data: {name} must be {rule}. Got {value!r} instead.")
    out, paths = Path(out_dir), demo_paths(out_dir)
    params = _params(seed, skin_cases, fundus_images)
    if is_current(out, seed=seed, skin_cases=skin_cases, fundus_images=fundus_images):
        log.info("%s already holds demo data with seed=%d; nothing written", out, seed)
        return paths
    if paths["manifest"].is_file():
        old = read_json(paths["manifest"])
        raise PipelineError(
            f"{paths['manifest']} records " + ", ".join(f"{k}={old.get(k)!r}" for k in params)
            + "; asked for " + ", ".join(f"{k}={v!r}" for k, v in params.items())
            + f". Delete {out} or pass another --out.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PipelineError(f"{out} exists and holds no demo-data manifest.json; refusing to write "
                            "into it. Pass a new or empty folder as --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        derm_seed, fundus_seed = np.random.SeedSequence(seed).spawn(2)
        _write_derm7pt(tmp / "derm7pt", derm_seed, skin_cases)
        _write_retinopathy(tmp / "retinopathy", fundus_seed, fundus_images)
        write_json(tmp / MANIFEST, {**params, "derm7pt_images": skin_cases,
                                    "retinopathy_images": fundus_images})
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m pipeline demo-data``."""
    parser.add_argument("--out", type=Path, default=Path("demo_data"),
                        help="output folder (default: demo_data)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--skin-cases", type=int, default=240,
                        help="derm7pt cases, i.e. dermoscopic images (default: 240)")
    parser.add_argument("--fundus-images", type=int, default=300,
                        help="retinopathy images, an even number (default: 300)")


def run(args: argparse.Namespace) -> int:
    """Write the demo datasets, or say that they are already there."""
    options = {"seed": args.seed, "skin_cases": args.skin_cases,
               "fundus_images": args.fundus_images}
    if is_current(args.out, **options):
        print(f"{args.out} already holds demo data made with these parameters; nothing to do.")
        return 0
    paths = write_demo_data(args.out, **options)
    print(f"wrote {paths['derm7pt_meta']} ({args.skin_cases} cases) and "
          f"{paths['retinopathy_labels']} ({args.fundus_images} images)")
    return 0
