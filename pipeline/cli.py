"""Command line: ``python -m pipeline COMMAND [options]`` (also installed as ``pipeline``).

Each command lives in the module of its stage, which defines ``add_arguments(parser)`` and
``run(args) -> int | None``. Modules are imported only when their command runs, so ``svm``,
``report`` and the data commands never import TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# command -> (module, function prefix, one-line help). The function names are
# f"{prefix}add_arguments" and f"{prefix}run" so one module can hold several commands.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "stamps": ("pipeline.config", "", "validate an experiment and refresh its per-stage stamps"),
    "data": ("pipeline.datasets", "", "turn a published dataset into a manifest table"),
    "designs": ("pipeline.designs", "", "print class counts per labelling design"),
    "folds": ("pipeline.folds", "", "write 5x2 cross-validation folds for a design"),
    "folds-import": ("pipeline.folds_import", "", "import the reference implementation's folds"),
    "images": ("pipeline.image_cache", "", "decode and resize images into the image cache"),
    "demo-data": ("pipeline.demo_data", "", "write the synthetic demo datasets"),
    "networks": ("pipeline.networks", "", "list the registered networks"),
    "convert-matconvnet": ("pipeline.matconvnet", "", "convert a MatConvNet .mat to Keras weights"),
    "pretrain": ("pipeline.pretrain", "", "build the source network of each transfer source"),
    "finetune": ("pipeline.finetune", "", "fine-tune source networks on each fold"),
    "extract": ("pipeline.extract", "", "extract fc7 features into features_cache/"),
    "svm": ("pipeline.classify", "", "train and score the linear SVM of every cell"),
    "report": ("pipeline.report", "", "write tables, plots and report.md"),
    "compare": ("pipeline.report", "compare_", "print the transfer-source comparison"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m pipeline COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`python -m pipeline COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    from pipeline.errors import PipelineError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}. Known commands: {', '.join(COMMANDS)}.",
              file=sys.stderr)
        return 2
    module_name, prefix, help_ = COMMANDS[name]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m pipeline {name}", description=help_)
    getattr(module, f"{prefix}add_arguments")(parser)
    args = parser.parse_args(rest)
    try:
        status = getattr(module, f"{prefix}run")(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
