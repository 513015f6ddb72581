"""The one table that maps every published diagnosis string to a category.

Categories are what the labelling designs (``pipeline.data.designs``) work on: ``melanoma``, ``bcc``
(basal cell carcinoma) and ``benign``. The paper's negative class is "all other diagnoses", so
``benign`` here means *neither melanoma nor basal cell carcinoma*: it also holds the other
malignancies and pre-malignancies (squamous cell carcinoma, actinic keratosis, Merkel cell
carcinoma, sarcomas...). The manifest keeps the fine ``diagnosis`` beside the category, so folds
still balance on it and a later design can single them out.

Matching ignores case and runs of whitespace. A value missing from the table is an error that names
it, the file and the row; nothing falls back to ``benign``. A few values do not decide the category
by themselves (ISIC 2020's ``unknown``, the ISIC Archive's top level ``Malignant``, ISIC 2016's
``malignant``): they are marked ``FROM_LABEL`` and are decided, explicitly, by the benign/malignant
label the dataset publishes for that row (see ``categorize``).

Hierarchical diagnoses (the ISIC Archive's ``diagnosis_1`` .. ``diagnosis_5``, most general first)
go through ``categorize_levels``: the most specific level found in the table decides. The ISIC
taxonomy is a tree, so a subtype not listed here (``Nevus, Spitz``) takes the category of its listed
parent (``Nevus``); only parents whose every child shares one category are listed as deciding.
"""

from __future__ import annotations

from typing import Sequence

from pipeline.errors import PipelineError

MELANOMA = "melanoma"
BCC = "bcc"
BENIGN = "benign"
CATEGORIES = (MELANOMA, BCC, BENIGN)
# Kaggle Diabetic Retinopathy's grades, the categories of a Retinopathy manifest.
GRADES = ("0", "1", "2", "3", "4")
MANIFEST_CATEGORIES = CATEGORIES + GRADES
# The Interactive Atlas's `level_of_diagnostic_difficulty` (Table 4 of the paper).
DIFFICULTY_LEVELS = ("low", "medium", "high")

# Patient metadata, the manifest columns Kim & Rocheteau (2020) fuse with the image: approximate
# age in years, sex, body site of the lesion. Empty means unknown.
METADATA_KEYS = ("age", "sex", "site")
# The values that mean "unknown" in published tables besides the empty string.
UNKNOWN_VALUES = ("", "unknown", "nan", "na", "n/a", "none")

# Marks values whose category comes from the row's published benign/malignant label.
FROM_LABEL = "from-label"

_BENIGN_LABELS = frozenset({"benign", "0", "0.0"})
_MALIGNANT_LABELS = frozenset({"malignant", "1", "1.0"})

