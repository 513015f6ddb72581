"""Tests for pipeline.models.matconvnet: MatConvNet VGG-M files converted to Keras.

A small VGG-M-shaped network (width 1/16, 74 px input, 10 classes) is written as a MatConvNet
``.mat`` in both layouts, converted, loaded through ``build_network`` and compared with an
independent NumPy implementation of MatConvNet's forward pass (vl_nnconv, vl_nnnormalize,
vl_nnpool, relu, softmax). At 74 px every pool's asymmetric padding takes part and pool5 is 2x2,
so the flattening order of fc6 matters.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from numpy.lib.stride_tricks import sliding_window_view

import formats

from pipeline.models import matconvnet


from pipeline.models import weights
from pipeline.errors import PipelineError
from pipeline.models.build import build_network, feature_model
from pipeline.models.preprocessing import preprocess
from pipeline.models.registry import get_network
from pipeline.models.vgg_m import (MIN_INPUT_SIZE, lrn_layer_class, pool5_size,
                                   read_converted)

WIDTH, SIZE, CLASSES = 0.0625, 74, 10
LRN = formats.LRN
ARCH = formats.VGG_M_ARCH


# --- an independent NumPy MatConvNet --------------------------------------------------------------

def nn_conv(x, w, b, stride, pad):
    """vl_nnconv: cross-correlation of x (H, W, C) with w (kh, kw, C, K), zero padding."""
    t, bo, l, r = pad
    x = np.pad(x, ((t, bo), (l, r), (0, 0)))
    win = sliding_window_view(x, w.shape[:2], axis=(0, 1))[::stride, ::stride]  # i j c y x
    return np.einsum("ijcyx,yxck->ijk", win, w) + b


def nn_pool(x, size, stride, pad):
    """vl_nnpool max: padding never wins (-inf)."""
    t, bo, l, r = pad
    x = np.pad(x, ((t, bo), (l, r), (0, 0)), constant_values=-np.inf)
    return sliding_window_view(x, (size, size), axis=(0, 1))[::stride, ::stride].max(axis=(3, 4))


def nn_normalize(x, param):
    """vl_nnnormalize: x (kappa + alpha sum_{G(k)} x^2)^-beta, G(k) = [k-floor((N-1)/2), k+ceil]."""
    n, kappa, alpha, beta = param
    depth = x.shape[-1]
    sums = np.stack([(x[..., max(0, k - int(np.floor((n - 1) / 2))):
                        min(depth, k + int(np.ceil((n - 1) / 2)) + 1)] ** 2).sum(-1)
                     for k in range(depth)], axis=-1)
    return x * (kappa + alpha * sums) ** -beta


def nn_forward(net, image):
    """MatConvNet SimpleNN forward of one (H, W, 3) float64 input; returns every layer's output."""
    outputs, x = {}, image
    for layer in net:
        kind = layer["type"]
        if kind == "conv":
            x = nn_conv(x, layer["filters"], layer["biases"], layer["stride"], layer["pad"])
        elif kind == "pool":
            x = nn_pool(x, layer["pool"], layer["stride"], layer["pad"])
        elif kind == "normalize":
            x = nn_normalize(x, layer["param"])
        elif kind == "relu":
            x = np.maximum(x, 0)
        else:
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            x = e / e.sum(axis=-1, keepdims=True)
        outputs[layer["name"]] = x
    return outputs


# --- a small MatConvNet file (tests/formats.py writes it) ---------------------------------------

def make_net(seed=0):
    """Random weights for the VGG-M layout at WIDTH/SIZE/CLASSES, as a list of layer dicts."""
    return formats.make_vgg_m_net(WIDTH, SIZE, CLASSES, seed)


def write_mat(path, net, average_image, layout="current"):
    formats.write_mat(path, net, average_image, SIZE, layout)


def as_float32(net):
    """The float32 weights the .mat file holds, back in float64 for the reference."""
    return [{**l, **{k: l[k].astype(np.float32).astype(np.float64) for k in ("filters", "biases")
                     if k in l}} for l in net]


def check_close(name, got, want):
    """allclose(rtol 1e-4) with atol 1e-5 relative to the array's scale (float32 vs float64)."""
    atol = 1e-5 * max(1.0, float(np.abs(want).max()))
    assert np.allclose(got, want, rtol=1e-4, atol=atol), (
        f"{name}: Keras and the NumPy MatConvNet differ; max |diff| "
        f"{np.abs(got - want).max():.3g} (atol {atol:.3g})")


# --- tests ---------------------------------------------------------------------------------------

def test_lrn_layer_matches_vl_nnnormalize():
    x = np.random.default_rng(1).normal(0, 100, (2, 3, 4, 11))
    got = lrn_layer_class()(*LRN)(x.astype(np.float32)).numpy()
    want = nn_normalize(x, LRN)
    check_close("norm", got, want)
    # the inputs are large enough that the normalisation is far from a constant scaling
    assert not np.allclose(want, x * LRN[1] ** -LRN[3], rtol=0.1)


