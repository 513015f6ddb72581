"""``python -m pipeline folds-import``: the reference implementation's fold files as ``folds.csv``.

Reads the label table and fold YAML (``pipeline.folds.reference``), prints every inconsistency it
finds and the fold names merged into each repeat, and writes the folds (``--strict``: nothing is
written when any inconsistency was found).
"""

from __future__ import annotations

import argparse

from pipeline.cache.files import write_csv
from pipeline.data.manifest import read_manifest
from pipeline.folds.reference import format_report, read_reference_folds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", required=True, help="reference label table (image,level)")
    parser.add_argument("--folds", required=True, help="reference fold YAML (Fold_1 ... Fold_10)")
    parser.add_argument("--out", required=True, help="folds.csv to write")
    parser.add_argument("--manifest", help="manifest.csv: map ids to it and check groups")
    parser.add_argument("--design", help="labelling design: drop removed images, run check_folds")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 2, writing nothing, if any inconsistency was found")


def run(args: argparse.Namespace) -> int:
    manifest = None
    if args.manifest:
        manifest = read_manifest(args.manifest)
    table, members, issues = read_reference_folds(args.labels, args.folds, manifest, args.design)
    print(format_report(issues))
    for repeat, group in enumerate(members, start=1):
        print(f"repeat {repeat}: {' + '.join(group)}")
    if issues and args.strict:
        print(f"--strict: {len(issues)} inconsistencies found; {args.out} not written.")
        return 2
    write_csv(args.out, table)
    print(f"wrote {args.out}: {table['repeat'].nunique()} repeats, {len(table)} rows")
    return 0