# Written as published; keys are normalised (``normalize``) when the module loads.
_TABLE: dict[str, str] = {
    # --- derm7pt (Interactive Atlas of Dermoscopy), meta/meta.csv `diagnosis` ---
    "basal cell carcinoma": BCC,
    "melanoma": MELANOMA,
    "melanoma (in situ)": MELANOMA,
    "melanoma (less than 0.76 mm)": MELANOMA,
    "melanoma (0.76 to 1.5 mm)": MELANOMA,
    "melanoma (more than 1.5 mm)": MELANOMA,
    "melanoma metastasis": MELANOMA,
    "blue nevus": BENIGN,
    "clark nevus": BENIGN,
    "combined nevus": BENIGN,
    "congenital nevus": BENIGN,
    "dermal nevus": BENIGN,
    "recurrent nevus": BENIGN,
    "reed or spitz nevus": BENIGN,
    "dermatofibroma": BENIGN,
    "lentigo": BENIGN,
    "melanosis": BENIGN,
    # derm7pt's catch-all; the paper's negative class is every diagnosis other than melanoma/BCC.
    "miscellaneous": BENIGN,
    "seborrheic keratosis": BENIGN,
    "vascular lesion": BENIGN,
    # --- ISIC 2016 Part 3 labels; also the ISIC Archive's `diagnosis_1` level ---
    "benign": BENIGN,
    # ISIC 2016 says only "malignant"; its adapter states that this means melanoma (the Part 3 task
    # is melanoma vs not). In the ISIC Archive it can be any malignancy, so the label decides.
    "malignant": FROM_LABEL,
    # --- ISIC 2020 `diagnosis` ---
    "nevus": BENIGN,
    "lentigo NOS": BENIGN,
    "lichenoid keratosis": BENIGN,
    "solar lentigo": BENIGN,
    "cafe-au-lait macule": BENIGN,
    "café-au-lait macule": BENIGN,
    # Atypical / indeterminate melanocytic lesions are not melanoma: negative class.
    "atypical melanocytic proliferation": BENIGN,
    # ISIC 2020 publishes `benign_malignant` and `target` for these; that label decides.
    "unknown": FROM_LABEL,
    # --- ISIC Archive, flat `diagnosis` field (older isic-cli exports) ---
    # Non-melanoma, non-BCC malignancies and pre-malignancies: negative class (see module doc).
    "squamous cell carcinoma": BENIGN,
    "actinic keratosis": BENIGN,
    "merkel cell carcinoma": BENIGN,
    "AIMP": BENIGN,
    "atypical spitz tumor": BENIGN,
    "acrochordon": BENIGN,
    "angiofibroma or fibrous papule": BENIGN,
    "angiokeratoma": BENIGN,
    "angioma": BENIGN,
    "clear cell acanthoma": BENIGN,
    "ephelis": BENIGN,
    "epidermal nevus": BENIGN,
    "lentigo simplex": BENIGN,
    "mucosal melanosis": BENIGN,
    "neurofibroma": BENIGN,
    "nevus spilus": BENIGN,
    "pigmented benign keratosis": BENIGN,
    "pyogenic granuloma": BENIGN,
    "scar": BENIGN,
    "sebaceous adenoma": BENIGN,
    "sebaceous hyperplasia": BENIGN,
    "verruca": BENIGN,
    # Could be benign or malignant, and if malignant, of any kind: the label decides.
    "adnexal tumor": FROM_LABEL,
    "other": FROM_LABEL,
    # --- ISIC Archive taxonomy, `diagnosis_1` .. `diagnosis_5` (newer isic-cli exports) ---
    # Level 1: "Benign" above; "Malignant" above; "Indeterminate" holds only actinic keratoses and
    # atypical melanocytic lesions, none of them melanoma or BCC.
    "Indeterminate": BENIGN,
    # Level 2 groups whose every member has one category. Not listed on purpose:
    # "Malignant adnexal epithelial proliferations - Follicular" (BCC but also baso-squamous and
    # other carcinomas) and "Collision - At least one malignant proliferation" (could be anything).
    "Malignant melanocytic proliferations (Melanoma)": MELANOMA,
    "Malignant epidermal proliferations": BENIGN,
    "Malignant adnexal epithelial proliferations - Apocrine or Eccrine": BENIGN,
    "Malignant adnexal epithelial proliferations - Sebaceous": BENIGN,
    "Malignant soft tissue proliferations - Adipocytic": BENIGN,
    "Malignant soft tissue proliferations - Cartilagenous and ossifying": BENIGN,
    "Malignant soft tissue proliferations - Fibro-histiocytic": BENIGN,
    "Malignant soft tissue proliferations - Muscle tissue or myofibroblastic": BENIGN,
    "Malignant soft tissue proliferations - Myoepithelial": BENIGN,
    "Malignant soft tissue proliferations - Neural": BENIGN,
    "Malignant soft tissue proliferations - Unknown or other histiogenesis": BENIGN,
    "Malignant soft tissue proliferations - Vascular": BENIGN,
    "Lymphocytic proliferations - B-Cell": BENIGN,
    "Lymphocytic proliferations - T-Cell/NK": BENIGN,
    "Merkel cell proliferation": BENIGN,
    "Skin metastasis of internal solid cancer - non-hematological": BENIGN,
    "Indeterminate epidermal proliferations": BENIGN,
    "Indeterminate melanocytic proliferations": BENIGN,
    # Level 3 (subtypes at levels 4-5 defer to these).
    "Melanoma Invasive": MELANOMA,
    "Melanoma in situ": MELANOMA,
    "Melanoma, NOS": MELANOMA,
    "Basal cell carcinoma": BCC,
    "Squamous cell carcinoma, NOS": BENIGN,
    "Squamous cell carcinoma in situ": BENIGN,
    "Squamous cell carcinoma, Invasive": BENIGN,
    "Keratoacanthoma": BENIGN,
    "Solar or actinic keratosis": BENIGN,
    "Atypical melanocytic neoplasm": BENIGN,
    "Atypical intraepithelial melanocytic proliferation": BENIGN,
    "Lichen planus like keratosis": BENIGN,
    "Hemangioma": BENIGN,
    "Lymphangioma": BENIGN,
}


def normalize(value: str) -> str:
    """The table's key for a published value: case-folded, whitespace runs collapsed, stripped."""
    return " ".join(str(value).split()).casefold()


