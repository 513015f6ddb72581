"""The network registry: each network by name with builder, preprocessing, feature layer, weights.

Like timm's ``_cfg`` and Keras applications, an entry carries everything needed to use a network, so
preprocessing is never chosen apart from the model. ``vgg-m`` is MatConvNet's VGG-M
(``pipeline.matconvnet``; features ``relu7``), ``vgg16`` is ``keras.applications.VGG16`` (features
``fc2``, "caffe" preprocessing), the other backbones are Keras applications without top plus global
average pooling (features ``avg_pool``) and a softmax head, with their own ``preprocess_input``.

Weights ``none`` are the paper's no-transfer init (orthogonal kernels, gain 1, biases 0.05, seeded).
``imagenet`` loads the file that ``pipeline.weights.imagenet_weights_file`` finds: Keras' cached
file (downloaded when online), a local ``weights_path``, or for vgg-m the file written by
``convert-matconvnet``; anything missing raises naming the file to place and where, never falling
back to random weights. Importing this module does not import TensorFlow.
Command: ``python -m pipeline networks`` prints the registry.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import scipy.linalg

from pipeline.errors import PipelineError
from pipeline.matconvnet import MIN_INPUT_SIZE
from pipeline.weights import mobilenet_rows, imagenet_weights_file

log = logging.getLogger(__name__)

IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)  # Keras "caffe" mode
BIAS_INIT = 0.05
_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Preprocessing:
    """How RGB images (0–255) become network input.

    Attributes:
        mode: ``mean`` (minus the mean that comes with the weights), ``caffe`` (RGB→BGR, minus
            ``IMAGENET_BGR_MEAN``) or ``keras`` (``keras.applications.<module>.preprocess_input``).
        channel_order: ``RGB`` or ``BGR``, the order the network sees.
        mean_source: the ImageNet preprocessing, in words.
        keras_module: the ``keras.applications`` module of ``preprocess_input``.
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
        builder: ``(spec, input_size, width, classes, weights_file, seed) -> keras.Model``, with
            Keras' default init or the weights of ``weights_file``.
        input_size, min_input_size: default and smallest side of the square input, px.
        feature_layer, feature_width: the features' layer, and their length at width 1.0.
        head_input: layer feeding the classification head; ``head``: the head's layer names.
        preprocessing: see ``Preprocessing``.
        weights: the weights sources, ``none`` and ``imagenet``.
        imagenet_file, imagenet_url: ImageNet weights file name (``{size}``: input size) and its
            download folder (``None``: made locally).
        keras_class: the ``keras.applications`` class; scalable: whether ``width`` != 1 works.
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
        _efficientnet_imagenet_scaling(base)
    # pooling="avg" done here so the feature layer has the same name in every backbone
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    x = keras.layers.Dense(classes, activation="softmax", name="predictions", dtype="float32")(x)
    model = keras.Model(inputs, x, name=spec.name)
    if weights_file is not None:
        init_no_transfer(model.get_layer("predictions"), seed)  # the new head, seeded
    return model


def _efficientnet_imagenet_scaling(base: Any) -> None:
    """Give a by-path EfficientNet what Keras adds for ``weights="imagenet"`` only.

    That is a ``Rescaling(1 / sqrt(std))`` after the ``Normalization`` (TF issue 49930); dividing
    (x - mean) / sqrt(var) by sqrt(std) is the same as normalising with variance var * std.
    """
    import keras

    norm = next(l for l in base.layers if isinstance(l, keras.layers.Normalization))
    norm.adapt_variance.assign(norm.adapt_variance.numpy() * np.array([0.229, 0.224, 0.225]))
    norm.finalize_state()


def _backbone(name: str, keras_class: str, module: str, size: int, min_size: int, width: int,
              file: str, url: str, mode: str) -> NetworkSpec:
    return NetworkSpec(
        name, _build_backbone, size, min_size, "avg_pool", width, "avg_pool", ("predictions",),
        Preprocessing("keras", "BGR" if mode.startswith("caffe") else "RGB",
                      f"keras.applications.{module}.preprocess_input: {mode}", module),
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
              "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", f"{_KERAS_URL}resnet/",
              "caffe (BGR, minus ImageNet mean)"),
    _backbone("densenet121", "DenseNet121", "densenet", 224, 32, 1024,
              "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", f"{_KERAS_URL}densenet/",
              "torch (0-1, ImageNet mean and std)"),
    _backbone("mobilenetv2", "MobileNetV2", "mobilenet_v2", 224, 32, 1280,
              "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
              f"{_KERAS_URL}mobilenet_v2/", "tf (-1 to 1)"),
    _backbone("efficientnetb0", "EfficientNetB0", "efficientnet", 224, 32, 1280,
              "efficientnetb0_notop.h5", "https://storage.googleapis.com/keras-applications/",
              "identity (scaling inside the model)"),
    _backbone("inceptionv3", "InceptionV3", "inception_v3", 299, 75, 2048,
              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
              f"{_KERAS_URL}inception_v3/", "tf (-1 to 1)"),
)}


def get_network(name: str) -> NetworkSpec:
    """The registered network ``name``; unknown names fail listing the known ones."""
    if name not in NETWORKS:
        raise PipelineError(f"No such network: {name!r}. Known networks are: "
                            f"{', '.join(NETWORKS)} (`network.name` in the experiment config).")
    return NETWORKS[name]


