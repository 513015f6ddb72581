"""The converter of MatConvNet's ``imagenet-vgg-m.mat`` into the pipeline's VGG-M weights file.

``convert`` reads both MatConvNet layouts (``layers{i}.weights{1,2}`` + ``meta.normalization``, and
the older ``layers{i}.filters``/``biases`` + top-level ``normalization``), checks every layer
against the layout of ``pipeline.models.vgg_m.VGG_M``, and writes one ``.npz`` atomically:

- ``<layer>/kernel``: conv ``(kh, kw, c_in, c_out)``; fc ``(n_in, n_out)`` (fc6 reshaped in
  row-major (H, W, C) order, which is what ``Flatten`` of an HWC map produces);
- ``<layer>/bias``: ``(c_out,)``;
- ``average_image``: the file's average image, float32 ``(h, w, 3)`` RGB (``(1, 1, 3)`` when the
  file stores a per-channel mean); ``mean``: its per-channel mean ``(3,)``;
- ``meta``: a JSON string (source file and its SHA-256, width, input size, classes).

The command: ``python -m pipeline convert-matconvnet --mat imagenet-vgg-m.mat --out FILE.npz``
(``pipeline.commands.convert_matconvnet``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.files import atomic_path, hash_file
from pipeline.errors import PipelineError
from pipeline.models.vgg_m import LRN_PARAM, VGG_M, out_size, scaled


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
            hw = out_size(hw, want.size, want.stride, want.pad[0], want.pad[1])
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
                hw = out_size(hw, want.size, want.stride, want.pad[0], want.pad[1])
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

