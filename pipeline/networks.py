"""The network registry: each network by name with its builder, preprocessing, feature layer, weights.

Like timm's ``_cfg`` and Keras applications, a network is looked up by name and carries everything
needed to use it, so preprocessing is never chosen apart from the model:

- ``vgg-m``: MatConvNet's VGG-M (``pipeline.matconvnet``), RGB minus the average image of the
  converted ``imagenet-vgg-m.mat``; features at ``relu7`` (4096 × width).
- ``vgg16``: ``keras.applications.VGG16`` with its top, Keras "caffe" preprocessing (RGB→BGR, minus
  the ImageNet BGR mean [103.939, 116.779, 123.68]); features at ``fc2`` (after its ReLU).
- ``resnet50``, ``densenet121``, ``mobilenetv2``, ``efficientnetb0``, ``inceptionv3``: Keras
  backbones without top + global average pooling (``avg_pool``, the features) + a softmax head,
  preprocessed by their own ``keras.applications.<module>.preprocess_input``.

Weights: ``none`` is the paper's no-transfer init (orthogonal kernels with gain 1, biases 0.05,
seeded); ``imagenet`` loads ImageNet weights (Keras' cache file, downloaded when online, or a local
path; for vgg-m the file written by ``convert-matconvnet``) and fails with the file to place
otherwise — never a silent fallback to random weights. Networks trained on another dataset are
preprocessed with that training set's mean (``preprocess(..., mean=...)``).

Importing this module does not import TensorFlow; building a network does. Command:
``python -m pipeline networks`` prints the registry.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.matconvnet import MIN_INPUT_SIZE

log = logging.getLogger(__name__)

IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)  # Keras "caffe" mode
BIAS_INIT = 0.05
_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_PROBE_TIMEOUT_S = 5.0  # offline machines fail the connectivity probe fast instead of hanging
_DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Preprocessing:
    """How images (uint8 RGB, 0–255) become network input.

    Attributes:
        mode: ``mean`` (subtract a mean that comes with the weights), ``caffe`` (RGB→BGR, minus
            ``IMAGENET_BGR_MEAN``) or ``keras`` (``keras.applications.<module>.preprocess_input``).
        channel_order: ``RGB`` or ``BGR``, the order the network sees.
        mean_source: where the ImageNet mean comes from, in words.
        keras_module: the ``keras.applications`` module whose ``preprocess_input`` is used.
    """

    mode: str
    channel_order: str
    mean_source: str
    keras_module: str | None = None


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network.

    Attributes:
        name: registry name.
        builder: ``builder(spec, input_size, width, classes, weights_file, seed) -> keras.Model``
            with Keras' default init, or the weights in ``weights_file`` loaded.
        input_size: default side of the square input, px.
        min_input_size: smallest side the architecture accepts.
        feature_layer: layer whose output are the features.
        feature_width: feature length at width 1.0.
        head_input: layer feeding the classification head (``replace_head`` keeps up to it).
        head: names of the head's layers (a Dense, then a Softmax when there are two).
        preprocessing: see ``Preprocessing``.
        weights: the weights sources, ``none`` and ``imagenet``.
        imagenet_file: file name of the ImageNet weights (``{size}``: the input size).
        imagenet_url: where Keras downloads it from; ``None`` when it must be made locally.
        keras_class: ``keras.applications`` class, for Keras backbones.
        scalable: whether ``width`` other than 1.0 is supported (with weights ``none`` only).
    """

    name: str
    builder: Callable[..., Any]
    input_size: int
    min_input_size: int
    feature_layer: str
    feature_width: int
    head_input: str
    head: tuple[str, ...]
    preprocessing: Preprocessing
    weights: tuple[str, ...]
    imagenet_file: str
    imagenet_url: str | None
    keras_class: str | None = None
    scalable: bool = False

    def width_at(self, width: float = 1.0) -> int:
        """Feature length at a width multiplier."""
        return max(1, int(round(self.feature_width * width)))


# --- builders -------------------------------------------------------------------------------------

