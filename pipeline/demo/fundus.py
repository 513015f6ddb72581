"""Synthetic colour fundus photographs for the demo Kaggle Diabetic Retinopathy dataset.

The Kaggle images cannot be shipped, so ``pipeline.demo.writer`` writes look-alikes drawn here:
``draw_fundus`` paints an orange-red retina on a black background, optic disc on the nasal side,
vessels, and the lesions of a diabetic retinopathy grade (0 none .. 4 proliferative); the same
generator state gives the same eye and photograph at every grade, differing only by the lesions.
``GRADES`` holds the labels' mix in Kaggle's training set. Everything is drawn from the generator
passed in, so a seed fixes every picture.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.demo.drawing import dot, grid, mix, noise, rgba
from pipeline.errors import PipelineError

FUNDUS_SIZE = 256
GRADES = (73.0, 7.0, 15.0, 2.5, 2.5)   # Kaggle: 25,810 / 2,443 / 5,292 / 873 / 708 images
# Lesions are drawn this many times larger than to scale (and twice as many), so that the grades
# survive the demo's small network inputs (48-64 px); at Kaggle's resolution real ones are visible.
LESION_SCALE = 2.5


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
    yy, xx = grid(n, n)
    cx, cy, rad = n / 2 + rng.normal(0, 1.5 * k), n / 2 + rng.normal(0, 1.5 * k), n * rng.uniform(
        0.45, 0.5)
    rho = np.hypot(xx - cx, yy - cy) / rad
    base = (np.array([204, 90, 40]) * rng.uniform(0.8, 1.08) + rng.normal(0, 6, 3)).astype(
        np.float32)
    shade = (1 - 0.5 * np.clip(rho, 0, 1) ** 2.5) * (1 + 0.06 * noise(rng, (n, n), int(24 * k))
                                                     + 0.03 * noise(rng, (n, n), int(5 * k)))
    img = base * shade[..., None]
    side = 1 if eye == "right" else -1
    disc = (cx + side * rad * rng.uniform(0.33, 0.4), cy + rng.normal(0, 0.04 * rad))
    rd = rad * rng.uniform(0.09, 0.11)
    fovea = (cx - side * rad * rng.uniform(0.02, 0.08), cy + rad * rng.uniform(0.0, 0.06))
    md = np.hypot(xx - fovea[0], yy - fovea[1])
    img *= (1 - 0.35 * np.exp(-(md / (0.14 * rad)) ** 2))[..., None]
    dd = np.hypot(xx - disc[0], yy - disc[1])
    mix(img, np.array([244, 206, 140]), (rd - dd) / (1.5 * k) + 0.5)
    mix(img, np.array([252, 238, 196]), ((0.45 * rd - dd) / (2 * k) + 0.5) * 0.8)
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
        colour = rgba((118, 24, 24) if vein else (168, 48, 32), 235)
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

    lam = {"ma": (0, 10, 20, 44, 44), "blot": (0, 0, 10, 36, 40), "flame": (0, 0, 2, 10, 12),
           "exudate": (0, 0, 6, 10, 12), "cws": (0, 0, 2, 6, 8)}
    k = k * LESION_SCALE  # from here on: lesion sizes
    count = {name: int(rng.poisson(v[grade])) + (1 if name == "ma" and grade else 0)
             for name, v in lam.items()}
    for px, py in spots(count["exudate"], fovea, 0.25 * rad):   # circinate clusters
        for qx, qy in spots(int(rng.integers(3, 9)), (px, py), 5 * k):
            dot(draw, qx, qy, rng.uniform(0.8, 2.2) * k, rgba((236, 214, 96), 235))
    for px, py in spots(count["cws"]):                            # fluffy white patches
        for _ in range(5):
            dot(draw, px + rng.normal(0, 2.5 * k), py + rng.normal(0, 2.5 * k),
                 rng.uniform(3, 6.5) * k, rgba((232, 220, 190), 70))
    for px, py in spots(count["blot"]):
        rx, ry = rng.uniform(1.5, 4.5) * k, rng.uniform(1.5, 4.5) * k
        draw.ellipse((px - rx, py - ry, px + rx, py + ry), fill=rgba((138, 22, 18), 235))
    for px, py in spots(count["flame"]):   # along the nerve fibres, i.e. radial from the disc
        a, ln = math.atan2(py - disc[1], px - disc[0]), rng.uniform(5, 10) * k
        draw.line([(px, py), (px + ln * math.cos(a), py + ln * math.sin(a))],
                  fill=rgba((150, 26, 20), 230), width=int(3 * k))
    for px, py in spots(count["ma"]):
        dot(draw, px, py, rng.uniform(0.8, 1.5) * k, rgba((120, 16, 16), 245))
    if grade == 4:   # new vessels at the disc or along an arcade, sometimes a preretinal bleed
        for px, py in [disc] + spots(int(rng.integers(0, 3))):
            for _ in range(int(rng.integers(8, 16))):
                h, pts = rng.uniform(0, 2 * np.pi), [(px + rng.normal(0, 4 * k),
                                                      py + rng.normal(0, 4 * k))]
                for _ in range(6):
                    h += rng.normal(0, 0.9)
                    pts.append((pts[-1][0] + 3 * k * math.cos(h), pts[-1][1] + 3 * k * math.sin(h)))
                draw.line(pts, fill=rgba((176, 36, 36), 220), width=1)
        if rng.random() < 0.5:
            (px, py), r = spots(1)[0], rng.uniform(8, 16) * k
            draw.chord((px - r, py - r, px + r, py + r), 0, 180, fill=rgba((110, 12, 10), 240))
    out = np.asarray(im.filter(ImageFilter.BoxBlur(focus)), np.float32) * exposure * tint
    out *= ((rho <= 1) & (yy >= top) & (yy <= bottom))[..., None]
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
