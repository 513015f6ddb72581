"""The experiment config's schema, as data: every section and key with its type, range, choices,
default and meaning.

A ``Key`` checks a value and says in words what it allows (``allowed``), so the loader
(``pipeline.experiment.config``) can name the key, the file, what is allowed and what was received;
a test walks ``SCHEMA`` and tries an invalid value of every key (``Key.invalid_values``). Numbers
must be finite (TOML allows ``inf`` and ``nan``, which would fail only deep inside a stage).

The training recipe's keys take their defaults from ``pipeline.training.recipe.TrainRecipe`` (the
paper's values), so the defaults are written once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pipeline.data.datasets import SKIN_DATASETS
from pipeline.data.vocabulary import METADATA_KEYS
from pipeline.data.designs import DESIGNS
from pipeline.data.images import MAX_PIXELS
from pipeline.protocol import ALL_CELLS, TABLE1_CELLS
from pipeline.training.recipe import (AUGMENTATIONS, BATCHNORM_MODES, LR_SCHEDULES, OPTIMIZERS,
                                      TrainRecipe)

KINDS = ("str", "bool", "int", "float", "choice", "list", "pair", "cells")


@dataclass(frozen=True, kw_only=True)
class Key:
    """One config key.

    Attributes:
        kind: one of ``KINDS``: ``str``, ``bool``, ``int``, ``float``, ``choice`` (one of
            ``choices``), ``list`` (of ``item``), ``pair`` ([low, high], both > 0, low <= high) or
            ``cells`` (``"table1"``, ``"all"`` or a list of cell names).
        default: the value when the key is absent (``None``: required when ``required``, else
            "not set", e.g. a recipe override that inherits ``[train]``).
        description: what the key means (README and error messages).
        minimum, maximum: bounds of an ``int`` or ``float``; ``exclusive_minimum``: ``> minimum``.
        choices: the allowed values of a ``choice`` (and of a list's items).
        item: the ``Key`` of a list's items.
        nonempty, unique: list constraints.
        required: the key must be given.
    """

    kind: str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple = ()
    item: "Key | None" = None
    nonempty: bool = True
    unique: bool = True
    required: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown key kind {self.kind!r}; kinds are {KINDS}")

    def allowed(self) -> str:
        """What the key allows, in words: "an integer >= 1", "one of 'paper', 'reference'"."""
        if self.kind == "str":
            return "a string"
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("int", "float"):
            bounds = []
            if self.minimum is not None:
                bounds.append(f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}")
            if self.maximum is not None:
                bounds.append(f"<= {self.maximum:g}")
            what = "an integer" if self.kind == "int" else "a finite number"
            return what + (" " + " and ".join(bounds) if bounds else "")
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "pair":
            return "a list [low, high] of two finite numbers > 0 with low <= high"
        if self.kind == "cells":
            return ("'table1' (the paper's 6 cells), 'all' (8) or a non-empty list of distinct "
                    "cell names (" + ", ".join(ALL_CELLS) + ")")
        return (f"a {'non-empty ' if self.nonempty else ''}list of "
                f"{'distinct ' if self.unique else ''}values, each {self.item.allowed()}")

    def check(self, value: Any) -> Any:
        """The value converted (ints to float for floats, lists to tuples).

        Raises:
            ValueError: with ``allowed()`` as its message.
        """
        ok, out = self._check(value)
        if not ok:
            raise ValueError(self.allowed())
        return out

    def _check(self, value: Any) -> tuple[bool, Any]:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str), value
        if self.kind == "bool":
            return isinstance(value, bool), value
        if self.kind == "int":
            return (isinstance(value, int) and not isinstance(value, bool)
                    and self._in_bounds(value)), value
        if self.kind == "float":
            return (number and math.isfinite(value) and self._in_bounds(value)), \
                float(value) if number else value
        if self.kind == "choice":
            return value in self.choices, value
        if self.kind == "pair":
            ok = (isinstance(value, list) and len(value) == 2
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          and math.isfinite(v) and v > 0 for v in value)
                  and value[0] <= value[1])
            return ok, (float(value[0]), float(value[1])) if ok else value
        if self.kind == "cells":
            if value == "all":
                return True, ALL_CELLS
            if value == "table1":
                return True, TABLE1_CELLS
            ok = (isinstance(value, list) and bool(value) and all(v in ALL_CELLS for v in value)
                  and len(set(value)) == len(value))
            return ok, tuple(value) if ok else value
        # list
        if not isinstance(value, list) or (self.nonempty and not value):
            return False, value
        out = []
        for v in value:
            ok, converted = self.item._check(v)
            if not ok:
                return False, value
            out.append(converted)
        if self.unique and len(set(out)) != len(out):
            return False, value
        return True, tuple(out)

    def _in_bounds(self, value: float) -> bool:
        if self.minimum is not None and (value <= self.minimum if self.exclusive_minimum
                                         else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum

    def invalid_values(self) -> list:
        """Values this key must refuse: a wrong type, and each bound, choice or list rule broken."""
        wrong_type = {"str": 3, "bool": "yes", "int": 1.5, "float": "1", "choice": 7,
                      "list": "x", "pair": 1.0, "cells": "none"}
        out = [wrong_type[self.kind]]
        if self.kind in ("int", "float"):
            if self.minimum is not None:
                out.append(self.minimum if self.exclusive_minimum else self.minimum - 1)
            if self.maximum is not None:
                out.append(self.maximum + 1)
        if self.kind == "float":
            out += [math.inf, math.nan]
        if self.kind == "choice":
            out.append(f"not-{self.choices[0]}")
        if self.kind == "pair":
            out += [[2.0, 1.0], [0.0, 1.0], [1.0, math.inf], [1.0]]
        if self.kind == "cells":
            out += [[], ["none+ft", "none+ft"], ["nowhere"]]
        if self.kind == "list":
            if self.nonempty:
                out.append([])
            bad_item = self.item.invalid_values()[0]
            out.append([bad_item])
        return out


def _recipe_key(name: str, **spec: Any) -> tuple[str, Key]:
    default = getattr(TrainRecipe(), name)
    return name, Key(default=list(default) if isinstance(default, tuple) else default, **spec)


# The recipe's keys: defaults from TrainRecipe (the paper's values), ranges and meaning here.
_RECIPE = dict([
    _recipe_key("epochs", kind="int", minimum=1,
                description="training epochs (paper: 60; reference code: 80)"),
    _recipe_key("batch_size", kind="int", minimum=1,
                description="images per SGD step (reference code: 48)"),
    _recipe_key("learning_rate", kind="float", minimum=0, exclusive_minimum=True,
                description="SGD learning rate"),
    _recipe_key("momentum", kind="float", minimum=0, maximum=1, description="Nesterov momentum"),
    _recipe_key("nesterov", kind="bool", description="use Nesterov momentum"),
    _recipe_key("l2", kind="float", minimum=0, description="L2 regularisation factor"),
    _recipe_key("validation_fraction", kind="float", minimum=0, maximum=0.5,
                exclusive_minimum=True, description="stratified validation fraction"),
    _recipe_key("augment", kind="choice", choices=AUGMENTATIONS,
                description="augment only the minority classes (paper), every image ('all', "
                            "Kim & Rocheteau) or nothing"),
    _recipe_key("scale_range", kind="pair", description="random scaling range of the augmentation"),
    _recipe_key("rotation_degrees", kind="float", minimum=0, maximum=180,
                description="random rotation range (±degrees)"),
    _recipe_key("flip", kind="bool", description="random flips in the augmentation"),
    _recipe_key("mixed_precision", kind="bool",
                description="mixed_float16 compute on a GPU, output softmax in float32 (a CPU "
                            "ignores it: float32, logged)"),
    _recipe_key("jit_compile", kind="bool",
                description="XLA-compile the training and validation steps (off: TensorFlow's "
                            "default, the paper's numbers; on: in the network's cache key)"),
    _recipe_key("batchnorm", kind="choice", choices=BATCHNORM_MODES,
                description="BatchNormalization layers: 'moving' (the paper's SGD on every "
                            "layer, Keras's moving averages at inference), 'precise' (inference "
                            "statistics recomputed over the training images every epoch; short "
                            "runs need it) or 'frozen' (inference mode with the source network's "
                            "statistics, scale and offset not trained: the Keras "
                            "transfer-learning guide's fine-tuning recipe)"),
    _recipe_key("head_epochs", kind="int", minimum=0,
                description="linear probing, then fine-tuning (Kumar et al. 2022): the new head "
                            "alone trains this many epochs, the body frozen in inference mode, "
                            "before every layer trains for `epochs` (0: the paper)"),
    _recipe_key("head_learning_rate", kind="float", minimum=0,
                description="the new head's own learning rate, SGD only (0: learning_rate, "
                            "the paper)"),
    _recipe_key("lr_schedule", kind="choice", choices=LR_SCHEDULES,
                description="'constant' (the paper) or 'cosine': per step, linear warm-up over "
                            "warmup_epochs, then a half cosine to 0 at the end of `epochs`"),
    _recipe_key("warmup_epochs", kind="int", minimum=0,
                description="lr_schedule 'cosine': epochs of linear warm-up from 0"),
    _recipe_key("optimizer", kind="choice", choices=OPTIMIZERS,
                description="'sgd' with Nesterov momentum (paper) or 'adam' (Kim & Rocheteau)"),
    _recipe_key("early_stopping_patience", kind="int", minimum=0,
                description="stop after this many epochs without a lower validation loss "
                            "(Kim & Rocheteau: 3; 0: run every epoch, the paper)"),
    _recipe_key("lr_decay_factor", kind="float", minimum=0, maximum=1, exclusive_minimum=True,
                description="learning rate times this on a validation-loss plateau (Kim & "
                            "Rocheteau: 0.4; 1: never, the paper)"),
    _recipe_key("lr_decay_patience", kind="int", minimum=1,
                description="epochs without improvement before a learning-rate decay"),
    _recipe_key("brightness_range", kind="float", minimum=0, maximum=1,
                description="augmented copies' brightness times a factor in [1-r, 1+r] "
                            "(0: unchanged, the paper)"),
    _recipe_key("saturation_range", kind="float", minimum=0, maximum=1,
                description="augmented copies' saturation times a factor in [1-r, 1+r] "
                            "(0: unchanged, the paper)"),
])
assert set(_RECIPE) == {f.name for f in dataclasses.fields(TrainRecipe)}, "recipe keys drifted"
RECIPE_KEYS = tuple(_RECIPE)
# Where one training runs: not part of the recipe (cache keys hash the recipe), but of a trained
# network's key when "all" (replicas round sums differently).
_RECIPE["devices"] = Key(kind="choice", default="one", choices=("one", "all"),
                         description="'one': the default device; 'all': one network trained "
                                     "data-parallel on every GPU (MirroredStrategy, same global "
                                     "batch_size split over the replicas, same learning rate)")
# [pretrain] and [finetune] override single recipe keys; absent means "as in [train]".
_OVERRIDES = {k: dataclasses.replace(v, default=None, description=f"{v.description} "
                                     "(overrides [train])") for k, v in _RECIPE.items()}

SCHEMA: dict[str, dict[str, Key]] = {
    "experiment": {
        "name": Key(kind="str", default=None, required=True, description="experiment name"),
        "description": Key(kind="str", default="", description="one line shown in the report"),
        "seed": Key(kind="int", default=0, minimum=0,
                    description="seed of every random choice (folds, inits, training, SVM split)"),
        "cells": Key(kind="cells", default="table1",
                     description="cells to run: 'table1' (the paper's 6), 'all' (8) or a list"),
        "cache_dir": Key(kind="str", default="features_cache",
                         description="content-keyed caches (disposable)"),
        "scaled_down": Key(kind="str", default="",
                           description="declared departures from the paper's scale, printed in "
                                       "the report's header (the demo's smaller input and width)"),
    },
    "data": {
        "dataset": Key(kind="choice", default=None, required=True, choices=SKIN_DATASETS,
                       description="target dataset adapter"),
        "root": Key(kind="str", default=None, required=True,
                    description="dataset folder (${VAR} reads the environment)"),
        "extra_dataset": Key(kind="choice", default="", choices=("",) + SKIN_DATASETS,
                             description="a second dataset whose melanoma cases only are added "
                                         "to the target's before the split (Kim & Rocheteau "
                                         "2020's extra malignant cases, in every part as their "
                                         "60/20/20 split of the 37,648 images); empty: none"),
        "extra_root": Key(kind="str", default="",
                          description="the extra_dataset's folder (${VAR} reads the environment)"),
        "keep_acral": Key(kind="bool", default=False,
                          description="derm7pt: keep acral lesions (the paper excludes them)"),
        "crop_black_frame": Key(kind="bool", default=True,
                                description="crop black frames around images (the paper does)"),
        "duplicates": Key(kind="choice", default="error", choices=("error", "group", "drop"),
                          description="ids whose image files are the same bytes (SHA-256), in "
                                      "the target and the extra dataset: 'error' lists them, "
                                      "'group' keeps each file's ids in one group (one part of "
                                      "every split), 'drop' keeps the first id of each; "
                                      "different labels on one file are an error always"),
        "skip_bad_images": Key(kind="bool", default=False,
                               description="skip unreadable images, listing them, instead of "
                                           "failing"),
        "max_image_pixels": Key(kind="int", default=MAX_PIXELS, minimum=1,
                                description="largest image (width x height) decoded; larger files "
                                            "are refused as possible decompression bombs"),
    },
    "folds": {
        "designs": Key(kind="list", default=list(DESIGNS), description="labelling designs",
                       item=Key(kind="choice", default=None, choices=tuple(DESIGNS),
                                description="a design")),
        "scheme": Key(kind="choice", default="5x2", choices=("5x2", "official", "holdout"),
                      description="'5x2' cross-validation (paper), the dataset's 'official' "
                                  "train/test split, or one 'holdout' train/validation/test "
                                  "split (Kim & Rocheteau 2020)"),
        "repeats": Key(kind="int", default=5, minimum=1,
                       description="repeats of the 2-fold split (paper: 5)"),
        "holdout": Key(kind="list", default=[0.6, 0.2, 0.2], unique=False,
                       description="scheme 'holdout': train, validation and test shares "
                                   "(Kim & Rocheteau: 0.6, 0.2, 0.2; three numbers summing to 1)",
                       item=Key(kind="float", default=None, minimum=0, maximum=1,
                                exclusive_minimum=True, description="a share")),
        "holdout_grouping": Key(kind="choice", default="grouped", choices=("grouped", "leaky"),
                                description="scheme 'holdout': keep each patient in one part "
                                            "('grouped'), or split images regardless of "
                                            "patient as the paper's code did ('leaky')"),
        "runs": Key(kind="int", default=10, minimum=1,
                    description="scheme 'holdout': independent training runs (seeds) on the "
                                "one split (Kim & Rocheteau: 10)"),
    },
    "network": {
        "name": Key(kind="str", default="vgg-m",
                    description="network from the registry (`python -m pipeline networks`)"),
        "input_size": Key(kind="int", default=None, minimum=16,
                          description="input side in pixels (default: the network's, 224)"),
        "width": Key(kind="float", default=1.0, minimum=0, maximum=1, exclusive_minimum=True,
                     description="multiplier on every layer's width"),
        "imagenet_weights": Key(kind="str", default="",
                                description="local ImageNet weights file (vgg-m: made by "
                                            "`convert-matconvnet`; vgg16: Keras's h5); empty: "
                                            "the Keras cache"),
    },
    "train": dict(_RECIPE),
    "pretrain": {
        "retinopathy_root": Key(kind="str", default="",
                                description="Kaggle Diabetic Retinopathy folder "
                                            "(trainLabels.csv)"),
        "retinopathy_max_images": Key(kind="int", default=0, minimum=0,
                                      description="use a stratified subset of this many images "
                                                  "(0: all)"),
        **_OVERRIDES,
    },
    "finetune": dict(_OVERRIDES),
    "extract": {
        "batch_size": Key(kind="int", default=32, minimum=1,
                          description="images per forward pass (part of the features' key: "
                                      "it changes the float rounding)"),
        "jit_compile": Key(kind="bool", default=False,
                           description="XLA-compile the forward pass (off: TensorFlow's default; "
                                       "on: in the features' key, float rounding changes)"),
    },
    "svm": {
        "C_grid": Key(kind="list", default=[10.0 ** k for k in range(-3, 5)],
                      description="SVM C values tried",
                      item=Key(kind="float", default=None, minimum=0, exclusive_minimum=True,
                               description="a C value")),
        "selection": Key(kind="choice", default="paper", choices=("paper", "reference"),
                         description="'paper': one 10% stratified split, AUC; 'reference': 10 "
                                     "splits, class-balanced weights and, for 3 classes, "
                                     "libsvm's one-vs-one SVC scored by its Platt "
                                     "probabilities (the authors' code)"),
        "validation_fraction": Key(kind="float", default=0.1, minimum=0, maximum=0.5,
                                   exclusive_minimum=True, description="validation split for C"),
        "selection_splits": Key(kind="int", default=0, minimum=0,
                                description="validation splits whose mean AUC picks C, all on "
                                            "the one precomputed Gram matrix (0: the "
                                            "selection's own, 1 for 'paper' as in the paper, 10 "
                                            "for 'reference'; e.g. 10 with 'paper': a less noisy "
                                            "choice of C than one split of ~50 images)"),
        "n_jobs": Key(kind="int", default=-1, minimum=-1,
                      description="parallel SVM runs (-1: every core)"),
    },
    "classifier": {
        "kind": Key(kind="choice", default="svm", choices=("svm", "network"),
                    description="'svm': linear SVM on the network's features (Menegola); "
                                "'network': the fine-tuned network's own output (Kim & "
                                "Rocheteau; fine-tuned cells only)"),
        "metadata": Key(kind="list", default=[], nonempty=False,
                        description="patient metadata joined to the image features (Kim & "
                                    "Rocheteau 2020): any of 'age', 'sex', 'site'; empty: images "
                                    "only (Menegola)",
                        item=Key(kind="choice", default=None, choices=METADATA_KEYS,
                                 description="a metadata key")),
    },
    "compute": {
        "scheduler": Key(kind="str", default="local",
                         description="where training and extraction tasks run: 'local' (this "
                                     "process, no Dask), 'local-cluster' (a Dask LocalCluster; "
                                     "one worker per GPU with dask-cuda), 'slurm' (dask-jobqueue) "
                                     "or an existing scheduler's address 'tcp://host:8786'; "
                                     "results and cache keys do not depend on it"),
        "workers": Key(kind="int", default=0, minimum=0,
                       description="local-cluster: worker processes (0: one per core, or per "
                                   "GPU); slurm: jobs (0: 1)"),
        "slurm_queue": Key(kind="str", default="", description="slurm: partition (queue)"),
        "slurm_account": Key(kind="str", default="", description="slurm: account"),
        "slurm_cores": Key(kind="int", default=4, minimum=1, description="slurm: cores per job"),
        "slurm_memory": Key(kind="str", default="16GB", description="slurm: memory per job"),
        "slurm_walltime": Key(kind="str", default="04:00:00",
                              description="slurm: walltime per job"),
        "slurm_gpus": Key(kind="int", default=0, minimum=0,
                          description="slurm: GPUs per job (#SBATCH --gres=gpu:N)"),
    },
    "report": {
        "threshold": Key(kind="float", default=0.0,
                         description="decision threshold on SVM scores for ACC/SE/SP/F1"),
        "difficulty_cell": Key(kind="choice", default="imagenet+ft", choices=ALL_CELLS,
                               description="cell of Table 4, AUC by difficulty (the paper: "
                                           "imagenet+ft)"),
        "architectures": Key(kind="list", default=[], nonempty=False,
                             description="other experiments whose imagenet+ft cell joins "
                                         "Table 3",
                             item=Key(kind="str", default=None,
                                      description="an experiment config path")),
    },
}
