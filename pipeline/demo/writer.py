"""Synthetic demo datasets in the published layouts of derm7pt and Kaggle Diabetic Retinopathy.

The Atlas and Kaggle images cannot be shipped, so ``demo-data`` writes look-alikes that every stage
can run on: dermoscopy drawn by ``pipeline.demo.skin``, fundus photographs by
``pipeline.demo.fundus``. ``python -m pipeline demo-data --out demo_data [--seed 0]
[--skin-cases 520] [--fundus-images 640]`` writes, under the output folder:

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
black frame; retinopathy grades 73/7/15/2.5/2.5% as in Kaggle. Everything is seeded: the same seed
gives byte-identical files with the same Pillow/libjpeg build.
"""

from __future__ import annotations

import logging
import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.cache.entries import MANIFEST
from pipeline.cache.files import read_json, write_csv, write_json
from pipeline.demo.fundus import GRADES, draw_fundus
from pipeline.demo.lesions import (
    DERM7PT_COLUMNS,
    DIAGNOSES,
    DIFFICULTY_SHARES,
    lesion_plan,
    patient_row,
    seven_point_score,
)
from pipeline.demo.skin import add_frame, clinical_view, draw_lesion_views
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
JPEG = {"format": "JPEG", "quality": 90, "subsampling": 2, "optimize": False}
SHARED_SHARE, ACRAL_SHARE, FRAME_SHARE = 0.15, 0.05, 0.15
SPLITS = {"train": 413, "valid": 203, "test": 395}   # derm7pt's split sizes, used as shares


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


def _write_derm7pt(root: Path, seed: np.random.SeedSequence, n_cases: int) -> None:
    """Write derm7pt's meta/meta.csv, split index files and images under ``root``."""
    meta_seed, lesion_seed = seed.spawn(2)
    rng = np.random.default_rng(meta_seed)
    n_pairs = int(round(n_cases * SHARED_SHARE / 2))
    n_lesions = n_cases - n_pairs
    diagnoses = _shuffled(rng, DIAGNOSES, n_lesions)
    difficulty = _shuffled(rng, DIFFICULTY_SHARES, n_lesions)
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
        patient = patient_row(plan_rng, diagnoses[i], difficulty[i], i in acral)
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
            _save(clinical_view(image), root / "images" / clinic)
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
    return {"generator": "pipeline.demo.writer", "format_version": FORMAT_VERSION, "seed": seed,
            "skin_cases": skin_cases, "fundus_images": fundus_images}


def demo_paths(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Where ``write_demo_data`` puts each dataset (whether or not it exists yet)."""
    out = Path(out_dir)
    return {"root": out, "manifest": out / MANIFEST, "derm7pt": out / "derm7pt",
            "derm7pt_meta": out / "derm7pt" / "meta" / "meta.csv",
            "derm7pt_images": out / "derm7pt" / "images", "retinopathy": out / "retinopathy",
            "retinopathy_labels": out / "retinopathy" / "trainLabels.csv",
            "retinopathy_images": out / "retinopathy" / "train"}


def is_current(out_dir: str | os.PathLike, *, seed: int = 0, skin_cases: int = 520,
               fundus_images: int = 640) -> bool:
    """Whether ``out_dir`` already holds complete demo data made with these parameters."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return False
    recorded = read_json(path)
    return all(recorded.get(k) == v for k, v in _params(seed, skin_cases, fundus_images).items())


def write_demo_data(out_dir: str | os.PathLike, *, seed: int = 0, skin_cases: int = 520,
                    fundus_images: int = 640) -> dict[str, Path]:
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

