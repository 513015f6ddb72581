"""ImageNet weights: a network's weights file (local path, Keras' cache or a download), its mean.

``imagenet_weights_file`` takes ``network.imagenet_weights`` when set, else the file in Keras'
download cache (``keras_cache_dir``), else downloads it through Keras when online (a fast
connectivity probe first, so offline machines fail at once); vgg-m always needs the local file
written by ``convert-matconvnet``. Anything missing raises ``WeightsUnavailable`` naming the file to
place and where, never falling back to random weights. ``imagenet_mean`` is the mean that goes with
the weights. The registry itself is ``pipeline.networks``; importing this module does not import
TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import PipelineError, WeightsUnavailable

if TYPE_CHECKING:
    from pipeline.networks import NetworkSpec

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


def _fetch(url: str, cache_dir: Path) -> Path:
    """Download ``url`` into ``cache_dir`` through Keras (the only code that uses the network)."""
    import keras

    host = urllib.parse.urlsplit(url).hostname
    with socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S):
        pass
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)  # urlretrieve has no timeout argument
    try:
        return Path(keras.utils.get_file(url.rsplit("/", 1)[-1], url, cache_subdir=cache_dir.name,
                                         cache_dir=str(cache_dir.parent)))
    finally:
        socket.setdefaulttimeout(old)


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
        WeightsUnavailable: naming the file to place and where, or the config key to set.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            # A file the user named explicitly is an error, not a cell to skip: a typo must not
            # quietly turn the ImageNet cells into "not run".
            raise PipelineError(
                f"the ImageNet weights file {path} (`network.imagenet_weights`) for {spec.name} "
                f"does not exist. Correct the path, place {spec.imagenet_file} there, or remove "
                "`network.imagenet_weights` to use the Keras cache")
        return path
    if spec.imagenet_url is None:
        raise WeightsUnavailable(
            f"{spec.name} ImageNet weights need a local file and `network.imagenet_weights` is "
            "not set",
            "download imagenet-vgg-m.mat from https://www.vlfeat.org/matconvnet/pretrained/, run "
            "`python -m pipeline convert-matconvnet --mat imagenet-vgg-m.mat --out "
            "models/imagenet-vgg-m.npz` and set `network.imagenet_weights` in the experiment "
            "config to that file (the paper's VGG-M: width 1.0, input 224)")
    name = spec.imagenet_file.format(size=mobilenet_rows(input_size or spec.input_size))
    cache = keras_cache_dir()
    if (cache / name).is_file():  # looked at before any download is tried
        return cache / name
    try:
        return _fetch(spec.imagenet_url + name, cache)
    except Exception as exc:  # any failure to download ends here, never in random weights
        raise WeightsUnavailable(
            f"ImageNet weights for {spec.name} are not in the Keras cache and could not be "
            f"downloaded ({type(exc).__name__}: {exc})",
            f"place the file {name} (from {spec.imagenet_url}{name}) at {cache / name}, or set "
            "`network.imagenet_weights` in the experiment config to its path") from exc


def mobilenet_rows(size: int) -> int:
    """Input size of the MobileNetV2 ImageNet file that serves ``size`` (Keras ships weights for
    96, 128, 160, 192 and 224 px and uses the 224 ones otherwise)."""
    return size if size in (96, 128, 160, 192, 224) else 224


def imagenet_mean(name: str, weights_path: str | os.PathLike | None = None) -> np.ndarray | None:
    """The RGB per-channel mean that goes with a network's ImageNet weights.

    Args:
        name: registry name.
        weights_path: the converted vgg-m file (``network.imagenet_weights``).

    Returns:
        Array of shape (3,) (vgg-m: the converted file's average image; vgg16: the Keras caffe
        mean), or ``None`` for backbones, whose ``preprocess_input`` is used as it is.
    """
    from pipeline.networks import IMAGENET_BGR_MEAN, get_network

    spec = get_network(name)
    if spec.name == "vgg-m":
        from pipeline.matconvnet import read_converted

        return read_converted(imagenet_weights_file(spec, None, weights_path))[0]["mean"]
    return IMAGENET_BGR_MEAN[::-1].copy() if spec.preprocessing.mode == "caffe" else None
