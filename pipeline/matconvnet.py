"""VGG-M as MatConvNet lays it out in ``imagenet-vgg-m.mat``: layout, Keras model, converter.

VGG-M (Chatfield et al., "Return of the Devil in the Details", BMVC 2014) is the network of
Menegola et al. (2017). MatConvNet's file lists 21 layers: conv1 relu1 norm1 pool1 conv2 relu2
norm2 pool2 conv3 relu3 conv4 relu4 conv5 relu5 pool5 fc6 relu6 fc7 relu7 fc8 prob. ``relu7`` is the
paper's "Layer 19", whose output are the features. ``VGG_M`` below is that layout as data; the
Keras builder and the converter's checks both read it, and Keras layers carry MatConvNet's names.

Keras layout: explicit ``ZeroPadding2D`` (``<name>_pad``) then a ``valid`` conv or max pool, so
MatConvNet's symmetric conv padding and asymmetric pool padding [top bottom left right] = [0 1 0 1]
are exact; fc6 (a 6×6×512→4096 convolution over the whole pool5 map at 224 px) is ``Flatten`` +
``Dense`` so any input size works; Keras adds ``drop6``/``drop7`` (dropout 0.5, inactive at
inference) after relu6/relu7, which the deployed ``.mat`` does not list.

Command: ``python -m pipeline convert-matconvnet --mat imagenet-vgg-m.mat --out FILE.npz`` reads
both MatConvNet layouts (``layers{i}.weights{1,2}`` + ``meta.normalization``, and the older
``layers{i}.filters``/``biases`` + top-level ``normalization``), checks every layer against the
layout, and writes one ``.npz`` atomically:

- ``<layer>/kernel``: conv ``(kh, kw, c_in, c_out)``; fc ``(n_in, n_out)`` (fc6 reshaped in
  row-major (H, W, C) order, which is what ``Flatten`` of an HWC map produces);
- ``<layer>/bias``: ``(c_out,)``;
- ``average_image``: the file's average image, float32 ``(h, w, 3)`` RGB (``(1, 1, 3)`` when the
  file stores a per-channel mean); ``mean``: its per-channel mean ``(3,)``;
- ``meta``: a JSON string (source file and its SHA-256, width, input size, classes).
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache import atomic_path, hash_file
from pipeline.errors import PipelineError

LRN_PARAM = (5, 2.0, 1e-4, 0.75)  # MatConvNet norm param [N kappa alpha beta] of VGG-M


@dataclass(frozen=True)
class MatLayer:
    """One layer of the MatConvNet layout.

    Attributes:
        name: MatConvNet's (and Keras') layer name.
        type: ``conv``, ``relu``, ``norm``, ``pool``, ``softmax`` or ``dropout`` (Keras only).
        size: kernel or pool size (square); ``0`` for a convolution over the whole input map (fc).
        channels: output channels at width 1.0 (conv/fc; ``0`` for fc8 = the number of classes).
        stride: stride (both directions).
        pad: padding [top, bottom, left, right].
    """

    name: str
    type: str
    size: int = 0
    channels: int = 0
    stride: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)


def _conv(name: str, size: int, channels: int, stride: int = 1, pad: int = 0) -> MatLayer:
    return MatLayer(name, "conv", size, channels, stride, (pad,) * 4)


def _pool(name: str) -> MatLayer:
    return MatLayer(name, "pool", 3, 0, 2, (0, 1, 0, 1))


VGG_M: tuple[MatLayer, ...] = (
    _conv("conv1", 7, 96, 2), MatLayer("relu1", "relu"), MatLayer("norm1", "norm"), _pool("pool1"),
    _conv("conv2", 5, 256, 2, 1), MatLayer("relu2", "relu"), MatLayer("norm2", "norm"),
    _pool("pool2"),
    _conv("conv3", 3, 512, 1, 1), MatLayer("relu3", "relu"),
    _conv("conv4", 3, 512, 1, 1), MatLayer("relu4", "relu"),
    _conv("conv5", 3, 512, 1, 1), MatLayer("relu5", "relu"), _pool("pool5"),
    _conv("fc6", 0, 4096), MatLayer("relu6", "relu"), MatLayer("drop6", "dropout"),
    _conv("fc7", 0, 4096), MatLayer("relu7", "relu"), MatLayer("drop7", "dropout"),
    _conv("fc8", 0, 0), MatLayer("prob", "softmax"),
)
WEIGHTED = tuple(layer.name for layer in VGG_M if layer.type == "conv")


def scaled(channels: int, width: float) -> int:
    """Channels of a layer at a width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def _out(n: int, size: int, stride: int, lo: int, hi: int) -> int:
    return (n + lo + hi - size) // stride + 1


