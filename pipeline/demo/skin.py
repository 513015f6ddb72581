"""Synthetic dermoscopy for the demo derm7pt dataset: the pictures and the lesions' meta rows.

The Atlas images cannot be shipped, so ``pipeline.demo.writer`` writes look-alikes drawn here.
``lesion_plan`` samples a lesion's seven-point criteria and atypia, ``seven_point_score`` scores
them, ``patient_row`` samples the rest of its derm7pt meta row (elevation, location, sex, management);
``draw_lesion`` / ``draw_lesion_views`` paint it (384x256 by default) and ``add_frame`` puts a
picture inside a black frame, as some Atlas images are.

Classes differ in what dermatologists look at (asymmetry, border, colours, network, dots, streaks,
veil, vessels); the difficulty sets how far melanomas drift towards nevi (and nevi towards
melanomas). Everything is drawn from the generator passed in, so a seed fixes every picture.
The drawing primitives (``noise``, ``grid``, ``mix``, ``rgba``, ``dot``) are in
``pipeline.demo.drawing``, shared with ``pipeline.demo.fundus``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from pipeline.demo.drawing import C, dot, grid, mix, noise, rgba
from pipeline.demo.lesions import lesion_plan

SKIN_SIZE = (384, 256)   # (width, height): the Atlas's usual 768x512, halved for speed




# ----------------------------------------------------------------------------- derm7pt meta rows


# ----------------------------------------------------------------------------- dermoscopy

class _Lesion:
    """Pixel grids of one canvas and the lesion's outline on it, in polar form.

    The outline radius is a Fourier series in the angle: low orders (1-3) make the shape
    asymmetric, high orders (4-24) make the border irregular and notched.
    """

    def __init__(self, rng, shape, radius, asym, rough, ecc):
        h, w = shape
        self.shape, self.radius = shape, radius
        self.cx, self.cy = w / 2 + rng.normal(0, 0.03 * w), h / 2 + rng.normal(0, 0.03 * h)
        yy, xx = grid(h, w)
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
        return np.clip((noise(rng, self.shape, cell) + bias * side - thr) / 0.8, 0, 1) * inside

    def edge(self, rng, sharpness_spread):
        """Alpha of the lesion body: 1 inside, 0 outside, a border whose width varies with angle."""
        t = np.linspace(-np.pi, np.pi, 720, endpoint=False)
        u = sum(np.cos(k * t + rng.uniform(0, 6.3)) for k in range(1, 5)) / 4 * 0.5 + 0.5
        width = 0.12 * (1 - sharpness_spread) + sharpness_spread * (0.02 + 0.4 * u)
        return np.clip((1 - self.rho) / width[self.idx] + 0.5, 0, 1)

    def mesh(self, rng, period, warp, width):
        """Pigment network: a warped grid of dark lines (0..1), holes between them."""
        u = self.dx + warp * noise(rng, self.shape, 12)
        v = self.dy + warp * noise(rng, self.shape, 12)
        a = rng.uniform(0, np.pi)
        co, si = math.cos(a), math.sin(a)
        m = np.minimum(np.abs(np.sin(np.pi * (u * co + v * si) / period)),
                       np.abs(np.sin(np.pi * (v * co - u * si) / period)))
        return np.clip(1 - m / width, 0, 1)


def _skin(rng, shape, acral):
    """Skin as seen through a dermoscope: pinkish beige, mottled, furrows; ridges if acral."""
    h, w = shape
    base = (np.array([226, 172, 150]) * rng.uniform(0.86, 1.04) + rng.normal(0, 5, 3)).astype(
        np.float32)
    shade = 1 + 0.05 * noise(rng, shape, 64) + 0.02 * noise(rng, shape, 10)
    shade += rng.standard_normal(shape, dtype=np.float32) * 0.012   # sensor grain
    red = 1 - np.clip(noise(rng, shape, 40), 0, None) * 0.035
    yy, xx = grid(h, w)
    a = rng.uniform(0, np.pi)
    co, si = math.cos(a), math.sin(a)
    v = xx * co + yy * si + 8 * noise(rng, shape, 40)
    if acral:   # dermatoglyphics: parallel ridges and furrows
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * v / rng.uniform(8, 10))
        shade *= 1 - 0.08 * stripes
    else:       # criss-cross skin lines
        stripes = None
        u = yy * co - xx * si + 8 * noise(rng, shape, 40)
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
    r, red = les.radius, rgba(C["vessel"] * rng.uniform(0.85, 1.05), 225)
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
            dot(draw, px, py, rng.uniform(0.8, 1.4), red)
        else:
            steps, length = {"linear irregular": (8, 5), "comma": (3, 3), "hairpin": (4, 2.5)}[kind]
            h, pts = rng.uniform(0, 2 * np.pi), [(px, py)]
            for _ in range(steps):
                h += rng.normal(0, 0.7 if kind == "linear irregular" else 0.35)
                pts.append((pts[-1][0] + length * math.cos(h), pts[-1][1] + length * math.sin(h)))
            if kind == "hairpin":   # a loop with a whitish halo (keratinising lesions)
                dot(draw, px, py, 5, rgba(C["white"], 120))
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
    col *= (1 + 0.04 * noise(rng, les.shape, 6))[..., None]
    if "irregular" in c["pigmentation"]:
        for _ in range(1 if c["pigmentation"].startswith("localized") else 3):
            mix(col, C[rng.choice(["dark_brown", "black"])], 0.75 * les.blob(rng, 24))
    for name in rng.choice(["black", "blue_grey", "red", "light_brown", "dark_brown"],
                           size=rng.binomial(3, x), replace=False):
        mix(col, C[name], (0.35 + 0.4 * x) * les.blob(rng, 28, thr=1.0))
    if c["pigment_network"] == "typical":
        lines = les.mesh(rng, rng.uniform(7, 10), 2.0, 0.3)
        col *= (1 - rng.uniform(0.3, 0.45) * lines * np.clip((1 - les.rho) / 0.45, 0, 1))[
            ..., None]
    elif c["pigment_network"] == "atypical":
        lines = les.mesh(rng, rng.uniform(9, 13), 6.0, 0.3 + 0.2 * (noise(rng, les.shape, 20)
                                                                   > 0))
        broken = np.clip(noise(rng, les.shape, 16) + 0.6, 0, 1) * (les.rho < 0.98)
        col *= (1 - (0.35 + 0.25 * x) * lines * broken)[..., None]
    if c["blue_whitish_veil"] == "present":
        veil = C["blue_white"] * (1 + 0.04 * noise(rng, les.shape, 5))[..., None]
        mix(col, veil, (0.45 + 0.3 * x) * les.blob(rng, 40, bias=1.5, thr=0.4))
    regression = np.zeros(les.shape, np.float32)
    if c["regression_structures"] != "absent":
        regression = les.blob(rng, 20, thr=0.6)
        if c["regression_structures"] != "blue areas":
            mix(col, C["white"], 0.85 * regression)
        if c["regression_structures"] != "white areas":
            mix(col, C["blue_grey"], 0.45 * regression)
    asym_edge = x  # the picture shows the atypia, never the diagnosis itself
    alpha = les.edge(rng, asym_edge) * (0.6 if lentigo else rng.uniform(0.85, 0.97))
    if stripes is not None:   # acral: pigment in the furrows (nevi) or on the ridges (melanoma)
        ridge = x > 0.5
        alpha *= 0.35 + 0.65 * np.clip(((stripes if ridge else 1 - stripes) - 0.4) * 4, 0, 1)
    mix(img, col, alpha)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im, "RGBA")
    r = les.radius
    if c["dots_and_globules"] == "regular" or dermal:
        n = int(rng.integers(30, 50)) if dermal else int(rng.integers(8, 20))
        a0 = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)
        rho = rng.uniform(0.1, 0.8, n) if dermal else np.full(n, rng.uniform(0.55, 0.8))
        size = rng.uniform(0.04, 0.06) * r if dermal else rng.uniform(0.025, 0.035) * r
        for px, py in zip(*les.xy(a0 + rng.normal(0, 0.05, n), rho)):
            dot(draw, px, py, size, rgba(dark * (1.1 if dermal else 0.8), 200))
    if c["dots_and_globules"] == "irregular":
        n, a0 = 8 + int(30 * x), rng.uniform(0, 2 * np.pi)
        for px, py in zip(*les.xy(a0 + rng.normal(0, 0.9, n), rng.uniform(0.3, 1.05, n))):
            dot(draw, px, py, rng.uniform(0.8, 4.0),
                 rgba(C[rng.choice(["black", "dark_brown", "blue_grey"])], 235))
    if c["streaks"] != "absent":
        regular = c["streaks"] == "regular"
        n = int(rng.integers(28, 44)) if regular else int(rng.integers(6, 16))
        a0 = rng.uniform(0, 2 * np.pi)
        angles = (np.linspace(0, 2 * np.pi, n, endpoint=False) + a0 if regular
                  else a0 + rng.normal(0, 0.6, n))
        for a in angles:
            end = 1.12 if regular else 1.0 + rng.uniform(0.08, 0.35)
            (x0, x1), (y0, y1) = les.xy([a, a], np.array([0.85, end]))
            colour = rgba(C["dark_brown"] * 0.8, 230)
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=2 if regular else
                      int(rng.integers(1, 4)))
            if regular or rng.random() < 0.5:   # globular (spitz) or bulbous (pseudopod) tips
                dot(draw, x1, y1, 1.5 if regular else 2.2, colour)
    if c["regression_structures"] != "absent":   # peppering: fine blue-grey granules
        ys, xs = np.nonzero(regression > 0.5)
        for i in rng.choice(len(ys), min(len(ys), 80), replace=False) if len(ys) else []:
            dot(draw, xs[i], ys[i], 0.9, rgba(C["blue_grey"] * 0.7, 220))
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
        mix(col, C["white"], 0.7 * les.blob(rng, 20, bias=0, thr=0.5))
        if rng.random() < 0.35:
            mix(col, np.array([112, 36, 30]), 0.9 * les.blob(rng, 14, bias=0, thr=1.2))
        if "irregular" in c["pigmentation"]:
            mix(col, C["brown"], 0.5 * les.blob(rng, 18))
            decor.append("nests")
        if c["dots_and_globules"] == "irregular":
            decor.append("globules")
        alpha = np.clip((1 - rho) / 0.3 + 0.5, 0, 1) * rng.uniform(0.6, 0.8)
    elif kind == "sk":  # sharp border, cerebriform furrows, milia-like cysts, comedo openings
        col = (C["light_brown"] + (C["brown"] - C["light_brown"]) * rng.uniform(0, 1)) * (
            1 + 0.12 * noise(rng, les.shape, 8))[..., None]
        col *= (1 - 0.3 * np.clip(1 - np.abs(noise(rng, les.shape, 9)) / 0.2, 0, 1))[..., None]
        alpha = np.clip((1 - rho) / 0.03 + 0.5, 0, 1) * rng.uniform(0.85, 0.97)
        decor += ["milia", "comedo"]
    elif kind == "vascular":   # red-purple lacunae divided by whitish septa
        col = np.broadcast_to(np.array([226, 176, 176], np.float32), img.shape).copy()
        alpha = np.clip((1 - rho) / 0.05 + 0.5, 0, 1) * 0.9
        decor.append("lacunae")
    elif kind == "blue":       # homogeneous steel blue, structureless
        col = C["blue_grey"] + (C["steel_blue"] * 0.8 - C["blue_grey"]) * np.clip(
            1.2 - rho, 0, 1)[..., None] * (1 + 0.05 * noise(rng, les.shape, 10))[..., None]
        alpha = np.clip((1 - rho) / 0.25 + 0.5, 0, 1) * 0.95
    elif kind == "df":         # central white scar-like patch, delicate peripheral network
        col = np.broadcast_to(C["light_brown"] * 0.6 + C["pink"] * 0.4, img.shape).copy()
        col *= (1 - 0.3 * les.mesh(rng, 8, 2, 0.3) * ((rho > 0.45) & (rho < 1)))[..., None]
        mix(col, C["white"], np.clip((0.45 - rho + 0.12 * noise(rng, les.shape, 12)) / 0.1,
                                      0, 0.85))
        alpha = np.clip((1 - rho) / 0.2 + 0.5, 0, 1) * 0.75
    else:                      # miscellaneous: pinkish inflammatory macule with dotted vessels
        col = np.broadcast_to(C["pink"] * 0.9 + C["red"] * 0.1, img.shape).copy()
        alpha = np.clip((1 - rho) / 0.3 + 0.5, 0, 1) * 0.6
    mix(img, col, alpha)
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
                             fill=rgba(C["blue_grey"] * rng.uniform(0.6, 0.85), 215))
            elif what == "globules":
                dot(draw, px, py, rng.uniform(1.2, 2.8), rgba(C["blue_grey"] * 0.7, 225))
            elif what == "milia":
                dot(draw, px, py, rng.uniform(1.5, 3.2), rgba((238, 232, 200), 230))
            elif what == "comedo":
                dot(draw, px, py, rng.uniform(2.0, 3.6), rgba((150, 110, 80), 230))
                dot(draw, px, py, rng.uniform(1.0, 1.8), rgba((60, 40, 32), 240))
            else:
                colour = [(186, 40, 56), (126, 26, 46), (112, 46, 96), (72, 26, 46)][
                    rng.integers(4)]
                dot(draw, px, py, rng.uniform(0.06, 0.14) * r, rgba(colour, 235))
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
        draw.line(pts, fill=rgba(rng.uniform(20, 60, 3), 230), width=int(rng.choice([1, 1, 2])),
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
    yy, xx = grid(h, w)
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


def clinical_view(derm: Image.Image) -> Image.Image:
    """The close-up clinical picture: no magnifier or immersion, so blurrier and flatter."""
    image = ImageEnhance.Contrast(derm.filter(ImageFilter.BoxBlur(2.5))).enhance(0.6)
    return ImageEnhance.Color(image).enhance(0.8)