def _build_vgg_m(spec: NetworkSpec, input_size: int, width: float, classes: int,
                 weights_file: Path | None, seed: int) -> Any:
    from pipeline import matconvnet

    if weights_file is None:
        return matconvnet.build_vgg_m(input_size, width, classes, seed)
    meta = matconvnet.read_converted(weights_file)[1]
    if width != meta["width"]:
        raise PipelineError(f"{weights_file} holds VGG-M at width {meta['width']}; got "
                            f"width={width}. Build with width={meta['width']}.")
    model = matconvnet.build_vgg_m(input_size, width, meta["classes"], seed)
    matconvnet.set_vgg_m_weights(model, weights_file)
    return model


def _build_vgg16(spec: NetworkSpec, input_size: int, width: float, classes: int,
                 weights_file: Path | None, seed: int) -> Any:
    import keras

    if width == 1.0:
        return keras.applications.VGG16(
            include_top=True, weights=None if weights_file is None else str(weights_file),
            input_shape=(input_size, input_size, 3), classes=classes, name="vgg16")
    # Keras' VGG16 has no width option: the same layout and layer names, narrower.
    L = keras.layers
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = inputs
    for block, (convs, filters) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), 1):
        for i in range(1, convs + 1):
            x = L.Conv2D(max(1, round(filters * width)), 3, padding="same", activation="relu",
                         name=f"block{block}_conv{i}")(x)
        x = L.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    x = L.Flatten(name="flatten")(x)
    for name in ("fc1", "fc2"):
        x = L.Dense(spec.width_at(width), activation="relu", name=name)(x)
    x = L.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="vgg16")


def _build_backbone(spec: NetworkSpec, input_size: int, width: float, classes: int,
                    weights_file: Path | None, seed: int) -> Any:
    import keras

    inputs = keras.Input((input_size, input_size, 3), name="input")
    base = getattr(keras.applications, spec.keras_class)(
        include_top=False, weights=None if weights_file is None else str(weights_file),
        input_tensor=inputs, pooling=None)
    if weights_file is not None and spec.name == "efficientnetb0":
        # Keras adds a Rescaling(1/sqrt(std)) after its Normalization only for weights="imagenet"
        # (TF issue 49930: the file stores std as variance). Loading by path skips it; squaring
        # the stored variance gives the same (x - mean) / std.
        norm = next(l for l in base.layers if isinstance(l, keras.layers.Normalization))
        norm.variance.assign(np.square(norm.variance.numpy()))
    # pooling="avg" done here so the feature layer has the same name in every backbone
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    x = keras.layers.Dense(classes, activation="softmax", name="predictions", dtype="float32")(x)
    model = keras.Model(inputs, x, name=spec.name)
    if weights_file is not None:
        init_no_transfer(model.get_layer("predictions"), seed)  # the new head, seeded
    return model


def _backbone(name: str, keras_class: str, module: str, size: int, min_size: int, width: int,
              file: str, url: str, mode: str) -> NetworkSpec:
    return NetworkSpec(
        name, _build_backbone, size, min_size, "avg_pool", width, "avg_pool", ("predictions",),
        Preprocessing("keras", "BGR" if mode == "caffe" else "RGB",
                      f"keras.applications.{module}.preprocess_input ({mode} mode)", module),
        ("none", "imagenet"), file, url, keras_class)


