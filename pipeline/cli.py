"""Command line: ``python -m pipeline COMMAND [options]`` (also installed as ``pipeline``).

Stages (``pipeline.stages``, one module per make target) and standalone commands
(``pipeline.commands``) each define ``add_arguments(parser)`` and ``run(args) -> int | None``.
Modules are imported only when their command runs, so ``svm``, ``report`` and the data commands
never import TensorFlow. A ``PipelineError`` is printed as one line (no traceback), exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

# command -> (module, one-line help). Each module defines ``add_arguments(parser)`` and
# ``run(args) -> int | None``. Stages (``pipeline.stages``, one per make target) read an experiment
# config; commands (``pipeline.commands``) take explicit files.
COMMANDS: dict[str, tuple[str, str]] = {
    "stamps": ("pipeline.experiment.stamps", "validate an experiment, refresh its stamps and deps.mk"),
    "data": ("pipeline.stages.data", "turn a published dataset into a manifest table"),
    "folds": ("pipeline.stages.folds", "write 5x2 cross-validation folds for a design"),
    "pretrain": ("pipeline.stages.pretrain", "build the source network of each transfer source"),
    "finetune": ("pipeline.stages.finetune", "fine-tune source networks on each fold"),
    "features": ("pipeline.stages.features", "extract fc7 features into the feature cache"),
    "svm": ("pipeline.stages.svm", "train and score the linear SVM of every cell"),
    "report": ("pipeline.stages.report", "write tables, plots and report.md"),
    "compare": ("pipeline.stages.compare", "print the transfer-source comparison"),
    "explain": ("pipeline.stages.explain",
                "attribution maps (integrated gradients, Grad-CAM) of a cell's test images"),
    "export": ("pipeline.stages.export",
               "write one cell's trained model (network + SVM) as a self-contained folder"),
    "demo-data": ("pipeline.stages.demo_data", "write the synthetic demo datasets"),
    "designs": ("pipeline.commands.designs", "print class counts per labelling design"),
    "duplicates": ("pipeline.commands.duplicates",
                   "list candidate near-duplicate images of a manifest (perceptual hash)"),
    "folds-import": ("pipeline.commands.folds_import", "import the reference implementation's folds"),
    "images": ("pipeline.commands.images", "decode and resize images into the image cache"),
    "networks": ("pipeline.commands.networks", "list the registered networks"),
    "predict": ("pipeline.commands.predict",
                "score image files with an exported model folder (no experiment needed)"),
    "convert-matconvnet": ("pipeline.commands.convert_matconvnet",
                           "convert a MatConvNet .mat to Keras weights"),
    "convert-torch": ("pipeline.commands.convert_torch",
                      "convert a PyTorch state dict (.pth) to Keras weights, without torch"),
    "imagenet-top5": ("pipeline.commands.imagenet_top5",
                      "classify photographs with a network's ImageNet head (checks weights)"),
}
# Write failures that are the machine's state, not a bug: reported in one line, like bad input.
_IO_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# Older name of a command, still accepted.
ALIASES = {"extract": "features"}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m pipeline COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`python -m pipeline COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    from pipeline.errors import PipelineError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = ALIASES.get(argv[0], argv[0]), argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}. Known commands: {', '.join(COMMANDS)}.",
              file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m pipeline {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        status = module.run(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _IO_ERRORS:
            raise
        from pipeline.cache.files import io_error

        print(f"error: {io_error(exc, exc.filename or '.')}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
