"""The files an experiment's stages hand to each other, in its output folder, and their readers.

| file                         | written by  | what                                                   |
|------------------------------|-------------|--------------------------------------------------------|
| ``manifest.csv``             | ``data``    | target images that decoded (``skipped.csv`` beside it) |
| ``retinopathy_manifest.csv`` | ``data``    | source-task images, when a cell needs Retinopathy      |
| ``folds/<design>.csv``       | ``folds``   | 5x2 folds (or the official split) per design           |
| ``networks.json``            | ``pretrain``| source network entry (or why not run) per source       |
| ``finetuned.csv``            | ``finetune``| fine-tuned network entry per (source, design, fold)    |
| ``features.csv``             | ``features``| feature entry per network                              |
| ``predictions.csv``, ``metrics.csv`` | ``svm`` | the result-file contract                           |
| ``runs.csv``                 | ``svm``     | each run's provenance (training/test image digests)    |
| ``report.md`` + PNGs, ``comparisons.csv`` | ``report`` |                                           |

Entries themselves (images, networks, features) live in the content-keyed cache
(``features_cache/``). A reader that finds a file missing names the ``make`` target that writes it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.cache.files import read_json
from pipeline.compute.cluster import ComputeSettings
from pipeline.errors import PipelineError
from pipeline.experiment.config import Config
from pipeline.protocol import cell_name, parse_bool

MAKE_TARGET = {
    "manifest.csv": "data",
    "retinopathy_manifest.csv": "data",
    "folds": "folds",
    "networks.json": "pretrain",
    "finetuned.csv": "finetune",
    "features.csv": "features",
    "metrics.csv": "svm",
    "predictions.csv": "svm",
    "runs.csv": "svm",
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
    from pipeline.data.manifest import read_manifest

    return read_manifest(require(config, "manifest.csv"))


def retinopathy_manifest(config: Config) -> pd.DataFrame:
    """The Retinopathy source task's manifest."""
    from pipeline.data.manifest import read_manifest

    return read_manifest(require(config, "retinopathy_manifest.csv"))