@pytest.mark.parametrize("layout, average", [("current", "per-channel"), ("old", "full")])
def test_converted_weights_match_numpy_matconvnet(tmp_path, layout, average):
    net = make_net(seed=3)
    rng = np.random.default_rng(4)
    average_image = (rng.uniform(90, 130, (1, 1, 3)) if average == "per-channel"
                     else rng.uniform(60, 160, (SIZE, SIZE, 3)))
    write_mat(tmp_path / "vgg.mat", net, average_image, layout)
    out = tmp_path / "vgg.npz"
    meta = matconvnet.convert(tmp_path / "vgg.mat", out, width=WIDTH)
    assert (meta["input_size"], meta["classes"], meta["width"]) == (SIZE, CLASSES, WIDTH)

    arrays, _ = read_converted(out)
    assert np.allclose(arrays["average_image"], average_image.astype(np.float32))
    channel_mean = average_image.astype(np.float32).reshape(-1, 3).mean(axis=0, dtype=float)
    assert np.allclose(arrays["mean"], channel_mean, rtol=1e-6)

    spec = get_network("vgg-m")
    images = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    x = preprocess(spec, images, mean=weights.imagenet_mean(get_network("vgg-m"), out))
    assert np.allclose(x, images - channel_mean, atol=1e-4), "preprocess: mean from the file"

    model = build_network("vgg-m", weights="imagenet", weights_path=out,
                                   input_size=SIZE, width=WIDTH, classes=CLASSES)
    features = feature_model(model, spec)(x, training=False).numpy()
    probs = model(x, training=False).numpy()
    reference = [nn_forward(as_float32(net), image.astype(np.float64)) for image in x]
    check_close("relu7", features, np.stack([r["relu7"].reshape(-1) for r in reference]))
    check_close("prob", probs, np.stack([r["prob"].reshape(-1) for r in reference]))
    assert features.shape == (3, round(4096 * WIDTH)) and (features > 0).any()


def test_converted_weights_refuse_other_input_size(tmp_path):
    write_mat(tmp_path / "vgg.mat", make_net(), np.full((1, 1, 3), 120.0))
    matconvnet.convert(tmp_path / "vgg.mat", tmp_path / "vgg.npz", width=WIDTH)
    with pytest.raises(PipelineError, match="fc6/kernel"):
        build_network("vgg-m", weights="imagenet", weights_path=tmp_path / "vgg.npz",
                               input_size=128, width=WIDTH)


def _mutate(net, name, **changes):
    return [{**l, **changes} if l["name"] == name else l for l in net]


@pytest.mark.parametrize("name, changes, message", [
    ("conv2", {"stride": 1}, r"layer 5 \('conv2'.*stride \[1, 1\]"),
    ("pool1", {"pad": [0, 0, 0, 0]}, r"'pool1'.*pad \[0, 0, 0, 0\]"),
    ("norm2", {"param": np.array([5.0, 1.0, 1e-4, 0.75])}, r"'norm2'.*norm param"),
    ("relu3", {"type": "sigmoid"}, r"'relu3'.*type 'sigmoid'"),
])
def test_mismatching_layer_is_named(tmp_path, name, changes, message):
    write_mat(tmp_path / "bad.mat", _mutate(make_net(), name, **changes), np.zeros((1, 1, 3)))
    with pytest.raises(PipelineError, match=message):
        matconvnet.convert(tmp_path / "bad.mat", tmp_path / "bad.npz", width=WIDTH)
    assert not (tmp_path / "bad.npz").exists()


def test_wrong_width_is_named(tmp_path):
    write_mat(tmp_path / "vgg.mat", make_net(), np.zeros((1, 1, 3)), layout="old")
    with pytest.raises(PipelineError, match=r"'conv1'.*filters \[7, 7, 3, 6\].*--width"):
        matconvnet.convert(tmp_path / "vgg.mat", tmp_path / "vgg.npz", width=1.0)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        matconvnet.convert(tmp_path / "nope.mat", tmp_path / "out.npz")
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.ones(3)})
    with pytest.raises(PipelineError, match="no `layers` variable"):
        matconvnet.convert(tmp_path / "other.mat", tmp_path / "out.npz")
    with pytest.raises(PipelineError, match="convert-matconvnet"):
        read_converted(tmp_path / "missing.npz")
    write_mat(tmp_path / "vgg.mat", make_net(), np.zeros((1, 1, 3)))
    scipy.io.savemat(tmp_path / "no_mean.mat",
                     {"layers": scipy.io.loadmat(tmp_path / "vgg.mat")["layers"]})
    with pytest.raises(PipelineError, match="averageImage"):
        matconvnet.convert(tmp_path / "no_mean.mat", tmp_path / "out.npz", width=WIDTH,
                           input_size=SIZE)


def test_cli_converts(tmp_path, capsys):
    from pipeline.cli import main

    write_mat(tmp_path / "vgg.mat", make_net(), np.full((1, 1, 3), 100.0))
    status = main(["convert-matconvnet", "--mat", str(tmp_path / "vgg.mat"), "--out",
                   str(tmp_path / "w.npz"), "--width", str(WIDTH)])
    assert status == 0 and "10 classes" in capsys.readouterr().out
    assert read_converted(tmp_path / "w.npz")[1]["sha256"]
    assert main(["convert-matconvnet", "--mat", str(tmp_path / "vgg.mat"), "--out",
                 str(tmp_path / "w.npz")]) == 2  # width 1.0 does not match the file


def test_pool5_size_of_the_published_network():
    # 224 px -> conv1 109 -> pool1 54 -> conv2 26 -> pool2 13 -> pool5 6: fc6 is 6x6x512 -> 4096
    assert pool5_size(224) == 6
    assert pool5_size(MIN_INPUT_SIZE) >= 1
    assert pool5_size(MIN_INPUT_SIZE - 1) < 1