# --- building -----------------------------------------------------------------------------------

def _orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Orthogonal matrix (Saxe et al. 2014, gain 1) over (prod(shape[:-1]), shape[-1]).

    The Q factor (positive-diagonal R) of a Gaussian matrix, as Keras' ``Orthogonal``. Computed by
    CholeskyQR2 (two passes of Q = A chol(A^T A)^-1), as BLAS-3 products are ~10x faster than
    LAPACK's Householder QR here; float64 unless A is tall enough to be well conditioned.
    """
    rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
    big, small = max(rows, cols), min(rows, cols)
    q = rng.standard_normal((big, small), dtype=np.float32 if big >= 2 * small else np.float64)
    for _ in range(2):
        upper = np.linalg.cholesky(q.T @ q).T
        q = scipy.linalg.solve_triangular(upper, q.T, trans="T", check_finite=False).T
    return np.asarray(q if rows >= cols else q.T, dtype=np.float32).reshape(shape)


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
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    rng = np.random.default_rng(seed)
    # One BLAS thread: OpenBLAS' threading costs more than it gains on the many small kernels
    # (100x on a 2-core machine), and the weights do not depend on the core count.
    with threadpool_limits(limits=1, user_api="blas"):
        for layer in _walk(model):
            if not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D,
                                      keras.layers.DepthwiseConv2D)):
                continue
            shape = tuple(layer.kernel.shape)
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                value = _orthogonal((shape[0] * shape[1], shape[2] * shape[3]), rng)
            else:
                value = _orthogonal(shape, rng)
            layer.kernel.assign(value.reshape(shape))
            if layer.bias is not None:
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
                            f"{spec.imagenet_file.format(size=mobilenet_rows(size))}.") from exc
    if model.output.shape[-1] != classes:
        model = replace_head(model, spec, classes, seed)
    return model


def feature_model(model: Any, spec: NetworkSpec) -> Any:
    """The model cut at the feature layer.

    Args:
        model: a model from ``build_network`` (or ``replace_head``).
        spec: its registry entry.

    Returns:
        A ``keras.Model`` from images to features of shape (n, feature width).
    """
    import keras

    return keras.Model(model.input, model.get_layer(spec.feature_layer).output)


def replace_head(model: Any, spec: NetworkSpec, classes: int, seed: int = 0) -> Any:
    """Swap the classification head for a new ``classes``-way softmax (for fine-tuning).

    Args:
        model: a model from ``build_network``.
        spec: its registry entry.
        classes: outputs of the new head.
        seed: seed of the new Dense (orthogonal kernel, biases 0.05).

    Returns:
        A ``keras.Model`` sharing every layer up to ``spec.head_input`` (the feature layer and its
        weights included) with ``model``, then the new head.
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


def preprocess(spec: NetworkSpec, images_uint8: Any, mean: np.ndarray | None = None) -> Any:
    """Turn RGB images (0–255) into network input.

    Args:
        spec: the network.
        images_uint8: array of shape (n, h, w, 3), RGB, values 0–255: a NumPy array, or a
            TensorFlow tensor (e.g. inside a ``tf.data`` map).
        mean: RGB mean of shape (3,) or (h, w, 3) to subtract: ``imagenet_mean`` for ImageNet
            weights, the training set's mean for networks trained from ``none``. ``None``: the
            weights' own preprocessing (vgg16: caffe mean; backbones: ``preprocess_input``).

    Returns:
        float32 array (or tensor, for a tensor) of shape (n, h, w, 3) in the network's channel
        order.
    """
    tf = sys.modules.get("tensorflow")  # a tensor exists only once TensorFlow is imported
    tensor = tf is not None and tf.is_tensor(images_uint8)
    x = tf.cast(images_uint8, tf.float32) if tensor else np.asarray(images_uint8, np.float32)
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise PipelineError(f"images must have shape (n, h, w, 3) RGB; got {shape}.")
    p = spec.preprocessing
    if mean is None:
        if p.mode == "mean":
            raise PipelineError(f"{spec.name} needs a mean: imagenet_mean('{spec.name}', "
                                "weights_path) for ImageNet weights, else the training set's mean.")
        if p.mode == "caffe":
            return x[..., ::-1] - IMAGENET_BGR_MEAN
        module = importlib.import_module(f"keras.applications.{p.keras_module}")
        out = module.preprocess_input(x)
        return out if tensor else np.asarray(out, dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32)
    if m.shape != (3,) and (m.ndim != 3 or any(
            want not in (got, None) for got, want in zip(m.shape, shape[1:]))):
        raise PipelineError(f"mean must have shape (3,) or {shape[1:]} (RGB); got {m.shape}.")
    if p.channel_order == "BGR":
        x, m = x[..., ::-1], m[..., ::-1]
    return x - m


def describe_networks() -> pd.DataFrame:
    """The registry as a table: name, input size, feature layer/width, preprocessing, weights."""
    return pd.DataFrame([{
        "name": s.name, "input_size": s.input_size, "feature_layer": s.feature_layer,
        "feature_width": s.feature_width,
        "preprocessing": f"{s.preprocessing.channel_order}, {s.preprocessing.mean_source}",
        "weights": ", ".join(s.weights),
        "imagenet_weights": s.imagenet_file.format(size=mobilenet_rows(s.input_size)),
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