def pool5_size(input_size: int) -> int:
    """Side of the pool5 map for a square input of ``input_size`` pixels (< 1: too small)."""
    n = input_size
    for layer in VGG_M:
        if layer.type in ("conv", "pool") and layer.size:
            n = _out(n, layer.size, layer.stride, layer.pad[0], layer.pad[1])
    return n


MIN_INPUT_SIZE = next(n for n in range(8, 256) if pool5_size(n) >= 1)


@functools.cache
def lrn_layer_class() -> type:
    """The Keras layer for MatConvNet's ``norm`` (cross-channel LRN), registered for saving.

    MatConvNet's ``vl_nnnormalize`` computes ``y = x (kappa + alpha sum_{G(k)} x^2)^-beta`` over
    ``G(k) = [k - floor((N-1)/2), k + ceil((N-1)/2)]`` without dividing alpha by N (unlike Caffe),
    i.e. TensorFlow's ``local_response_normalization`` with ``depth_radius = (N-1)/2`` (odd N).
    """
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="pipeline")
    class LocalResponseNorm(keras.layers.Layer):
        """Cross-channel local response normalisation, MatConvNet param [N kappa alpha beta]."""

        def __init__(self, size: int = 5, kappa: float = 2.0, alpha: float = 1e-4,
                     beta: float = 0.75, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.size, self.kappa, self.alpha, self.beta = int(size), kappa, alpha, beta

        def call(self, inputs: Any) -> Any:
            # float32 even under mixed precision: sums of squared activations overflow float16.
            return tf.nn.local_response_normalization(
                tf.cast(inputs, tf.float32), depth_radius=(self.size - 1) // 2,
                bias=self.kappa, alpha=self.alpha, beta=self.beta)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict:
            return {**super().get_config(), "size": self.size, "kappa": self.kappa,
                    "alpha": self.alpha, "beta": self.beta}

    return LocalResponseNorm


def custom_objects() -> dict[str, type]:
    """Objects ``keras.models.load_model`` needs for a saved VGG-M (registers them too)."""
    return {"LocalResponseNorm": lrn_layer_class()}


def build_vgg_m(input_size: int = 224, width: float = 1.0, classes: int = 1000,
                seed: int = 0) -> Any:
    """Keras functional VGG-M laid out like MatConvNet's ``imagenet-vgg-m.mat``.

    Args:
        input_size: side of the square RGB input, in pixels (at least ``MIN_INPUT_SIZE``).
        width: multiplier on every conv/fc width (fc7 then has ``round(4096 * width)`` units).
        classes: outputs of fc8 / prob.
        seed: seed of the dropout layers.

    Returns:
        A ``keras.Model`` with Keras' default init (``networks.build_network`` sets the paper's)
        from images of shape (n, input_size, input_size, 3) to probabilities of shape (n, classes).
    """
    import keras

    if pool5_size(input_size) < 1:
        raise PipelineError(f"vgg-m needs an input of at least {MIN_INPUT_SIZE} px; got "
                            f"input_size={input_size}.")
    L = keras.layers
    lrn = lrn_layer_class()
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = inputs
    for i, layer in enumerate(VGG_M):
        t, b, left, r = layer.pad
        if layer.type == "conv" and layer.size == 0:
            if len(x.shape) == 4:
                x = L.Flatten(name=f"{layer.name}_flatten")(x)
            units = classes if layer.channels == 0 else scaled(layer.channels, width)
            x = L.Dense(units, name=layer.name)(x)
            continue
        if layer.type in ("conv", "pool") and any(layer.pad):
            # MatConvNet pads convs with 0 and pools with -inf; 0 is the same for these pools:
            # they follow a ReLU (inputs >= 0) and every window holds a real element.
            x = L.ZeroPadding2D(((t, b), (left, r)), name=f"{layer.name}_pad")(x)
        if layer.type == "conv":
            x = L.Conv2D(scaled(layer.channels, width), layer.size, strides=layer.stride,
                         name=layer.name)(x)
        elif layer.type == "pool":
            x = L.MaxPooling2D(layer.size, strides=layer.stride, name=layer.name)(x)
        elif layer.type == "relu":
            x = L.ReLU(name=layer.name)(x)
        elif layer.type == "norm":
            x = lrn(*LRN_PARAM, name=layer.name, dtype="float32")(x)
        elif layer.type == "dropout":
            x = L.Dropout(0.5, seed=seed + i, name=layer.name)(x)
        else:
            x = L.Softmax(name=layer.name, dtype="float32")(x)
    return keras.Model(inputs, x, name="vgg_m")


def read_converted(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by ``convert``.

    Args:
        path: the ``.npz`` file.

    Returns:
        ``(arrays, meta)``: arrays by name (``conv1/kernel``, …, ``average_image``, ``mean``) and
        the metadata dict (``width``, ``input_size``, ``classes``, ``source``, ``sha256``, …).
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"converted VGG-M weights file {path} does not exist. Write it with "
                            "`python -m pipeline convert-matconvnet --mat imagenet-vgg-m.mat --out "
                            f"{path}` (set `network.imagenet_weights` to that file).")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:
        raise PipelineError(f"{path} is not a VGG-M weights file written by convert-matconvnet "
                            f"({exc}); convert imagenet-vgg-m.mat again.") from exc
    return arrays, meta


def set_vgg_m_weights(model: Any, path: str | Path) -> dict:
    """Copy converted weights into a Keras VGG-M built with the file's width and classes.

    Args:
        model: from ``build_vgg_m`` with the file's width, classes and input size.
        path: the ``.npz`` written by ``convert``.

    Returns:
        The file's metadata.
    """
    arrays, meta = read_converted(path)
    for name in WEIGHTED:
        layer = model.get_layer(name)
        for var, key in ((layer.kernel, f"{name}/kernel"), (layer.bias, f"{name}/bias")):
            if key not in arrays or tuple(arrays[key].shape) != tuple(var.shape):
                got = arrays[key].shape if key in arrays else "nothing"
                raise PipelineError(
                    f"{path}: {key} has shape {got}, the Keras vgg-m expects {tuple(var.shape)}. "
                    f"The file was converted at width {meta.get('width')} for "
                    f"{meta.get('input_size')} px input with {meta.get('classes')} classes; build "
                    "the network with those settings.")
            var.assign(arrays[key].astype(np.float32))
    return meta


# --- reading MatConvNet files -------------------------------------------------------------------

def _field(obj: Any, name: str, default: Any = None) -> Any:
    return getattr(obj, name, default) if obj is not None else default


def _pair(value: Any) -> tuple[int, int]:
    v = np.atleast_1d(np.asarray(value, dtype=float)).astype(int)
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def _quad(value: Any) -> tuple[int, int, int, int]:
    v = np.atleast_1d(np.asarray(0 if value is None else value, dtype=float)).astype(int)
    return tuple(int(v[0]) for _ in range(4)) if v.size == 1 else tuple(int(p) for p in v[:4])


def _weights(layer: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    weights = _field(layer, "weights")
    if weights is not None:  # current layout: weights = {filters, biases}
        items = list(np.atleast_1d(np.asarray(weights, dtype=object)))
        filters, biases = items[0], items[1] if len(items) > 1 else np.zeros(0)
    else:  # older layout: filters / biases fields
        filters, biases = _field(layer, "filters"), _field(layer, "biases", np.zeros(0))
    if filters is None:
        raise PipelineError(f"{where}: a conv layer without weights or filters.")
    filters = np.asarray(filters, dtype=np.float32)
    biases = np.asarray(biases, dtype=np.float32).reshape(-1)
    return filters, biases


def read_mat(mat_path: str | Path) -> tuple[list, Any]:
    """Load a MatConvNet SimpleNN file (either layout).

    Args:
        mat_path: the ``.mat`` file.

    Returns:
        ``(layers, normalization)``: the layer structs in order and the normalization struct
        (``meta.normalization``, or top-level ``normalization`` in older files; ``None`` if none).
    """
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise PipelineError(f"MatConvNet file {mat_path} does not exist. Download "
                            "imagenet-vgg-m.mat from https://www.vlfeat.org/matconvnet/pretrained/ "
                            "and pass its path with --mat.")
    try:
        mat = loadmat(mat_path, squeeze_me=True, struct_as_record=False)
    except (ValueError, OSError, NotImplementedError) as exc:  # scipy: v7.3 (HDF5) files
        raise PipelineError(f"{mat_path} is not a MATLAB v5/v7 .mat file scipy can read ({exc}); "
                            "re-save it with `save(file, '-struct', 'net', '-v7')`.") from exc
    if "layers" not in mat:
        raise PipelineError(f"{mat_path} has no `layers` variable; is it a MatConvNet SimpleNN "
                            "model (not a DagNN one)? Found: "
                            f"{sorted(k for k in mat if not k.startswith('__'))}.")
    norm = _field(mat.get("meta"), "normalization") or mat.get("normalization")
    return list(np.atleast_1d(mat["layers"])), norm


def convert(mat_path: str | Path, out: str | Path, width: float = 1.0,
            input_size: int | None = None) -> dict:
    """Check a MatConvNet VGG-M file against the layout and write its weights as ``.npz``.

    Args:
        mat_path: ``imagenet-vgg-m.mat`` (either MatConvNet layout).
        out: the ``.npz`` to write (atomically).
        width: the width multiplier the file was trained at (1.0 for the published model).
        input_size: input side in pixels; default the file's ``normalization.imageSize`` or 224.

    Returns:
        The metadata written to the file.
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise PipelineError(f"--out must name a .npz file; got {out}.")
    layers, norm = read_mat(mat_path)
    image_size = _field(norm, "imageSize")
    size = int(input_size or (np.atleast_1d(image_size)[0] if image_size is not None else 224))
    mat_layers = [l for l in layers if str(_field(l, "type", "")) != "dropout"]
    expected = [l for l in VGG_M if l.type != "dropout"]
    if len(mat_layers) != len(expected):
        raise PipelineError(
            f"{mat_path} has {len(mat_layers)} layers (dropout not counted): "
            f"{[str(_field(l, 'name', '?')) for l in mat_layers]}; VGG-M has {len(expected)}: "
            f"{[l.name for l in expected]}.")
    arrays: dict[str, np.ndarray] = {}
    hw, channels, classes = size, 3, 0
    for index, (got, want) in enumerate(zip(mat_layers, expected), start=1):
        name, kind = str(_field(got, "name", f"layer{index}")), str(_field(got, "type", ""))
        where = f"{mat_path} layer {index} ({name!r}, VGG-M's {want.name})"
        if kind in ("normalize", "lrn"):
            kind = "norm"
        if kind != want.type:
            raise PipelineError(f"{where}: type {kind!r}, expected {want.type!r}.")
        if kind in ("conv", "pool"):
            stride, pad = _pair(_field(got, "stride", 1)), _quad(_field(got, "pad", 0))
            if stride != (want.stride, want.stride) or pad != want.pad:
                raise PipelineError(f"{where}: stride {list(stride)} pad {list(pad)}, expected "
                                    f"stride {want.stride} pad {list(want.pad)}.")
        if kind == "pool":
            method, pool = str(_field(got, "method", "max")), _pair(_field(got, "pool"))
            if method != "max" or pool != (want.size, want.size):
                raise PipelineError(f"{where}: {method} pool {list(pool)}, expected max pool "
                                    f"{[want.size] * 2}.")
            hw = _out(hw, want.size, want.stride, want.pad[0], want.pad[1])
        elif kind == "norm":
            param = np.atleast_1d(np.asarray(_field(got, "param"), dtype=float))
            if param.shape != (4,) or not np.allclose(param, LRN_PARAM, rtol=1e-6):
                raise PipelineError(f"{where}: norm param {param.tolist()}, expected "
                                    f"[N kappa alpha beta] = {list(LRN_PARAM)}.")
        elif kind == "relu" and np.any(np.asarray(_field(got, "leak", 0), dtype=float) != 0):
            raise PipelineError(f"{where}: leaky ReLU, expected a plain ReLU.")
        elif kind == "conv":
            if _pair(_field(got, "dilate", 1)) != (1, 1):
                raise PipelineError(f"{where}: dilated convolution, expected dilate 1.")
            filters, biases = _weights(got, where)
            k = want.size or hw
            n_out = scaled(want.channels, width) if want.channels else biases.size
            want_shape = (k, k, channels, n_out)
            # loadmat's squeeze_me drops singleton axes (the 1x1 of fc7/fc8): compare without them
            if biases.size != n_out or [d for d in filters.shape if d != 1] != [
                    d for d in want_shape if d != 1]:
                raise PipelineError(
                    f"{where}: filters {list(filters.shape)} biases {biases.size}, expected "
                    f"{list(want_shape)} and {n_out} (width {width}, input {size} px). Pass the "
                    "file's --width / --input-size.")
            filters = filters.reshape(want_shape)
            if want.size:
                arrays[f"{want.name}/kernel"] = filters
                hw = _out(hw, want.size, want.stride, want.pad[0], want.pad[1])
            else:  # fc: HxWxCxN -> (H*W*C, N) row-major = Keras' Flatten order of an HWC map
                arrays[f"{want.name}/kernel"] = filters.reshape(-1, n_out)
                hw = 1
            arrays[f"{want.name}/bias"] = biases
            channels, classes = n_out, n_out
        if hw < 1:
            raise PipelineError(f"{where}: input of {size} px is too small for VGG-M.")
    if _field(norm, "averageImage") is None:
        raise PipelineError(f"{mat_path} has no meta.normalization.averageImage (or top-level "
                            "normalization.averageImage), the mean its weights were trained with.")
    average = np.asarray(_field(norm, "averageImage"), dtype=np.float32)
    if average.size == 3:
        average = average.reshape(1, 1, 3)
    if average.ndim != 3 or average.shape[-1] != 3:
        raise PipelineError(f"{mat_path}: normalization.averageImage has shape "
                            f"{list(average.shape)}, expected 1x1x3 or HxWx3.")
    arrays["average_image"] = average
    arrays["mean"] = average.reshape(-1, 3).mean(axis=0, dtype=np.float64).astype(np.float32)
    meta = {"source": str(mat_path), "sha256": hash_file(mat_path), "width": width,
            "input_size": size, "classes": classes, "layers": [l.name for l in VGG_M],
            "lrn_param": list(LRN_PARAM), "average_image_shape": list(average.shape)}
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``convert-matconvnet``."""
    parser.add_argument("--mat", required=True, help="MatConvNet imagenet-vgg-m.mat")
    parser.add_argument("--out", required=True, help="the .npz to write")
    parser.add_argument("--width", type=float, default=1.0,
                        help="width multiplier the file was made at (default 1.0)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="input side in px (default: the file's imageSize, else 224)")


def run(args: argparse.Namespace) -> int:
    """Convert the file and print what was written."""
    meta = convert(args.mat, args.out, width=args.width, input_size=args.input_size)
    print(f"wrote {args.out}: VGG-M width {meta['width']}, {meta['input_size']} px input, "
          f"{meta['classes']} classes, average image {meta['average_image_shape']}")
    return 0
