"""The protocol's vocabulary: transfer sources and cells, written once and imported everywhere.

Menegola et al. (2017) compare four **transfer sources** (where a network's weights come from) and
whether the network is then **fine-tuned** on the target task; a source with or without fine-tuning
is a **cell** of their Table 1, named ``<source>`` or ``<source>+ft``:

| source        | starts from                | trained on the Retinopathy source task |
|---------------|----------------------------|----------------------------------------|
| ``none``      | the no-transfer init       | no                                     |
| ``retinopathy`` | the no-transfer init     | yes                                    |
| ``imagenet``  | ImageNet weights           | no                                     |
| ``double``    | ImageNet weights           | yes                                    |

``CELL_TITLES`` lists the 8 cells in the report's order (the paper's six, then the two that complete
the 4 x 2 grid) with their titles; ``ALL_CELLS`` is the grid in source order, ``TABLE1_CELLS`` the
paper's six. Result files store a cell as ``source`` and ``finetune`` columns; ``parse_bool`` reads
the latter.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCES = ("none", "retinopathy", "imagenet", "double")
IMAGENET_SOURCES = frozenset({"imagenet", "double"})
RETINOPATHY_SOURCES = frozenset({"retinopathy", "double"})
FINETUNED = "+ft"

CELL_TITLES = {
    "none+ft": "No Transfer",
    "retinopathy": "From Retinopathy, no FT",
    "retinopathy+ft": "From Retinopathy, with FT",
    "imagenet": "From ImageNet, no FT",
    "imagenet+ft": "From ImageNet, with FT",
    "double+ft": "Double Transfer, with FT",
    "none": "Random features, no FT",
    "double": "Double Transfer, no FT",
}
TABLE1_CELLS = tuple(CELL_TITLES)[:6]
ALL_CELLS = tuple(f"{s}{ft}" for s in SOURCES for ft in ("", FINETUNED))

_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def cell_name(source: str, finetune: bool) -> str:
    """A cell's name: the transfer source, with ``+ft`` when fine-tuned (``imagenet+ft``)."""
    return f"{source}{FINETUNED}" if finetune else str(source)


@dataclass(frozen=True)
class Cell:
    """One transfer protocol: a source network, fine-tuned on the target or not."""

    source: str
    finetune: bool

    @property
    def name(self) -> str:
        """``<source>`` or ``<source>+ft``, as in result files."""
        return cell_name(self.source, self.finetune)

    @property
    def title(self) -> str:
        """The report's title of the cell, e.g. "From ImageNet, with FT"."""
        return CELL_TITLES[self.name]

    @classmethod
    def parse(cls, text: str) -> "Cell":
        """The cell named ``text``; an unknown name raises ``ValueError`` listing the known ones."""
        if text not in CELL_TITLES:
            raise ValueError(f"unknown cell {text!r}; cells are {', '.join(ALL_CELLS)}")
        source, _, _ = text.partition("+")
        return cls(source, text.endswith(FINETUNED))


def per_training_half(source: str, finetune: bool) -> bool:
    """Whether a cell's features depend on the run's training half: fine-tuned cells, and the
    untrained ``none`` network, which is centred on the training half's mean (the test half's
    images must not set it)."""
    return finetune or source == "none"


def parse_bool(value: object) -> bool:
    """A ``finetune`` value as result files write it (True/False, also 1/0, any case).

    Raises:
        ValueError: for anything else.
    """
    if isinstance(value, bool):
        return value
    flag = _BOOLEANS.get(str(value).strip().lower())
    if flag is None:
        raise ValueError(f"{value!r} is not a boolean; write True or False")
    return flag


def pretrain_order(sources) -> list[str]:
    """The order in which ``pretrain`` builds sources: ``imagenet`` first, since ``double`` needs
    the same weights and one message then explains both when they are missing."""
    return sorted(sources, key=lambda s: (s != "imagenet", SOURCES.index(s)))