NETWORKS: dict[str, NetworkSpec] = {s.name: s for s in (
    NetworkSpec("vgg-m", _build_vgg_m, 224, MIN_INPUT_SIZE, "relu7", 4096, "drop7", ("fc8", "prob"),
                Preprocessing("mean", "RGB", "average image of the converted imagenet-vgg-m.mat"),
                ("none", "imagenet"), "imagenet-vgg-m.npz (python -m pipeline convert-matconvnet)",
                None, scalable=True),
    NetworkSpec("vgg16", _build_vgg16, 224, 32, "fc2", 4096, "fc2", ("predictions",),
                Preprocessing("caffe", "BGR", "ImageNet BGR mean [103.939, 116.779, 123.68]",
                              "vgg16"),
                ("none", "imagenet"), "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                f"{_KERAS_URL}vgg16/", "VGG16", scalable=True),
    _backbone("resnet50", "ResNet50", "resnet50", 224, 32, 2048,
              "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", f"{_KERAS_URL}resnet/", "caffe"),
    _backbone("densenet121", "DenseNet121", "densenet", 224, 32, 1024,
              "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", f"{_KERAS_URL}densenet/",
              "torch"),
    _backbone("mobilenetv2", "MobileNetV2", "mobilenet_v2", 224, 32, 1280,
              "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
              f"{_KERAS_URL}mobilenet_v2/", "tf"),
    _backbone("efficientnetb0", "EfficientNetB0", "efficientnet", 224, 32, 1280,
              "efficientnetb0_notop.h5", "https://storage.googleapis.com/keras-applications/",
              "none: rescaling inside the model"),
    _backbone("inceptionv3", "InceptionV3", "inception_v3", 299, 75, 2048,
              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
              f"{_KERAS_URL}inception_v3/", "tf"),
)}


def get_network(name: str) -> NetworkSpec:
    """The registered network ``name``; unknown names fail listing the known ones."""
    if name not in NETWORKS:
        raise PipelineError(f"No such network: {name!r}. Known networks are: "
                            f"{', '.join(NETWORKS)} (`network.name` in the experiment config).")
    return NETWORKS[name]


# --- weights ------------------------------------------------------------------------------------

def keras_cache_dir() -> Path:
    """Keras' download cache for weights: ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


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

    The cache is looked at before any download is tried; a failed download raises.

    Raises:
        PipelineError: naming the file to place and where, or the config key to set.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise PipelineError(f"ImageNet weights file {path} (`network.imagenet_weights`) for "
                                f"{spec.name} does not exist; expected {spec.imagenet_file}.")
        return path
    if spec.imagenet_url is None:
        raise PipelineError(
            f"{spec.name} ImageNet weights need a local file: download imagenet-vgg-m.mat from "
            "https://www.vlfeat.org/matconvnet/pretrained/, run `python -m pipeline "
            "convert-matconvnet --mat imagenet-vgg-m.mat --out models/imagenet-vgg-m.npz` and set "
            "`network.imagenet_weights` in the experiment config to that file.")
    name = spec.imagenet_file.format(size=_mobilenet_rows(input_size or spec.input_size))
    cache = keras_cache_dir()
    # Keras itself falls back to /tmp/.keras when the cache is not writable.
    for folder in (cache, Path("/tmp/.keras/models")):
        if (folder / name).is_file():
            return folder / name
    try:
        return _fetch(spec.imagenet_url + name, cache)
    except Exception as exc:  # any failure to download ends here, never in random weights
        raise PipelineError(
            f"ImageNet weights for {spec.name} are not in the Keras cache and could not be "
            f"downloaded ({type(exc).__name__}: {exc}). Place the file {name} (from "
            f"{spec.imagenet_url}{name}) at {cache / name}, or set `network.imagenet_weights` in "
            "the experiment config to its path.") from exc


def _mobilenet_rows(size: int) -> int:
    # Keras ships MobileNetV2 weights for these sizes and uses the 224 ones otherwise.
    return size if size in (96, 128, 160, 192, 224) else 224


def imagenet_mean(name: str, weights_path: str | os.PathLike | None = None) -> np.ndarray | None:
    """The RGB per-channel mean that goes with a network's ImageNet weights.

    Returns:
        Array of shape (3,) (vgg-m: the converted file's average image; vgg16: the Keras caffe
        mean), or ``None`` for backbones, whose ``preprocess_input`` is used as it is.
    """
    spec = get_network(name)
    if spec.name == "vgg-m":
        from pipeline.matconvnet import read_converted

        return read_converted(imagenet_weights_file(spec, None, weights_path))[0]["mean"]
    return IMAGENET_BGR_MEAN[::-1].copy() if spec.preprocessing.mode == "caffe" else None


# --- building -----------------------------------------------------------------------------------

def _orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Orthogonal matrix (Saxe et al. 2014, gain 1) over (prod(shape[:-1]), shape[-1])."""
    rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols)), dtype=np.float32))
    q *= np.sign(np.diag(r))  # makes the result uniformly distributed
    return (q if rows >= cols else q.T).reshape(shape)


def _walk(layer: Any) -> list:
    """A layer, or every layer of a model (nested models included), in order."""
    return [l for sub in layer.layers for l in _walk(sub)] if hasattr(layer, "layers") else [layer]


