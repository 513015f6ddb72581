"""pipeline.models.torch_weights: PyTorch layouts into Keras, checked against NumPy forward passes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models.torch_weights import TorchLayer, assign_torch_weights

import keras  # noqa: E402  (a required dependency: a missing one must fail, not skip)


def _conv_nchw(x, w, b, groups=1):
    """Direct NumPy convolution, stride 1, no padding, PyTorch layouts: x (c, h, w), w (o, c/g, kh, kw)."""
    c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    out = np.zeros((o, h - kh + 1, wd - kw + 1))
    per = o // groups
    for oc in range(o):
        g = oc // per
        for i in range(h - kh + 1):
            for j in range(wd - kw + 1):
                out[oc, i, j] = np.sum(x[g * cg:(g + 1) * cg, i:i + kh, j:j + kw] * w[oc]) + b[oc]
    return out


def _model():
    x = keras.Input((6, 6, 4))
    y = keras.layers.Conv2D(6, 3, groups=2, name="conv")(x)
    y = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(y)
    y = keras.layers.BatchNormalization(epsilon=1e-5, name="bn")(y)
    y = keras.layers.Flatten()(y)
    y = keras.layers.Dense(3, name="fc")(y)
    return keras.Model(x, y, name="toy")


LAYERS = [TorchLayer("conv", "features.0", "conv"), TorchLayer("dw", "features.1", "depthwise"),
          TorchLayer("bn", "features.2", "bn"), TorchLayer("fc", "classifier", "linear")]


def _state(rng):
    return {"features.0.weight": rng.normal(size=(6, 2, 3, 3)), "features.0.bias": rng.normal(size=6),
            "features.1.weight": rng.normal(size=(12, 1, 3, 3)), "features.1.bias": rng.normal(size=12),
            "features.2.weight": rng.uniform(0.5, 2, 12), "features.2.bias": rng.normal(size=12),
            "features.2.running_mean": rng.normal(size=12),
            "features.2.running_var": rng.uniform(0.5, 2, 12),
            "features.2.num_batches_tracked": np.array(7),
            "classifier.weight": rng.normal(size=(3, 48)), "classifier.bias": rng.normal(size=3)}


def test_forward_matches_numpy_in_pytorch_layout():
    rng = np.random.default_rng(0)
    state = _state(rng)
    model = _model()
    assert assign_torch_weights(model, state, LAYERS) == 10
    x = rng.normal(size=(4, 6, 6)).astype(np.float32)  # (c, h, w) as PyTorch sees it
    y = _conv_nchw(x, state["features.0.weight"], state["features.0.bias"], groups=2)
    y = _conv_nchw(y, state["features.1.weight"], state["features.1.bias"], groups=6)
    bn = state["features.2."+"weight"], state["features.2.bias"], \
        state["features.2.running_mean"], state["features.2.running_var"]
    y = (y - bn[2][:, None, None]) / np.sqrt(bn[3][:, None, None] + 1e-5) * bn[0][:, None, None] \
        + bn[1][:, None, None]
    # Keras flattens (h, w, c); feed the NumPy result in that order to the linear layer.
    flat = y.transpose(1, 2, 0).reshape(-1)
    want = state["classifier.weight"] @ flat + state["classifier.bias"]
    got = model.predict(x.transpose(1, 2, 0)[None], verbose=0)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg="toy model output")


def test_errors_list_missing_unexpected_and_mismatched_keys_and_assign_nothing():
    rng = np.random.default_rng(1)
    state = _state(rng)
    del state["features.0.bias"]
    state["extra.weight"] = np.zeros(2)
    state["classifier.weight"] = np.zeros((3, 47))
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(PipelineError) as info:
        assign_torch_weights(model, state, LAYERS, source="toy.pth")
    text = str(info.value)
    assert "toy.pth" in text
    assert "missing keys: features.0.bias" in text
    assert "unexpected keys: extra.weight" in text
    assert "classifier.weight: (3, 47)" in text and "(48, 3)" in text
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))


def test_unknown_layer_is_named():
    with pytest.raises(PipelineError, match="'nope'"):
        assign_torch_weights(_model(), {}, [TorchLayer("nope", "x", "conv")])