def _build(table: dict[str, str]) -> dict[str, str]:
    built: dict[str, str] = {}
    for key, category in table.items():
        norm = normalize(key)
        if norm in built and built[norm] != category:
            raise AssertionError(f"vocabulary: {key!r} is listed twice with different categories")
        built[norm] = category
    return built


VOCABULARY: dict[str, str] = _build(_TABLE)


def known() -> list[str]:
    """Every diagnosis the table knows, normalised and sorted."""
    return sorted(VOCABULARY)


def _unknown_error(value: str, where: str, others: Sequence[str] = ()) -> PipelineError:
    also = ""
    if others:
        also = f" (its less specific levels {', '.join(map(repr, others))} are not known either)"
    return PipelineError(
        f"unknown diagnosis {value!r}{also} in {where}: add it to pipeline/data/vocabulary.py "
        f"(known: {', '.join(known())})")


def _from_label(value: str, label: str | None, malignant_means: str | None, where: str) -> str:
    """Category of a ``FROM_LABEL`` value, decided by the row's published benign/malignant label."""
    if label is None:
        raise PipelineError(
            f"diagnosis {value!r} in {where} does not say which category it is, and this dataset "
            "publishes no benign/malignant label to decide it: give the row a specific diagnosis")
    norm = normalize(label)
    if norm in _BENIGN_LABELS:
        return BENIGN
    if norm in _MALIGNANT_LABELS:
        if malignant_means is not None:
            return malignant_means
        raise PipelineError(
            f"diagnosis {value!r} in {where} is labelled {label!r} but does not say which "
            "malignancy (melanoma, basal cell carcinoma or another): give the row a specific "
            "diagnosis, or remove it")
    raise PipelineError(
        f"diagnosis {value!r} in {where} needs a benign/malignant label to be categorised; "
        f"the label is {label!r}, allowed: benign, malignant (or 0, 1)")


def categorize_levels(levels: Sequence[str], *, file: str, row: int, label: str | None = None,
                      malignant_means: str | None = None) -> str:
    """Category of a hierarchical diagnosis (ISIC Archive ``diagnosis_5`` .. ``diagnosis_1``).

    The most specific level with a definite category in the table decides; a level marked
    ``FROM_LABEL`` decides (through ``label``) only when no level has a definite category.

    Args:
        levels: diagnosis values, most specific first; empty strings are skipped.
        file: the file the row comes from, for error messages.
        row: the row's number in ``file`` (header = row 1), for error messages.
        label: the row's published benign/malignant label (``benign``/``malignant``/``0``/``1``),
            or ``None`` when the dataset has none.
        malignant_means: the category a ``malignant`` label stands for in this dataset, when the
            dataset defines one (ISIC 2016 Part 3: melanoma); ``None`` makes it an error.

    Returns:
        ``melanoma``, ``bcc`` or ``benign``.

    Raises:
        PipelineError: no level is in the table, or a ``FROM_LABEL`` value cannot be decided.
    """
    where = f"{file}, row {row}"
    given = [str(v).strip() for v in levels if str(v).strip()]
    if not given:
        raise PipelineError(f"no diagnosis in {where}: every row needs one; fill it in or remove "
                            "the row")
    found = [(v, VOCABULARY[normalize(v)]) for v in given if normalize(v) in VOCABULARY]
    if not found:
        raise _unknown_error(given[0], where, given[1:])
    for _value, category in found:
        if category != FROM_LABEL:
            return category
    return _from_label(found[0][0], label, malignant_means, where)


def categorize(diagnosis: str, *, file: str, row: int, label: str | None = None,
               malignant_means: str | None = None) -> str:
    """Category of one published diagnosis string.

    Args:
        diagnosis: the diagnosis as published (any case, any spacing).
        file: the file the row comes from, for error messages.
        row: the row's number in ``file`` (header = row 1), for error messages.
        label: the row's published benign/malignant label, used only for ``FROM_LABEL`` values.
        malignant_means: the category a ``malignant`` label stands for in this dataset, if any.

    Returns:
        ``melanoma``, ``bcc`` or ``benign``.

    Raises:
        PipelineError: ``unknown diagnosis 'xyz' in <file>, row <n>: add it to
            pipeline/data/vocabulary.py (known: ...)``, or a ``FROM_LABEL`` value the label cannot
            decide.
    """
    return categorize_levels([diagnosis], file=file, row=row, label=label,
                             malignant_means=malignant_means)
