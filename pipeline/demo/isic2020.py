"""A synthetic demo dataset in the ISIC 2020 layout, whose patient metadata carries planted signal.

``python -m pipeline demo-data --layout isic2020 --out demo_data_isic2020 [--cases 360]`` writes
``train.csv`` (exactly ISIC 2020's columns: ``image_name, patient_id, sex, age_approx,
anatom_site_general_challenge, diagnosis, benign_malignant, target``), ``train/<image>.jpg``
(dermoscopy drawn by ``pipeline.demo.skin``, 256x192) and ``manifest.json`` (written last).

Mix: 30% melanoma (ISIC 2020 has 1.8%; the demo needs positives in every part of a small split),
the rest nevus (70% of the benign), seborrheic keratosis and lentigo; patients hold 1-3 images,
of one diagnosis each. Lesions are drawn at "medium" and "high" difficulty only, so the images
alone separate the classes imperfectly.

The planted metadata signal (documented so a reader can check what fusion should find): given
the label, melanoma patients are older (``age_approx`` ~ N(62, 10) against N(45, 12), in steps
of 5, 8% unknown), more often male (65% against 45%, 5% unknown) and their lesions more often on
the torso (55% against 25%; the rest head/neck, upper and lower extremity, 5% unknown). Measured
on the default 360 cases, the metadata alone ranks melanoma above benign with an AUROC of about
0.9 (``tests/demo/test_isic2020.py`` checks it is above 0.75), so a classifier that fuses it
should beat one on the images alone. Seeded: the same seed gives the same files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.cache.entries import MANIFEST
from pipeline.cache.files import read_json, write_csv, write_json
from pipeline.demo.lesions import lesion_plan
from pipeline.demo.skin import draw_lesion_views
from pipeline.errors import PipelineError

COLUMNS = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
           "diagnosis", "benign_malignant", "target")
MELANOMA_SHARE = 0.3
# ISIC 2020 diagnosis -> the demo lesion drawn for it, and its share of the benign images.
BENIGN = {"nevus": ("clark nevus", 0.7), "seborrheic keratosis": ("seborrheic keratosis", 0.15),
          "lentigo NOS": ("lentigo", 0.15)}
MELANOMA_LOOKS = ("melanoma (in situ)", "melanoma (less than 0.76 mm)")
SITES = ("torso", "head/neck", "upper extremity", "lower extremity")
SIZE = (256, 192)
FORMAT_VERSION = 1
_JPEG = {"format": "JPEG", "quality": 90, "subsampling": 2, "optimize": False}


def _params(seed: int, cases: int) -> dict:
    return {"generator": "pipeline.demo.isic2020", "format_version": FORMAT_VERSION,
            "seed": seed, "cases": cases}


def is_current(out_dir: str | os.PathLike, *, seed: int = 0, cases: int = 360) -> bool:
    """Whether ``out_dir`` already holds this demo made with these parameters."""
    path = Path(out_dir) / MANIFEST
    return path.is_file() and all(read_json(path).get(k) == v
                                  for k, v in _params(seed, cases).items())


def patient_metadata(rng: np.random.Generator, melanoma: bool) -> dict:
    """Sex, age and site of one patient given the label: the planted signal (module docstring)."""
    age = "" if rng.random() < 0.08 else str(int(np.clip(
        5 * np.round(rng.normal(62, 10) / 5 if melanoma else rng.normal(45, 12) / 5), 20, 90)))
    sex = "" if rng.random() < 0.05 else ("male" if rng.random() < (0.65 if melanoma else 0.45)
                                          else "female")
    torso = 0.55 if melanoma else 0.25
    site = "" if rng.random() < 0.05 else str(rng.choice(
        SITES, p=[torso] + [(1 - torso) / 3] * 3))
    return {"sex": sex, "age_approx": age, "anatom_site_general_challenge": site}


def write_isic2020_demo(out_dir: str | os.PathLike, *, seed: int = 0, cases: int = 360) -> Path:
    """Write the ISIC 2020-layout demo (see the module docstring); returns ``train.csv``'s path.

    Idempotent like ``pipeline.demo.writer.write_demo_data``: a folder whose manifest records the
    same parameters is left as it is; built in a temporary sibling renamed into place.

    Raises:
        PipelineError: ``cases`` < 20, or ``out_dir`` holds something else.
    """
    if not isinstance(cases, int) or cases < 20:
        raise PipelineError(f"demo-data --layout isic2020: --cases must be an integer >= 20 (every "
                            f"part of a 60/20/20 split needs melanomas). Got {cases!r} instead.")
    out = Path(out_dir)
    if is_current(out, seed=seed, cases=cases):
        return out / "train.csv"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PipelineError(f"{out} exists and holds no ISIC 2020 demo made with seed={seed}, "
                            f"cases={cases}; delete it or pass another --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta_seed, draw_seed = np.random.SeedSequence(seed).spawn(2)
        rng = np.random.default_rng(meta_seed)
        rows, patient = [], 0
        while len(rows) < cases:
            melanoma = bool(rng.random() < MELANOMA_SHARE)
            if melanoma:
                diagnosis, look = "melanoma", str(rng.choice(MELANOMA_LOOKS))
            else:
                diagnosis = str(rng.choice(list(BENIGN), p=[v[1] for v in BENIGN.values()]))
                look = BENIGN[diagnosis][0]
            meta = patient_metadata(rng, melanoma)
            for _ in range(min(int(rng.integers(1, 4)), cases - len(rows))):
                rows.append({"image_name": f"ISIC_{1000000 + len(rows):07d}",
                             "patient_id": f"IP_{1000000 + patient:07d}", **meta,
                             "diagnosis": diagnosis,
                             "benign_malignant": "malignant" if melanoma else "benign",
                             "target": int(melanoma), "_look": look,
                             "_difficulty": str(rng.choice(["medium", "high"]))})
            patient += 1
        (tmp / "train").mkdir()
        for row, image_seed in zip(rows, draw_seed.spawn(len(rows))):
            image_rng = np.random.default_rng(image_seed)
            plan = lesion_plan(image_rng, row["_look"], row["_difficulty"])
            image: Image.Image = draw_lesion_views(image_rng, plan, [{}], SIZE)[0]
            image.save(tmp / "train" / f"{row['image_name']}.jpg", **_JPEG)
        write_csv(tmp / "train.csv", pd.DataFrame(rows, columns=list(COLUMNS)))
        write_json(tmp / MANIFEST, {**_params(seed, cases), "patients": patient})
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "train.csv"
