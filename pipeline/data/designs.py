"""Labelling designs of Menegola et al. (2017), as data.

Each design maps an image's ``category`` (``melanoma``, ``bcc`` or ``benign``, from the manifest)
to the design's label, or removes the image:

| design                      | positive             | negative | removed |
|-----------------------------|----------------------|----------|---------|
| ``malignant_vs_benign``     | melanoma + bcc       | benign   | —       |
| ``melanoma_vs_benign``      | melanoma             | benign   | bcc     |
| ``melanoma_vs_bcc_vs_benign`` | 3 classes          |          | —       |

The command ``python -m pipeline designs --manifest manifest.csv`` (``pipeline.commands.designs``) prints the class
counts per design.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Design:
    """A labelling design.

    Attributes:
        name: the design's name, as used in configs and result files.
        classes: the labels in order; for 2-class designs the last one is the positive class.
        mapping: category -> label; categories mapped to ``None`` are removed.
        title: the paper's name for the design.
    """

    name: str
    classes: tuple[str, ...]
    mapping: dict
    title: str

    @property
    def positive(self) -> str | None:
        """The positive class of a 2-class design (``None`` for the 3-class design)."""
        return self.classes[-1] if len(self.classes) == 2 else None

    @property
    def removed(self) -> tuple[str, ...]:
        """Categories whose images this design removes."""
        return tuple(c for c, label in self.mapping.items() if label is None)


DESIGNS: dict[str, Design] = {
    d.name: d
    for d in (
        Design("malignant_vs_benign", ("benign", "malignant"),
               {"melanoma": "malignant", "bcc": "malignant", "benign": "benign"},
               "Malignant vs. Benign"),
        Design("melanoma_vs_benign", ("benign", "melanoma"),
               {"melanoma": "melanoma", "bcc": None, "benign": "benign"},
               "Melanoma vs. Benign"),
        Design("melanoma_vs_bcc_vs_benign", ("benign", "bcc", "melanoma"),
               {"melanoma": "melanoma", "bcc": "bcc", "benign": "benign"},
               "Melanoma vs. Carcinoma vs. Benign"),
    )
}


def get_design(name: str) -> Design:
    """Look a design up by name; an unknown name is an error listing the known ones."""
    try:
        return DESIGNS[name]
    except KeyError:
        raise PipelineError(f"unknown design {name!r}. Known designs: {', '.join(DESIGNS)}.") from None


def apply_design(manifest: pd.DataFrame, name: str) -> pd.DataFrame:
    """Label the images a design keeps.

    Args:
        manifest: manifest table with at least columns ``image`` and ``category``.
        name: design name.

    Returns:
        The kept rows of ``manifest`` (original order, index reset) with a new column ``label``
        (one of the design's classes) and ``y`` (the label's index in ``Design.classes``).
    """
    design = get_design(name)
    unknown = sorted(set(manifest["category"].astype(str)) - set(design.mapping))
    if unknown:
        rows = manifest.index[manifest["category"].astype(str).isin(unknown)].tolist()[:5]
        raise PipelineError(
            f"design {name!r} needs a skin-lesion category (one of {', '.join(design.mapping)}) for "
            f"every image; got {unknown} in manifest rows {rows} (0-based). Is this a skin-lesion "
            "manifest? Retinopathy manifests have no labelling designs.")
    labels = manifest["category"].astype(str).map(design.mapping)
    kept = manifest.loc[labels.notna()].copy()
    kept["label"] = labels[labels.notna()].astype(str)
    kept["y"] = kept["label"].map({c: i for i, c in enumerate(design.classes)}).astype(int)
    return kept.reset_index(drop=True)


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Class counts of every design: one row per design, columns per class, plus kept/removed."""
    rows = []
    for name, design in DESIGNS.items():
        kept = apply_design(manifest, name)
        counts = kept["label"].value_counts()
        row = {"design": name}
        row.update({c: int(counts.get(c, 0)) for c in ("benign", "malignant", "melanoma", "bcc")})
        row["kept"] = len(kept)
        row["removed"] = len(manifest) - len(kept)
        rows.append(row)
    return pd.DataFrame(rows).set_index("design")

