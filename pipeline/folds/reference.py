"""Import the reference implementation's folds into ``folds.csv``, reporting every inconsistency.

The reference implementation (Menegola et al., 2017) ships, per protocol, a label table
(CSV ``image,level`` with a header) and a YAML mapping ``Fold_1 … Fold_10``, each a list of two
lists of image file names: train on one list, test on the other. Consecutive folds are meant to be
the same partition with the lists swapped (repeat 1 = Fold_1/Fold_2, ...); this module does not
assume it but detects swapped pairs, and writes one repeat per distinct partition, half 1 = the
first list of the partition's first fold.

Names: the YAML lists file names and the table image ids, so a name matches a row exactly when it
equals the id or the id plus an image extension (``aal002.tiff`` for ``aal002``). Other names are
matched after normalising (surrounding whitespace, leading folders, any extension, case) and the
normalisation used is reported. Everything found is reported, grouped by kind (``KINDS``); nothing
is fixed silently: names that match nothing, images in both lists of a fold, and images a design
removes are left out of the output and reported.

The command (``pipeline.commands.folds_import``): ``python -m pipeline folds-import --labels CSV --folds YAML --out folds.csv
[--manifest manifest.csv --design NAME] [--strict]``. Exit status 0 with the report, or 2 under
``--strict`` when anything was found (and nothing is written then).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from itertools import combinations
from typing import Callable

import pandas as pd
import yaml

from pipeline.errors import PipelineError
from pipeline.folds.table import COLUMNS, check_folds

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif")
# Tried in this order; a reported normalisation is the smallest set of these that makes a match.
_NORMALISATIONS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("whitespace", str.strip),
    ("leading folders", lambda s: re.split(r"[\\/]", s)[-1]),
    ("extension", lambda s: os.path.splitext(s)[0]),
    ("case", str.lower),
)
KINDS = {
    "malformed_fold": "folds that are not a list of two lists of names (left out)",
    "duplicate_label": "images listed more than once in the label table",
    "unknown_name": "names in the folds that match no label row (left out)",
    "ambiguous_name": "names that match several entries after normalising (left out)",
    "normalised_name": "names that match a label row only after normalising",
    "unused_label": "images in the label table but in no fold",
    "duplicate_in_list": "images listed twice in the same list of a fold",
    "in_both_lists": "images in both lists of a fold (left out of that repeat)",
    "missing_from_fold": "images some folds use but this fold lacks",
    "duplicate_partition": "folds that repeat another fold's partition (also with lists swapped)",
    "unpaired_fold": "folds without a partner holding the same lists swapped",
    "not_in_manifest": "label-table images that match no manifest image (left out)",
    "normalised_manifest_name": "label-table images matching the manifest only after normalising",
    "removed_by_design": "images the design removes (left out)",
    "split_group": "groups (lesions/patients) split across the halves of a repeat",
    "check_folds": "invariants of `pipeline.folds.crossval.check_folds` that the imported folds fail",
}


@dataclass(frozen=True)
class Issue:
    """One inconsistency found by the import.

    Attributes:
        kind: one of ``KINDS``.
        message: what was found, with counts.
        examples: a few of the names concerned.
    """

    kind: str
    message: str
    examples: tuple[str, ...] = ()


def _issue(kind: str, message: str, names=()) -> Issue:
    return Issue(kind, message, tuple(str(n) for n in list(names)[:5]))


def _strip_image_extension(name: str) -> str:
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name


def _match(names, targets, *, unknown: str, normalised: str, what: str, against: str
           ) -> tuple[dict, list[Issue]]:
    """Map ``names`` to ``targets``; report the names that needed normalising or failed."""
    targets = list(dict.fromkeys(targets))
    exact = set(targets)
    by_key: dict[str, list[str]] = {}
    for target in targets:
        by_key.setdefault(_normalise(target, _NORMALISATIONS), []).append(target)
    mapping, missing, ambiguous, how = {}, [], [], {}
    for name in dict.fromkeys(names):
        if name in exact or _strip_image_extension(name) in exact:
            mapping[name] = name if name in exact else _strip_image_extension(name)
            continue
        candidates = by_key.get(_normalise(name, _NORMALISATIONS), [])
        if len(candidates) != 1:
            (ambiguous if candidates else missing).append(name)
            continue
        mapping[name] = target = candidates[0]
        for steps in (s for r in range(1, 5) for s in combinations(_NORMALISATIONS, r)):
            a, b = _normalise(name, steps), _normalise(target, steps)
            if a == b or _strip_image_extension(a) == b:
                how.setdefault(" + ".join(n for n, _ in steps), []).append(name)
                break
    issues = []
    if missing:
        issues.append(_issue(unknown, f"{len(missing)} {what} match nothing in {against}", missing))
    if ambiguous:
        issues.append(_issue("ambiguous_name", f"{len(ambiguous)} {what} match several entries of "
                             f"{against} after normalising", ambiguous))
    issues += [_issue(normalised, f"{len(found)} {what} match {against} only after normalising: "
                      f"{steps}",
                      [f"{n!r} -> {mapping[n]!r}" for n in found]) for steps, found in how.items()]
    return mapping, issues


def _normalise(name: str, steps) -> str:
    for _, step in steps:
        name = step(name)
    return name


def _read_labels(path) -> list[str]:
    if not os.path.isfile(path):
        raise PipelineError(f"label table {path} not found; pass the reference CSV "
                            "(`image,level`).")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"cannot read label table {path} as CSV ({exc}); expected a header "
                            "`image,level` and one row per image.") from None
    if "image" not in table.columns:
        raise PipelineError(f"label table {path} has no column 'image'; expected the header "
                            f"`image,level`, found {list(table.columns)}.")
    return table["image"].tolist()


def _read_folds(path) -> tuple[dict[str, tuple[list, list]], list[Issue]]:
    if not os.path.isfile(path):
        raise PipelineError(f"folds file {path} not found; pass the reference YAML (Fold_1 ...).")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise PipelineError(f"cannot read {path} as YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise PipelineError(f"{path} must map fold names (Fold_1, Fold_2, ...) to two lists of "
                            f"image file names; got {type(data).__name__}.")
    folds, bad = {}, []
    for name, value in data.items():
        if (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v)
                        for v in value)):
            folds[str(name)] = tuple([str(x) for x in v] for v in value)
        else:
            bad.append(str(name))
    if not folds:
        raise PipelineError(f"no fold in {path} is a list of two lists of image file names.")
    issues = [_issue("malformed_fold", f"{len(bad)} folds are not a list of two lists of names: "
                     f"{', '.join(bad)}", bad)] if bad else []
    return folds, issues


def _partitions(folds: dict) -> tuple[list[tuple[str, ...]], list[Issue]]:
    """Group folds by partition; returns the folds of each distinct partition, first fold first."""
    sides = {f: (frozenset(a), frozenset(b)) for f, (a, b) in folds.items()}
    groups: dict[frozenset, list[str]] = {}
    for fold, (a, b) in sides.items():
        groups.setdefault(frozenset((a, b)), []).append(fold)
    issues, members = [], []
    for group in groups.values():
        first = group[0]
        swapped = [f for f in group[1:] if sides[f] == sides[first][::-1]]
        partner = swapped[:1]
        for extra in (f for f in group[1:] if f not in partner):
            how = "with the lists swapped" if extra in swapped else "with the same lists"
            issues.append(_issue("duplicate_partition", f"{extra} repeats the partition of {first} "
                                 f"{how}", [extra]))
        if not partner:
            issues.append(_issue("unpaired_fold", f"{first} has no fold with its lists swapped"
                                 + _nearest(first, sides), [first]))
        members.append(tuple([first] + partner))
    return members, issues


def _nearest(fold: str, sides: dict) -> str:
    a, b = sides[fold]
    others = [(len(a ^ d) + len(b ^ c), f) for f, (c, d) in sides.items() if f != fold]
    if not others:
        return ""
    distance, other = min(others)
    return f"; nearest swap: {other}, differing in {distance} image placements"


def import_reference_folds(labels_path: str | os.PathLike, folds_path: str | os.PathLike,
                           manifest: pd.DataFrame | None = None, design: str | None = None
                           ) -> tuple[pd.DataFrame, list[Issue]]:
    """Read the reference label table and fold YAML into a folds table, reporting inconsistencies.

    Args:
        labels_path: label table, CSV with header ``image,level``.
        folds_path: YAML mapping ``Fold_N`` to two lists of image file names.
        manifest: if given, image ids are mapped to the manifest's and groups are checked.
        design: if given (needs ``manifest``), removed images are left out and the result is
            checked with ``pipeline.folds.table.check_folds``.

    Returns:
        (folds, issues): the table ``image, repeat, half`` (one repeat per distinct partition, in
        order of first appearance) and every inconsistency found, grouped by kind in ``KINDS``
        order.
    """
    folds, _, issues = read_reference_folds(labels_path, folds_path, manifest, design)
    return folds, issues


def read_reference_folds(labels_path: str | os.PathLike, folds_path: str | os.PathLike,
                         manifest: pd.DataFrame | None = None, design: str | None = None
                         ) -> tuple[pd.DataFrame, list[list[str]], list[Issue]]:
    """``import_reference_folds`` plus, per repeat, the reference fold names it merges.

    Returns:
        (folds, members, issues): ``members[r]`` lists the ``Fold_N`` names of repeat r + 1.
    """
    if design is not None and manifest is None:
        raise PipelineError("--design needs --manifest: the design reads each image's category.")
    labels = _read_labels(labels_path)
    raw, issues = _read_folds(folds_path)
    repeated = pd.Series(labels)[pd.Series(labels).duplicated()].unique()
    if len(repeated):
        issues.append(_issue("duplicate_label", f"{len(repeated)} images appear more than once in "
                             f"{labels_path}", repeated))
    names = [n for lists in raw.values() for names in lists for n in names]
    mapping, found = _match(names, labels, unknown="unknown_name", normalised="normalised_name",
                            what=f"names in {folds_path}", against=str(labels_path))
    issues += found
    folds = {f: tuple([mapping[n] for n in names if n in mapping] for names in lists)
             for f, lists in raw.items()}
    used = set().union(*(set(a) | set(b) for a, b in folds.values()))
    unused = [i for i in dict.fromkeys(labels) if i not in used]
    if unused:
        issues.append(_issue("unused_label", f"{len(unused)} images of {labels_path} are in no "
                             "fold", unused))
    for fold, (a, b) in folds.items():
        twice = [i for lst in (a, b) for i in pd.Series(lst)[pd.Series(lst).duplicated()].unique()]
        in_b = set(b)
        both = [i for i in dict.fromkeys(a) if i in in_b]
        lacking = sorted(used - set(a) - set(b))
        for kind, items, text in (("duplicate_in_list", twice, "listed twice in one list"),
                                  ("in_both_lists", both, "in both lists"),
                                  ("missing_from_fold", lacking, "missing (used by other folds)")):
            if items:
                issues.append(_issue(kind, f"{fold}: {len(items)} images {text}", items))
    members, found = _partitions(folds)
    issues += found
    rows = []
    for repeat, group in enumerate(members, start=1):
        a, b = folds[group[0]]
        both = set(a) & set(b)
        for half, images in ((1, a), (2, b)):
            rows += [(i, repeat, half) for i in dict.fromkeys(images) if i not in both]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if manifest is not None:
        table, found = _against_manifest(table, manifest, design, folds_path)
        issues += found
    order = list(KINDS)
    return table, members, sorted(issues, key=lambda issue: order.index(issue.kind))


def _against_manifest(table, manifest, design, source):
    ids = manifest["image"].astype(str)
    mapping, issues = _match(table["image"], ids, unknown="not_in_manifest",
                             normalised="normalised_manifest_name", what="label-table images",
                             against="the manifest")
    table = table[table["image"].isin(list(mapping))]
    table = table.assign(image=table["image"].map(mapping))
    if design is not None:
        from pipeline.data.designs import apply_design

        kept = set(apply_design(manifest, design)["image"].astype(str))
        removed = table["image"][~table["image"].isin(kept)].unique()
        if len(removed):
            issues.append(_issue("removed_by_design", f"{len(removed)} images are removed by "
                                 f"design {design!r}", removed))
        table = table[table["image"].isin(kept)]
    groups = table.merge(manifest.assign(image=ids)[["image", "group"]], on="image")
    halves = groups.groupby(["repeat", "group"])["half"].nunique()
    split = halves[halves > 1].reset_index()
    if len(split):
        issues.append(_issue("split_group", f"{len(split)} (repeat, group) pairs have images in "
                             "both halves", [f"repeat {r}: {g}" for r, g in
                                             zip(split["repeat"], split["group"])]))
    table = table.reset_index(drop=True)
    if design is not None:
        try:
            check_folds(table, manifest, design, source=str(source))
        except PipelineError as exc:
            issues.append(_issue("check_folds", str(exc)))
    return table, issues


def format_report(issues: list[Issue]) -> str:
    """The issues as text, grouped by kind with counts and examples."""
    if not issues:
        return "no inconsistencies found"
    lines = []
    for kind in KINDS:
        found = [i for i in issues if i.kind == kind]
        if found:
            lines.append(f"{kind} ({len(found)}): {KINDS[kind]}")
            for issue in found:
                lines.append(f"  - {issue.message}")
                if issue.examples:
                    lines.append(f"    e.g. {', '.join(issue.examples)}")
    return "\n".join(lines)