def folds(config: Config, design: str, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The folds of one design, checked against the manifest and the experiment's scheme.

    Raises:
        PipelineError: the file breaks an invariant (``pipeline.folds.table.check_folds``), or it
            holds another number of repeats than ``folds.repeats`` (a repeat deleted by hand
            would silently drop runs), or another scheme than ``folds.scheme``.
    """
    from pipeline.folds.table import is_holdout, is_official, read_folds

    table = manifest(config) if table is None else table
    path = require(config, f"folds/{design}.csv")
    result = read_folds(path, table, design,
                        grouped=config["folds"]["holdout_grouping"] == "grouped")
    repeats = sorted(result["repeat"].unique().tolist())
    scheme = config["folds"]["scheme"]
    if (scheme == "holdout") != is_holdout(result):
        raise PipelineError(f"{path} {'is not' if scheme == 'holdout' else 'is'} a hold-out split "
                            f"(with a validation part), but `folds.scheme` in "
                            f"{config.path} is {scheme!r}; rerun `make folds EXP={config.path}`.")
    if scheme == "official" and not is_official(result):
        raise PipelineError(f"{path} holds repeats {repeats}, not the official split (repeat 0) "
                            f"that `folds.scheme = \"official\"` in {config.path} asks for; rerun "
                            f"`make folds EXP={config.path}`.")
    wanted = config["folds"]["runs" if scheme == "holdout" else "repeats"]
    if scheme != "official" and repeats != list(range(1, wanted + 1)):
        raise PipelineError(f"{path} holds repeats {repeats}, but "
                            f"`folds.{'runs' if scheme == 'holdout' else 'repeats'}` in "
                            f"{config.path} is {wanted}: every run of a "
                            f"missing repeat would be left out without a word. Rerun `make folds "
                            f"EXP={config.path}` (or restore the file).")
    return result


def check_runs(config: Config, runs: pd.DataFrame, table: pd.DataFrame | None = None) -> None:
    """Refuse SVM results (``runs.csv``) whose runs trained or tested on other images than the
    current folds give them: results gone stale after the folds changed."""
    from pipeline.folds.table import half_ids, train_ids_digest

    table = manifest(config) if table is None else table
    current = {d: folds(config, d, table) for d in config.designs}
    for run in runs.itertuples():
        design_folds = current.get(run.design)
        if design_folds is None:
            continue
        train = train_ids_digest(half_ids(design_folds, run.repeat, 3 - run.test_half))
        test = train_ids_digest(half_ids(design_folds, run.repeat, run.test_half))
        if (train, test) != (run.train_ids, run.test_ids):
            raise PipelineError(
                f"the SVM results in {config.path_of('metrics.csv')} are stale: run "
                f"{cell_name(run.source, run.finetune)} {run.design} repeat {run.repeat} "
                f"test half {run.test_half} used other images than "
                f"{config.path_of(f'folds/{run.design}.csv')} gives it now. Rerun "
                f"`make svm EXP={config.path}`.")


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


def image_cache_settings(config: Config, dataset: str = "target") -> dict:
    """How a dataset's images are decoded into the image cache: the one place that says it.

    Args:
        config: the experiment.
        dataset: ``"target"`` (the skin-lesion dataset) or ``"retinopathy"`` (the source task,
            whose fundus photos are never frame-cropped: their black surround is part of them).

    Returns:
        Keyword arguments of ``pipeline.data.image_cache.build_image_cache``: ``size``,
        ``crop_black_frame`` and ``max_pixels``.
    """
    size = architecture(config)["input_size"]
    crop = config["data"]["crop_black_frame"] if dataset == "target" else False
    return {"size": (size, size), "crop_black_frame": crop,
            "max_pixels": config["data"]["max_image_pixels"]}


def image_cache(config: Config, table: pd.DataFrame, dataset: str = "target", *,
                skip_bad_images: bool = False):
    """The image cache entry of a manifest table, built by ``data`` (finding it again decodes
    nothing). See ``image_cache_settings`` for ``dataset``."""
    from pipeline.data.image_cache import build_image_cache

    return build_image_cache(table, config.cache_dir / "images",
                             skip_bad_images=skip_bad_images,
                             **image_cache_settings(config, dataset))


def target_images(config: Config, table: pd.DataFrame | None = None):
    """The image cache of the target dataset (its manifest read when ``table`` is None)."""
    return image_cache(config, manifest(config) if table is None else table, "target")


def read_index(config: Config, name: str) -> pd.DataFrame:
    """An index CSV (``finetuned.csv``, ``features.csv``) with typed columns."""
    path = require(config, name)
    table = pd.read_csv(path, dtype={"design": str, "entry": str, "source": str},
                        keep_default_na=False)
    if "finetune" in table:
        try:
            table["finetune"] = table["finetune"].map(parse_bool)
        except ValueError as exc:
            raise PipelineError(f"{path}: column 'finetune': {exc}. Rerun the stage that writes "
                                "it.") from None
    return table


def architecture(config: Config) -> dict:
    """The network settings of an experiment that every network entry records: ``network``,
    ``input_size`` (the network's default when unset) and ``width``."""
    from pipeline.models.registry import get_network

    spec = get_network(config["network"]["name"])
    return {"network": spec.name, "input_size": config["network"]["input_size"] or spec.input_size,
            "width": config["network"]["width"]}


def network_entry(config: Config, key_inputs: dict) -> Path:
    """The cache folder of a network whose key hashes ``key_inputs``."""
    from pipeline.training.netstore import entry_dir

    return entry_dir(config.cache_dir, key_inputs)


def compute_settings(config: Config) -> ComputeSettings:
    """Where the stage's tasks run (``[compute]``; ``pipeline.compute.cluster``)."""
    section = config["compute"]
    slurm = {"cores": section["slurm_cores"], "memory": section["slurm_memory"],
             "walltime": section["slurm_walltime"], "processes": 1,
             "job_extra_directives": ([f"--gres=gpu:{section['slurm_gpus']}"]
                                      if section["slurm_gpus"] else [])}
    if section["slurm_queue"]:
        slurm["queue"] = section["slurm_queue"]
    if section["slurm_account"]:
        slurm["account"] = section["slurm_account"]
    return ComputeSettings(scheduler=section["scheduler"], workers=section["workers"], slurm=slurm)
