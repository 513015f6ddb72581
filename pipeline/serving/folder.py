"""The exported model folder: what the ``export`` stage writes and ``predict`` reads.

A model folder ``DIR/`` holds everything a prediction needs, and nothing points outside it:

    network/        the network's cache entry, copied as it is (``pipeline.training.netstore``):
                    ``model.weights.h5`` (Keras weights of the whole model), ``mean.npy`` when
                    the entry has one, and its own ``manifest.json`` (architecture, weights digest)
    svm.npz         ``coef``: float64 array of shape (k, n_features), k = 1 for two classes;
                    ``intercept``: shape (k,). Scores are ``coef . L2(features) + intercept``.
    model.json      ``schema_version``; ``classes`` (score-column order; for two classes the last
                    is the positive one), ``positive``, ``threshold``; ``svm`` (C and how it was
                    chosen); ``preprocessing`` (network, input size, width, feature layer, the RGB
                    mean subtracted, or null for the network's own preprocessing); ``image`` (the
                    image cache's decoding: size, crop_black_frame, reduced_decode, max_pixels,
                    decoder version, resampling filter); ``metadata`` (the encoding of clinical
                    metadata: ``{"features": []}`` when the model uses none); ``provenance``
                    (experiment, config digest, manifest digest, run, training images, metrics)
    config.toml     the experiment config's text at export
    manifest.json   written last: ``schema_version`` and the size and SHA-256 of every file above

``write_model_folder`` writes into a temporary folder beside ``DIR`` and renames it onto ``DIR``
at the end, so a folder is either complete or absent. ``read_model_folder`` checks the schema
version first (a newer one is refused: its fields may mean something this code does not know),
then every recorded file's size and digest, then the decoding settings against this installation's
decoder. No TensorFlow is imported until ``load_network``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cache.entries import MANIFEST, finish_entry
from pipeline.cache.files import hash_file, read_json, write_json, write_text
from pipeline.data.images import DECODER_VERSION, REDUCING_GAP, RESAMPLE
from pipeline.errors import PipelineError

SCHEMA_VERSION = 1
KIND = "pipeline-model"
NETWORK = "network"
REQUIRED = ("model.json", "svm.npz", "config.toml", f"{NETWORK}/model.weights.h5",
            f"{NETWORK}/{MANIFEST}")
REEXPORT = ("Export the model again (`python -m pipeline export --config EXP --cell CELL "
            "--design DESIGN --run REPEAT/TEST_HALF --out DIR`) or restore the folder from a copy")


def decoding_settings(size: tuple[int, int], crop_black_frame: bool, max_pixels: int,
                      reduced_decode: bool = True) -> dict:
    """The ``image`` section of ``model.json``: how the image cache decoded the training images
    (``pipeline.data.images.load_image``'s arguments and the decoder's version and filter)."""
    return {"size": [int(size[0]), int(size[1])], "crop_black_frame": bool(crop_black_frame),
            "reduced_decode": bool(reduced_decode), "max_pixels": int(max_pixels),
            "decoder_version": DECODER_VERSION, "resample": RESAMPLE.name,
            "reducing_gap": REDUCING_GAP}


@dataclass
class ModelFolder:
    """A model folder whose files were checked.

    Attributes:
        folder: the folder.
        info: ``model.json``.
        coef: float64 array of shape (k, n_features) (k = 1 for two classes).
        intercept: float64 array of shape (k,).
    """

    folder: Path
    info: dict
    coef: np.ndarray
    intercept: np.ndarray

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def mean(self) -> np.ndarray | None:
        """RGB mean of shape (3,) subtracted before the network, or None (its own preprocessing)."""
        mean = self.info["preprocessing"]["mean"]
        return None if mean is None else np.asarray(mean, dtype=np.float32)

    @property
    def metadata_features(self) -> list[str]:
        return list(self.info["metadata"]["features"])

    def load_network(self):
        """The network (``pipeline.training.netstore.StoredNetwork``), its weights digest checked."""
        from pipeline.training import netstore

        return netstore.load(self.folder / NETWORK)


def write_model_folder(out: str | os.PathLike, network_entry: str | os.PathLike,
                       coef: np.ndarray, intercept: np.ndarray, info: dict,
                       config_text: str) -> Path:
    """Write a model folder atomically (see the module docstring for its files).

    Args:
        out: the folder to write; an existing model folder there is replaced, anything else
            there is refused.
        network_entry: the network's cache entry (``pipeline.training.netstore``), copied.
        coef: array of shape (k, n_features); intercept: shape (k,).
        info: ``model.json`` without ``schema_version`` (classes, positive, threshold, svm,
            preprocessing, image, metadata, provenance).
        config_text: the experiment config's text.

    Returns:
        The folder.
    """
    out, network_entry = Path(out), Path(network_entry)
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
    if coef.shape[0] != intercept.shape[0]:
        raise PipelineError(f"the SVM's coef has {coef.shape[0]} rows but its intercept "
                            f"{intercept.shape[0]} values.")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_model(out))):
        raise PipelineError(f"--out {out} exists and is not a model folder; choose another "
                            "folder or delete it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (tmp / NETWORK).mkdir()
        net_files = list(read_json(network_entry / MANIFEST)["files"]) + [MANIFEST]
        for name in net_files:
            shutil.copyfile(network_entry / name, tmp / NETWORK / name)
        np.savez(tmp / "svm.npz", coef=coef, intercept=intercept)
        write_json(tmp / "model.json", {**info, "schema_version": SCHEMA_VERSION, "kind": KIND})
        write_text(tmp / "config.toml", config_text)
        files = ["model.json", "svm.npz", "config.toml"] + [f"{NETWORK}/{n}" for n in net_files]
        finish_entry(tmp, {"schema_version": SCHEMA_VERSION, "kind": KIND}, files)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _is_model(folder: Path) -> bool:
    try:
        return read_json(folder / MANIFEST).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def _damaged(folder: Path, detail: str) -> PipelineError:
    return PipelineError(f"model folder {folder} is damaged: {detail}. {REEXPORT}.")


def check_schema(folder: Path, manifest: dict) -> None:
    """Refuse a manifest of another kind or of a newer schema than this code reads."""
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise PipelineError(f"{folder / MANIFEST} is not the manifest of a model folder (no "
                            f"\"kind\": \"{KIND}\"); point --model at a folder written by "
                            "`python -m pipeline export`.")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _damaged(folder, f"its {MANIFEST} has schema_version {version!r}, not an int >= 1")
    if version > SCHEMA_VERSION:
        raise PipelineError(f"model folder {folder} has schema_version {version}, newer than "
                            f"this pipeline reads (up to {SCHEMA_VERSION}): it was exported by a "
                            "newer version. Upgrade the pipeline package to read it, or export "
                            "the model again with this version.")


def read_model_folder(folder: str | os.PathLike) -> ModelFolder:
    """Read a model folder, checking its schema version, every file's digest and the decoding.

    Raises:
        PipelineError: the folder is missing or incomplete, of a newer schema, a file is missing
            or its size or SHA-256 differs from the manifest (naming the file), or this
            installation decodes images differently from the exporting one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"model folder {folder} does not exist; write one with `python -m "
                            "pipeline export ... --out DIR`.")
    if not (folder / MANIFEST).is_file():
        raise PipelineError(f"{folder} is not a complete model folder (no {MANIFEST}). "
                            f"{REEXPORT}.")
    try:
        manifest = read_json(folder / MANIFEST)
    except (OSError, ValueError) as exc:
        raise _damaged(folder, f"its {MANIFEST} cannot be read ({exc})") from None
    check_schema(folder, manifest)
    recorded = manifest.get("files", {})
    for name in REQUIRED:
        if name not in recorded:
            raise _damaged(folder, f"its {MANIFEST} records no {name}")
    for name, want in recorded.items():
        path = folder / name
        if not path.is_file():
            raise _damaged(folder, f"{name} is missing")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise _damaged(folder, f"{name} has {size} bytes, {MANIFEST} records {want['bytes']}")
        digest = hash_file(path)
        if digest != want["sha256"]:
            raise _damaged(folder, f"the SHA-256 of {name} is {digest[:16]}..., {MANIFEST} "
                                   f"records {want['sha256'][:16]}... (the file was changed)")
    info = read_json(folder / "model.json")
    check_schema(folder, info)
    with np.load(folder / "svm.npz") as svm:
        coef, intercept = np.asarray(svm["coef"]), np.asarray(svm["intercept"])
    _check_decoder(folder, info["image"])
    return ModelFolder(folder=folder, info=info, coef=coef, intercept=intercept)


def _check_decoder(folder: Path, image: dict) -> None:
    here = {"decoder_version": DECODER_VERSION, "resample": RESAMPLE.name,
            "reducing_gap": REDUCING_GAP}
    differ = {k: (image.get(k), v) for k, v in here.items() if image.get(k) != v}
    if differ:
        detail = ", ".join(f"{k} {a!r} there, {b!r} here" for k, (a, b) in differ.items())
        raise PipelineError(f"model folder {folder} was exported with another image decoder "
                            f"({detail}): its images would be decoded differently from its "
                            "training images. Use the pipeline version that exported it, or "
                            "rerun the experiment and export it again.")
