"""The official train/test split of ISIC 2016 as a folds table (repeat 0).

Half 1 is the official training set, half 2 the official test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data.designs import apply_design
from pipeline.errors import PipelineError
from pipeline.folds.table import OFFICIAL_REPEAT, examples_text


def official_split(manifest: pd.DataFrame, design: str | None = None) -> pd.DataFrame:
    """The official train/test split of ISIC 2016 as a folds table.

    Args:
        manifest: manifest with a ``split`` column (``train``/``test``).
        design: if given, only the images this design keeps.

    Returns:
        Table ``image, repeat, half`` with repeat 0 (``OFFICIAL_REPEAT``), half 1 = official
        training set, half 2 = official test set; ``is_official`` is true for it.
    """
    if "split" not in manifest.columns:
        raise PipelineError("the manifest has no 'split' column; an official split exists only "
                            "for ISIC 2016, whose manifest records it. Drop --official to make "
                            "5×2 folds.")
    rows = manifest if design is None else apply_design(manifest, design)
    split = rows["split"].astype(str)
    bad = rows["image"][~split.isin(["train", "test"])]
    if len(bad):
        raise PipelineError(f"manifest column 'split' must be 'train' or 'test'; images "
                            f"{examples_text(bad)} have {sorted(set(split[bad.index]))}.")
    return pd.DataFrame({"image": rows["image"].astype(str).to_numpy(), "repeat": OFFICIAL_REPEAT,
                         "half": np.where(split == "train", 1, 2)})
