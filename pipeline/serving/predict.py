"""Prediction with an exported model folder, on image files, with no experiment folder or config.

The chain is the pipeline's own, step for step: ``pipeline.data.images.load_image`` with the
image cache's settings recorded in the folder (decode, orient, crop the black frame, resize) ->
``pipeline.models.preprocessing.preprocess`` with the recorded mean -> the network cut at its
feature layer -> L2 normalisation -> the linear SVM (``coef . f / |f| + intercept``, in float64 as
``pipeline.classifiers.svm`` scores). For two classes the score is the positive class's decision
score and the predicted class is the positive one when the score is above the recorded threshold;
for more, one score per class and the highest wins.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.preprocessing import normalize

from pipeline.data.images import BadImageError, load_image
from pipeline.errors import PipelineError
from pipeline.serving.folder import ModelFolder

METADATA_OPTIONS = ("--age", "--sex", "--site", "--metadata")


def check_metadata(model: ModelFolder, given: dict) -> None:
    """Refuse clinical metadata for a model that has no encoding of it.

    Args:
        model: the model folder.
        given: option -> value of the metadata options given (``None`` when not given).
    """
    used = [option for option, value in given.items() if value is not None]
    if used and not model.metadata_features:
        raise PipelineError(f"model {model.folder} uses no clinical metadata (its metadata "
                            f"encoding in model.json is empty: it was trained on images only); "
                            f"remove {', '.join(used)}.")
    if used:
        raise PipelineError(f"model {model.folder} encodes metadata "
                            f"{model.metadata_features}, which this version cannot feed yet; "
                            "predict without metadata options or upgrade the pipeline.")


def decode_images(model: ModelFolder, paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Decode image files exactly as the model's image cache decoded its training images.

    Returns:
        uint8 array of shape (n_images, height, width, 3), RGB.

    Raises:
        BadImageError: a file is missing, unreadable or not a decodable image, naming it.
    """
    image = model.info["image"]
    out = []
    for path in paths:
        try:
            out.append(load_image(path, tuple(image["size"]),
                                  crop_black_frame=image["crop_black_frame"],
                                  reduced_decode=image["reduced_decode"],
                                  max_pixels=image["max_pixels"]))
        except BadImageError as exc:
            raise BadImageError(path, exc.reason, fix="Repair or replace the file, or leave it "
                                "out of --image") from None
    return np.stack(out)


def image_features(network, mean: np.ndarray | None, pixels: np.ndarray,
                   batch_size: int = 32) -> np.ndarray:
    """The network's features of decoded images.

    Args:
        network: a ``pipeline.training.netstore.StoredNetwork`` (``ModelFolder.load_network()``).
        mean: RGB mean of shape (3,) subtracted first, or None (the network's own preprocessing).
        pixels: uint8 array of shape (n, height, width, 3).
        batch_size: images per forward pass.

    Returns:
        float32 array of shape (n, n_features), as the feature cache holds them.
    """
    from pipeline.models.build import feature_model
    from pipeline.models.preprocessing import preprocess

    fmodel = feature_model(network.model, network.spec)
    parts = [np.asarray(fmodel(preprocess(network.spec, pixels[i:i + batch_size], mean),
                               training=False), dtype=np.float32)
             for i in range(0, len(pixels), batch_size)]
    return np.concatenate(parts).reshape(len(pixels), -1)


def svm_scores(model: ModelFolder, features: np.ndarray) -> np.ndarray:
    """Decision scores ``coef . L2(features) + intercept`` in float64: array of shape (n, k)."""
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != model.coef.shape[1]:
        raise PipelineError(f"the network of {model.folder} gives features of shape {X.shape}, "
                            f"its SVM takes {model.coef.shape[1]} per image; the folder is "
                            "inconsistent: export it again.")
    return normalize(X) @ model.coef.T + model.intercept


def score_table(model: ModelFolder, images: Sequence[str], scores: np.ndarray) -> pd.DataFrame:
    """One row per image: ``image``, ``score`` (two classes) or ``score_<class>``, ``predicted``."""
    classes = model.classes
    if scores.shape[1] == 1:
        predicted = np.where(scores[:, 0] > model.info["threshold"], classes[1], classes[0])
        columns = {"score": scores[:, 0]}
    else:
        predicted = np.asarray(classes, dtype=object)[scores.argmax(axis=1)]
        columns = {f"score_{c}": scores[:, k] for k, c in enumerate(classes)}
    return pd.DataFrame({"image": [str(i) for i in images], **columns, "predicted": predicted})


def predict_files(model: ModelFolder, paths: Sequence[str | os.PathLike],
                  batch_size: int = 32, network=None) -> tuple[pd.DataFrame, np.ndarray]:
    """Scores and predicted classes of image files (the whole chain).

    Returns:
        The ``score_table`` and the decoded pixels, uint8 array of shape (n, height, width, 3).
    """
    pixels = decode_images(model, paths)
    network = model.load_network() if network is None else network
    scores = svm_scores(model, image_features(network, model.mean, pixels, batch_size))
    return score_table(model, [str(p) for p in paths], scores), pixels


def explain_files(model: ModelFolder, network, table: pd.DataFrame, pixels: np.ndarray,
                  out_dir: str | os.PathLike, steps: int) -> list[Path]:
    """Integrated-gradients PNG per image of the score of its predicted class
    (``pipeline.explain``): ``<out_dir>/<file stem>_ig.png``."""
    from pipeline.explain.network import explain_svm
    from pipeline.explain.overlay import write_overlay
    from pipeline.models.build import feature_model
    from pipeline.models.preprocessing import preprocess

    fmodel = feature_model(network.model, network.spec)
    classes = model.classes
    written = []
    for i, row in enumerate(table[["image", "predicted"]].itertuples(index=False)):
        k = 0 if model.coef.shape[0] == 1 else classes.index(row.predicted)
        target = classes[-1] if model.coef.shape[0] == 1 else classes[k]
        maps = explain_svm(fmodel, lambda p: preprocess(network.spec, p, model.mean),
                           model.coef[k], float(model.intercept[k]), pixels[i:i + 1], ["ig"],
                           steps=steps)
        attribution = maps["ig"][0]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(row.image).stem)
        path = Path(out_dir) / f"{stem}_ig.png"
        write_overlay(path, pixels[i], attribution.values, "ig",
                      f"{Path(row.image).name}: predicted {row.predicted}; score of {target} "
                      f"{attribution.f_x:.3f}")
        written.append(path)
    return written
