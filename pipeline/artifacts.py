"""The files an experiment's stages hand to each other, in its output folder, and their readers.

| file                         | written by  | what                                                   |
|------------------------------|-------------|--------------------------------------------------------|
| ``manifest.csv``             | ``data``    | target images that decoded (``skipped.csv`` beside it) |
| ``retinopathy_manifest.csv`` | ``data``    | source-task images, when a cell needs Retinopathy      |
| ``folds/<design>.csv``       | ``folds``   | 5x2 folds (or the official split) per design           |
| ``networks.json``            | ``pretrain``| source network entry (or why not run) per source       |
| ``finetuned.csv``            | ``finetune``| fine-tuned network entry per (source, design, fold)    |
| ``features.csv``             | ``extract`` | feature entry per network                              |
| ``predictions.csv``, ``metrics.csv`` | ``svm`` | the result-file contract                           |
| ``report.md`` + PNGs, ``comparisons.csv`` | ``report`` |                                           |

Entries themselves (images, networks, features) live in the content-keyed cache
(``features_cache/``). A reader that finds a file missing names the ``make`` target that writes it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.cache import read_json
from pipeline.config import Config
from pipeline.errors import PipelineError

MAKE_TARGET = {
    "manifest.csv": "data",
    "retinopathy_manifest.csv": "data",
    "folds": "folds",
    "networks.json": "pretrain",
    "finetuned.csv": "finetune",
    "features.csv": "features",
    "metrics.csv": "svm",
    "predictions.csv": "svm",
}


def require(config: Config, name: str) -> Path:
    """Path of an experiment file that an earlier stage must have written.

    Raises:
        PipelineError: naming the file and the ``make`` target that writes it.
    """
    path = config.path_of(name)
    if not path.exists():
        target = MAKE_TARGET.get(name.split("/")[0], name)
        raise PipelineError(f"{path} is missing; it is written by the `{target}` stage. Run "
                            f"`make {target} EXP={config.path}`.")
    return path


def manifest(config: Config) -> pd.DataFrame:
    """The target dataset's manifest (images that decoded)."""
    from pipeline.manifest import read_manifest

    return read_manifest(require(config, "manifest.csv"))


def retinopathy_manifest(config: Config) -> pd.DataFrame:
    """The Retinopathy source task's manifest."""
    from pipeline.manifest import read_manifest

    return read_manifest(require(config, "retinopathy_manifest.csv"))


def folds(config: Config, design: str, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The folds of one design, checked against the manifest."""
    from pipeline.folds import read_folds

    table = manifest(config) if table is None else table
    return read_folds(require(config, f"folds/{design}.csv"), table, design)


def networks(config: Config) -> dict:
    """``networks.json``: source -> ``{"status": "ok", "entry": ...}`` or ``{"status": "not_run",
    "reason": ..., "fix": ...}``."""
    return read_json(require(config, "networks.json"))


def not_run(config: Config) -> list[dict]:
    """Cells that could not run, each ``{source, finetune, reason, fix}``."""
    out = []
    for source, info in networks(config).items():
        if info["status"] != "ok":
            out += [{"source": c.source, "finetune": c.finetune, "reason": info["reason"],
                     "fix": info["fix"]} for c in config.cells if c.source == source]
    return out


def target_images(config: Config, table: pd.DataFrame | None = None):
    """The image cache of the target dataset at the network's input size (built by ``data``;
    finding it again decodes nothing)."""
    from pipeline import netstore
    from pipeline.image_cache import build_image_cache

    table = manifest(config) if table is None else table
    size = netstore.architecture(config)["input_size"]
    return build_image_cache(table, config.cache_dir / "images", (size, size),
                             crop_black_frame=config["data"]["crop_black_frame"])


def read_index(config: Config, name: str) -> pd.DataFrame:
    """An index CSV (``finetuned.csv``, ``features.csv``) with typed columns."""
    table = pd.read_csv(require(config, name), dtype={"design": str, "entry": str, "source": str},
                        keep_default_na=False)
    if "finetune" in table:
        table["finetune"] = table["finetune"].astype(str).str.lower().eq("true")
    return table
