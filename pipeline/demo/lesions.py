"""What a synthetic demo lesion is: its diagnosis mix, seven-point criteria, atypia and meta row.

``lesion_plan`` samples a lesion's seven-point criteria and atypia, ``seven_point_score`` scores
them, ``patient_row`` samples the rest of its derm7pt meta row (elevation, location, sex,
management). ``pipeline.demo.skin`` paints a plan. Everything is drawn from the generator passed
in, so a seed fixes every lesion.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from pipeline.data.vocabulary import DIFFICULTY_LEVELS
from pipeline.errors import PipelineError

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


# Share of each difficulty level in %, as in the Atlas (Menegola et al. 2017, Table 4).
DIFFICULTY_SHARES = dict(zip(DIFFICULTY_LEVELS, (38.1, 36.3, 25.6)))


# Difficulty is graded overlap, never inversion. A lesion's hidden atypia x (what its picture shows:
# asymmetry, border, colours, network, dots, streaks, veil) is drawn as x ~ N(0.5 + sep/2, SPREAD)
# for melanomas and N(0.5 - sep/2, SPREAD) for benign lesions, clipped to [0.02, 0.98]; the
# separation sep shrinks with difficulty so that the AUC of x itself is Phi(sep / (SPREAD sqrt 2)),
# DESIGNED_AUC below. Basal cell carcinomas' own cues (arborizing vessels, blue-grey nests) follow
# the same rule through a second hidden variable b, against every other lesion.
DESIGNED_AUC = {"low": 0.99, "medium": 0.90, "high": 0.70}
SPREAD = 0.12
SEPARATION = {level: math.sqrt(2) * SPREAD * NormalDist().inv_cdf(auc)
              for level, auc in DESIGNED_AUC.items()}


LOCATIONS = {"back": 30, "lower limbs": 20, "upper limbs": 11, "abdomen": 10, "chest": 10,
             "head neck": 11, "buttocks": 5, "genital areas": 3}


def lesion_plan(rng: np.random.Generator, diagnosis: str, difficulty: str) -> dict:
    """Sample the seven-point criteria and atypia of one lesion.

    Args:
        rng: random generator.
        diagnosis: a derm7pt diagnosis string (a key of ``DIAGNOSES``).
        difficulty: ``low``, ``medium`` or ``high``.

    Returns:
        dict with ``diagnosis``, ``difficulty``, ``kind`` (how it is drawn), ``x`` (atypia in
        0..1, see ``DESIGNED_AUC``), ``b`` (basal-cell cues in 0..1) and ``criteria`` (the seven
        derm7pt criteria columns -> value).
    """
    if diagnosis not in DIAGNOSES or difficulty not in DIFFICULTY_SHARES:
        raise PipelineError(f"lesion: diagnosis must be one of {sorted(DIAGNOSES)} and "
                            f"difficulty one of {list(DIFFICULTY_SHARES)}; got {diagnosis!r}, "
                            f"{difficulty!r}. Use the derm7pt strings.")
    kind, sep = DIAGNOSES[diagnosis][1], SEPARATION[difficulty]
    if kind == "misc" and rng.random() < 0.5:
        kind = "melanocytic"   # half of the miscellanea are pigmented (melanosis, combined...)
    depth = {"melanoma (in situ)": 0.8, "melanoma (0.76 to 1.5 mm)": 1.15}.get(diagnosis, 1.0)
    melanoma, bcc = diagnosis.startswith("melanoma"), kind == "bcc"
    x = float(np.clip(rng.normal(0.5 + (sep if melanoma else -sep) / 2, SPREAD), 0.02, 0.98))
    b = float(np.clip(rng.normal(0.5 + (sep if bcc else -sep) / 2, SPREAD), 0.02, 0.98))
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
        c["vascular_structures"] = "arborizing" if yes(np.clip(1.6 * b - 0.1, 0, 1)) else "absent"
        # blue-grey ovoid nests (drawn with the pigmentation); every BCC shows vessels or nests
        c["pigmentation"] = ("localized irregular" if yes(b) or c["vascular_structures"] ==
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
    if kind in ("sk", "df", "vascular", "misc") and yes(np.clip(1.6 * b - 0.1, 0, 1)):
        c["vascular_structures"] = "arborizing"   # BCC-like vessels, commoner when hard
    return {"diagnosis": diagnosis, "difficulty": difficulty, "kind": kind, "x": x, "b": b,
            "criteria": c}


def seven_point_score(criteria: dict) -> int:
    """The seven-point checklist score: 2 per major criterion, 1 per minor one."""
    major = (criteria["pigment_network"] == "atypical") + (
        criteria["blue_whitish_veil"] == "present") + (
        criteria["vascular_structures"] in ("dotted", "linear irregular"))
    minor = (criteria["streaks"] == "irregular") + ("irregular" in criteria["pigmentation"]) + (
        criteria["dots_and_globules"] == "irregular") + (
        criteria["regression_structures"] != "absent")
    return int(2 * major + minor)


def patient_row(rng, diagnosis, difficulty, acral) -> dict:
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