def init_no_transfer(model: Any, seed: int = 0) -> None:
    """The paper's "no transfer" init, in place: orthogonal kernels (gain 1), biases 0.05.

    Every Dense/Conv kernel gets an orthogonal matrix over (fan-in, units); a depthwise kernel
    (h, w, c, m) over (h*w, c*m), one filter per column. Seeded: same seed, same weights.

    Args:
        model: a ``keras.Model`` or a single layer.
        seed: seed of ``numpy.random.default_rng``.
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in _walk(model):
        kernel = getattr(layer, "kernel", None) if isinstance(
            layer, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) \
            else None
        if kernel is None:
            continue
        shape = tuple(kernel.shape)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            value = _orthogonal((shape[0] * shape[1], shape[2] * shape[3]), rng).reshape(shape)
        else:
            value = _orthogonal(shape, rng)
        kernel.assign(value)
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.full(tuple(layer.bias.shape), BIAS_INIT, np.float32))


def build_network(name: str, *, weights: str | None, input_size: int | None = None,
                  width: float = 1.0, classes: int = 1000,
                  weights_path: str | os.PathLike | None = None, seed: int = 0) -> Any:
    """Build a registered network with its weights.

    Args:
        name: registry name (``NETWORKS``).
        weights: ``None``/``"none"`` (orthogonal init, biases 0.05, seeded) or ``"imagenet"``.
        input_size: side of the square input in px; default the network's.
        width: multiplier on every layer width (vgg-m and vgg16 with weights ``none`` only).
        classes: outputs of the softmax head (with ImageNet weights a new head replaces the
            1000-way one when they differ).
        weights_path: local ImageNet weights (``network.imagenet_weights``); vgg-m needs one.
        seed: fixes the init, the new head and the dropout.

    Returns:
        A ``keras.Model`` from images of shape (n, size, size, 3) to probabilities (n, classes).
    """
    spec = get_network(name)
    source = "none" if weights is None else str(weights)
    if source not in spec.weights:
        raise PipelineError(f"`network.weights` must be one of {list(spec.weights)} for {name}; "
                            f"got {weights!r}.")
    size = int(input_size or spec.input_size)
    if size < spec.min_input_size:
        raise PipelineError(f"{name} needs an input of at least {spec.min_input_size} px; got "
                            f"input_size={size}.")
    if width != 1.0 and (not spec.scalable or (source != "none" and name != "vgg-m")):
        raise PipelineError(f"width={width} needs a network that scales "
                            f"({[s for s in NETWORKS if NETWORKS[s].scalable]}), with weights none "
                            f"unless a converted vgg-m file; got {name} with weights {source}. "
                            "Use width 1.0.")
    if source == "none":
        if weights_path is not None:
            raise PipelineError(f"weights_path {weights_path} is set but weights is none, so it "
                                "would be ignored; remove it or use weights imagenet.")
        model = spec.builder(spec, size, width, classes, None, seed)
        init_no_transfer(model, seed)
        return model
    if name == "vgg16" and size != 224:
        raise PipelineError(f"vgg16 ImageNet weights include the top and need 224 px input; got "
                            f"input_size={size}.")
    path = imagenet_weights_file(spec, size, weights_path)
    native = 1000 if spec.keras_class == "VGG16" else classes
    try:
        model = spec.builder(spec, size, width, native, path, seed)
    except PipelineError:
        raise
    except Exception as exc:  # a truncated or wrong file must not look like a missing one
        raise PipelineError(f"could not load {name} ImageNet weights from {path} "
                            f"({type(exc).__name__}: {exc}). Delete or replace the file with "
                            f"{spec.imagenet_file.format(size=_mobilenet_rows(size))}.") from exc
    if model.output.shape[-1] != classes:
        model = replace_head(model, spec, classes, seed)
    return model


def feature_model(model: Any, spec: NetworkSpec) -> Any:
    """The model cut at the feature layer: images -> features of shape (n, feature width)."""
    import keras

    return keras.Model(model.input, model.get_layer(spec.feature_layer).output)


def replace_head(model: Any, spec: NetworkSpec, classes: int, seed: int = 0) -> Any:
    """Swap the classification head for a new ``classes``-way softmax (for fine-tuning).

    The returned model shares every layer up to ``spec.head_input`` (the feature layer and its
    weights included) with ``model``; the new Dense is seeded (orthogonal, biases 0.05).
    """
    import keras

    x = model.get_layer(spec.head_input).output
    dense = keras.layers.Dense(classes, activation=None if len(spec.head) == 2 else "softmax",
                               name=spec.head[0], dtype="float32" if len(spec.head) == 1 else None)
    x = dense(x)
    if len(spec.head) == 2:
        x = keras.layers.Softmax(name=spec.head[1], dtype="float32")(x)
    init_no_transfer(dense, seed)
    return keras.Model(model.input, x, name=model.name)


def preprocess(spec: NetworkSpec, images_uint8: np.ndarray,
               mean: np.ndarray | None = None) -> np.ndarray:
    """Turn RGB images (0–255) into network input.

    Args:
        spec: the network.
        images_uint8: array of shape (n, h, w, 3), RGB, values 0–255.
        mean: RGB mean of shape (3,) or (h, w, 3) to subtract: ``imagenet_mean`` for ImageNet
            weights, the training set's mean for networks trained from ``none``. ``None``: the
            weights' own preprocessing (vgg16: caffe mean; backbones: ``preprocess_input``).

    Returns:
        float32 array of shape (n, h, w, 3) in the network's channel order.
    """
    x = np.asarray(images_uint8)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise PipelineError(f"images must have shape (n, h, w, 3) RGB; got {x.shape}.")
    x = x.astype(np.float32)
    p = spec.preprocessing
    if mean is None:
        if p.mode == "mean":
            raise PipelineError(f"{spec.name} needs a mean: imagenet_mean('{spec.name}', "
                                "weights_path) for ImageNet weights, else the training set's mean.")
        if p.mode == "caffe":
            return x[..., ::-1] - IMAGENET_BGR_MEAN
        module = importlib.import_module(f"keras.applications.{p.keras_module}")
        return np.asarray(module.preprocess_input(x), dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32)
    if m.shape not in ((3,), x.shape[1:]):
        raise PipelineError(f"mean must have shape (3,) or {x.shape[1:]} (RGB); got {m.shape}.")
    if p.channel_order == "BGR":
        x, m = x[..., ::-1], m[..., ::-1]
    return (x - m).astype(np.float32)


def describe_networks() -> pd.DataFrame:
    """The registry as a table: name, input size, feature layer and width, preprocessing, weights."""
    return pd.DataFrame([{
        "name": s.name, "input_size": s.input_size, "feature_layer": s.feature_layer,
        "feature_width": s.feature_width,
        "preprocessing": f"{s.preprocessing.channel_order}, {s.preprocessing.mean_source}",
        "weights": ", ".join(s.weights),
        "imagenet_weights": s.imagenet_file.format(size=_mobilenet_rows(s.input_size)),
    } for s in NETWORKS.values()])


# --- device -------------------------------------------------------------------------------------

def select_device() -> str:
    """Log whether TensorFlow sees a GPU; TensorFlow then places ops there, else on the CPU.

    Returns:
        ``"/GPU:0"`` or ``"/CPU:0"``.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised: growth cannot change
            tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        log.info("TensorFlow sees %d GPU(s) (%s); networks run on /GPU:0", len(gpus),
                 ", ".join(g.name for g in gpus))
        return "/GPU:0"
    log.info("TensorFlow sees no GPU; networks run on the CPU (%d cores)", os.cpu_count() or 1)
    return "/CPU:0"


def set_mixed_precision(enabled: bool) -> None:
    """Use Keras' ``mixed_float16`` policy (GPU speed-up) or plain ``float32`` for new layers."""
    import keras

    if enabled and select_device() == "/CPU:0":
        log.warning("mixed precision without a GPU is slower than float32 on most CPUs")
    keras.mixed_precision.set_global_policy("mixed_float16" if enabled else "float32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``networks`` (none)."""


def run(args: argparse.Namespace) -> int:
    """Print the registry."""
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(describe_networks().to_string(index=False))
    return 0
