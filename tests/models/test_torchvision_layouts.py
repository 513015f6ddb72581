"""Keras networks laid out like torchvision's (MnasNet, ShuffleNet V2, SqueezeNet, GoogLeNet,
ResNeXt) and the paper's standard CNN.

Three kinds of evidence, none of which needs torch here:

* names and shapes: ``tests/fixtures/torchvision/<network>.json`` lists every state-dict key and
  shape of the real torchvision 0.29.1 model (written by ``fixtures/torchvision/generate.py`` in a
  throwaway venv); a random state dict built from it must map with no missing or unexpected key
  and no shape mismatch;
* characteristic blocks: each network's typical block(s), sliced out of the Keras model, agree with
  a NumPy forward pass written here from torchvision's source in PyTorch's layout (NCHW, -inf
  padded pools, ``ceil_mode`` by ATen's formula, ``chunk`` and ``channel_shuffle`` as ``view`` and
  ``transpose``): rtol 1e-4, atol 1e-5 times the reference's largest magnitude;
* real torchvision outputs: ``reference_<network>.json`` holds what torchvision itself computed
  for ShuffleNet V2 and SqueezeNet (whole networks, 64 px) with the seeded random weights
  ``generate.random_state``; the Keras models must reproduce it (same tolerance).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.errors import PipelineError
from pipeline.models.torch_weights import assign_torch_weights

import keras  # noqa: E402  (a required dependency: a missing one must fail, not skip)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision"
NETWORKS = {"mnasnet": "mnasnet1_0", "shufflenet": "shufflenet_v2_x1_0",
            "squeezenet": "squeezenet1_1", "googlenet": "googlenet",
            "resnext": "resnext50_32x4d"}
# torchvision's own meta["min_size"] of the IMAGENET1K_V1 weights (1 where it says (1, 1))
TORCHVISION_MIN_SIZE = {"mnasnet": 1, "shufflenet": 1, "squeezenet": 17, "googlenet": 15,
                        "resnext": 1}
WIDTHS = {"mnasnet": 1280, "shufflenet": 1024, "squeezenet": 512, "googlenet": 1024,
          "resnext": 2048, "standard_cnn": 11}
SIZE = 64


def _generate():
    spec = importlib.util.spec_from_file_location("tv_generate", FIXTURES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generate()


def _module(name: str):
    return importlib.import_module(f"pipeline.models.{name}")


def _keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = json.loads((FIXTURES / f"{NETWORKS[name]}.json").read_text())["keys"]
    return [(k, tuple(s)) for k, s in rows]


@functools.cache
def _loaded(name: str, size: int = SIZE, seed: int = 1):
    """The Keras model at ``size`` px with a random state dict in torchvision's names."""
    m = _module(name)
    state = GEN.random_state(_keys(name), seed)
    model = m.build(size)
    prepared = getattr(m, "prepare_torch_state", dict)(state)
    copied = assign_torch_weights(model, prepared, m.torch_layers(model), source=name,
                                  ignore=m.TORCH_IGNORE)
    return model, state, copied


def _slice(model, start: str, end: str, x_chw: np.ndarray) -> np.ndarray:
    sub = keras.Model(model.get_layer(start).output, model.get_layer(end).output)
    return sub.predict(x_chw.transpose(1, 2, 0)[None], verbose=0)[0].transpose(2, 0, 1)


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=what)


# ---- NumPy in PyTorch's layout: x is (c, h, w), weights as in the state dict --------------------

def conv(x, w, b=None, stride=1, padding=0, groups=1):
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    o, cg, kh, kw = w.shape
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    win = win.reshape(groups, cg, *win.shape[1:])
    y = np.einsum("gchwij,gocij->gohw", win, w.reshape(groups, o // groups, cg, kh, kw))
    y = y.reshape(o, *y.shape[2:])
    return y if b is None else y + b[:, None, None]


def bn(x, st, p, eps=1e-5):
    g, b, m, v = (st[f"{p}.{k}"][:, None, None] for k in ("weight", "bias", "running_mean",
                                                            "running_var"))
    return (x - m) / np.sqrt(v + eps) * g + b


def relu(x):
    return np.maximum(x, 0)


def max_pool(x, k, s, padding=0, ceil_mode=False):
    """``F.max_pool2d``: -inf padding; output size as ATen's ``pooling_output_shape``."""
    c, h, w = x.shape

    def size(n):
        out = (n + 2 * padding - (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        return out - 1 if ceil_mode and (out - 1) * s >= n + padding else out

    oh, ow = size(h), size(w)
    xp = np.full((c, max(h + 2 * padding, (oh - 1) * s + k),
                  max(w + 2 * padding, (ow - 1) * s + k)), -np.inf)
    xp[:, padding:padding + h, padding:padding + w] = x
    return sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s][:, :oh, :ow].max((-1, -2))


def conv_bn(x, st, p_conv, p_bn, eps=1e-5, **kw):
    return bn(conv(x, st[f"{p_conv}.weight"], st.get(f"{p_conv}.bias"), **kw), st, p_bn, eps)


def mnas_block(x, st, p, k, stride):  # torchvision _InvertedResidual
    y = relu(conv_bn(x, st, f"{p}.layers.0", f"{p}.layers.1"))
    y = relu(conv_bn(y, st, f"{p}.layers.3", f"{p}.layers.4", stride=stride, padding=k // 2,
                     groups=y.shape[0]))
    y = conv_bn(y, st, f"{p}.layers.6", f"{p}.layers.7")
    return y + x if y.shape == x.shape and stride == 1 else y


def channel_shuffle(x, groups):  # view(g, c/g, h, w), transpose(0, 1), view(c, h, w)
    c, h, w = x.shape
    return x.reshape(groups, c // groups, h, w).transpose(1, 0, 2, 3).reshape(c, h, w)


def shuffle_unit(x, st, p, stride):  # torchvision shufflenetv2.InvertedResidual
    def branch2(z):
        q = f"{p}.branch2"
        z = relu(conv_bn(z, st, f"{q}.0", f"{q}.1"))
        z = conv_bn(z, st, f"{q}.3", f"{q}.4", stride=stride, padding=1, groups=z.shape[0])
        return relu(conv_bn(z, st, f"{q}.5", f"{q}.6"))

    if stride == 1:
        x1, x2 = np.split(x, 2, axis=0)  # x.chunk(2, dim=1)
        out = np.concatenate([x1, branch2(x2)])
    else:
        q = f"{p}.branch1"
        b1 = conv_bn(x, st, f"{q}.0", f"{q}.1", stride=stride, padding=1, groups=x.shape[0])
        out = np.concatenate([relu(conv_bn(b1, st, f"{q}.2", f"{q}.3")), branch2(x)])
    return channel_shuffle(out, 2)


def fire(x, st, p):
    s = relu(conv(x, st[f"{p}.squeeze.weight"], st[f"{p}.squeeze.bias"]))
    return np.concatenate([relu(conv(s, st[f"{p}.expand1x1.weight"], st[f"{p}.expand1x1.bias"])),
                           relu(conv(s, st[f"{p}.expand3x3.weight"], st[f"{p}.expand3x3.bias"],
                                     padding=1))])


def basic(x, st, p, **kw):  # BasicConv2d: BN eps 0.001
    return relu(conv_bn(x, st, f"{p}.conv", f"{p}.bn", eps=1e-3, **kw))


def inception(x, st, p):
    b1 = basic(x, st, f"{p}.branch1")
    b2 = basic(basic(x, st, f"{p}.branch2.0"), st, f"{p}.branch2.1", padding=1)
    b3 = basic(basic(x, st, f"{p}.branch3.0"), st, f"{p}.branch3.1", padding=1)
    b4 = basic(max_pool(x, 3, 1, padding=1, ceil_mode=True), st, f"{p}.branch4.1")
    return np.concatenate([b1, b2, b3, b4])


def bottleneck(x, st, p, stride):  # torchvision resnet.Bottleneck, groups=32
    y = relu(conv_bn(x, st, f"{p}.conv1", f"{p}.bn1"))
    y = relu(conv_bn(y, st, f"{p}.conv2", f"{p}.bn2", stride=stride, padding=1, groups=32))
    y = conv_bn(y, st, f"{p}.conv3", f"{p}.bn3")
    if f"{p}.downsample.0.weight" in st:
        x = conv_bn(x, st, f"{p}.downsample.0", f"{p}.downsample.1", stride=stride)
    return relu(y + x)


# ---- builds, sizes, feature layer ---------------------------------------------------------------

@pytest.mark.parametrize("name", [*NETWORKS, "standard_cnn"])
def test_builds_with_avg_pool_features_and_softmax_head(name):
    m = _module(name)
    model = m.build(SIZE, classes=7)
    assert m.FEATURE_WIDTH == WIDTHS[name]
    assert model.get_layer("avg_pool").output.shape == (None, WIDTHS[name])
    last = model.layers[-1]
    assert last.name == "predictions" and isinstance(last, keras.layers.Dense)
    assert last.activation is keras.activations.softmax and model.output.shape == (None, 7)
    assert model.get_layer(m.HEAD_INPUT).output.shape == (None, WIDTHS[name])


@pytest.mark.parametrize("name", [*NETWORKS, "standard_cnn"])
def test_min_input_size_builds_and_one_less_is_refused(name):
    m = _module(name)
    if name in TORCHVISION_MIN_SIZE:
        assert m.MIN_INPUT_SIZE == TORCHVISION_MIN_SIZE[name]
    else:  # 5 valid 4x4 convs take 15 px, then a 3x3 pool needs 3
        assert m.MIN_INPUT_SIZE == 18
    model = m.build(m.MIN_INPUT_SIZE, classes=3)
    assert model.predict(np.zeros((1, m.MIN_INPUT_SIZE, m.MIN_INPUT_SIZE, 3), np.float32),
                         verbose=0).shape == (1, 3)
    if m.MIN_INPUT_SIZE > 1:
        with pytest.raises(PipelineError, match="at least"):
            m.build(m.MIN_INPUT_SIZE - 1)


def test_importing_the_modules_imports_neither_keras_nor_tensorflow():
    code = ("import sys\n" + "".join(f"import pipeline.models.{n}\n" for n in WIDTHS)
            + "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- names and shapes against real torchvision's state dict -----------------------------------

@pytest.mark.parametrize("name", list(NETWORKS))
def test_torchvision_state_dict_maps_completely(name):
    m = _module(name)
    keys = _keys(name)
    assert json.loads((FIXTURES / f"{NETWORKS[name]}.json").read_text())["network"] == \
        m.TORCHVISION_NAME
    model, state, copied = _loaded(name)  # assign_torch_weights raises on any gap or mismatch
    used = [k for k, _ in keys if not k.endswith("num_batches_tracked")
            and not any(k.startswith(p) for p in m.TORCH_IGNORE)]
    assert copied == len(used)
    rows = {r.torch: r.keras for r in m.torch_layers(model)}
    fc = "classifier.1" if name in ("mnasnet", "squeezenet") else "fc"
    assert rows[fc] == "predictions"
    kernel = model.get_layer("predictions").kernel.numpy()
    np.testing.assert_array_equal(kernel, state[f"{fc}.weight"].reshape(kernel.shape[::-1]).T)
    assert m.WEIGHTS_URL == "https://download.pytorch.org/models/" + m.WEIGHTS_FILE


def test_googlenet_aux_heads_must_be_ignored_explicitly():
    from pipeline.models import googlenet

    assert any(k.startswith("aux1.") for k, _ in _keys("googlenet"))
    model = googlenet.build(SIZE)
    state = GEN.random_state(_keys("googlenet"), 0)
    with pytest.raises(PipelineError, match=r"unexpected keys: aux1\.conv\.conv\.weight"):
        assign_torch_weights(model, state, googlenet.torch_layers(model))


def test_googlenet_preprocessing_folds_in_transform_input():
    from pipeline.models import googlenet

    p = googlenet.PREPROCESSING
    rgb = np.random.default_rng(0).uniform(0, 255, (3, 5, 5))
    tv_mean, tv_std = (np.array(v)[:, None, None] for v in (p["torchvision_mean"],
                                                            p["torchvision_std"]))
    normalised = (rgb / 255 - tv_mean) / tv_std  # torchvision's ImageClassification
    transformed = normalised * (tv_std / 0.5) + (tv_mean - 0.5) / 0.5  # GoogLeNet._transform_input
    mean, std = (np.array(v)[:, None, None] for v in (p["mean"], p["std"]))
    np.testing.assert_allclose(rgb * p["scale"] - mean, transformed * std, atol=1e-12)
    assert p["transform_input"] and googlenet.TORCH_IGNORE == ("aux1.", "aux2.")


# ---- characteristic blocks against NumPy --------------------------------------------------------

def test_mnasnet_stem_and_inverted_residual_blocks_match_numpy():
    model, st, _ = _loaded("mnasnet")
    x = np.random.default_rng(2).normal(size=(3, SIZE, SIZE))
    want = conv_bn(x, st, "layers.0", "layers.1", stride=2, padding=1)
    want = relu(conv_bn(relu(want), st, "layers.3", "layers.4", padding=1, groups=32))
    _close(_slice(model, "input", "layers_7", x), conv_bn(want, st, "layers.6", "layers.7"),
           "mnasnet stem")
    x = np.random.default_rng(3).normal(size=(24, 16, 16))
    want = mnas_block(mnas_block(x, st, "layers.9.0", 5, 2), st, "layers.9.1", 5, 1)
    _close(_slice(model, "layers_8_2_add", "layers_9_1_add", x), want,
           "mnasnet layers.9.0 (5x5/2) and layers.9.1 (residual)")


def test_shufflenet_units_with_split_and_shuffle_match_numpy():
    model, st, _ = _loaded("shufflenet")
    x = np.random.default_rng(4).normal(size=(24, 16, 16))
    want = shuffle_unit(shuffle_unit(x, st, "stage2.0", 2), st, "stage2.1", 1)
    _close(_slice(model, "maxpool", "stage2_1_shuffle", x), want,
           "shufflenet stage2.0 (stride 2) and stage2.1 (split)")


def test_squeezenet_fire_modules_and_ceil_mode_pool_match_numpy():
    size = 66  # every ceil_mode pool then rounds up (32 -> 16 -> 8 -> 4)
    model, st, _ = _loaded("squeezenet", size)
    x = relu(np.random.default_rng(5).normal(size=(3, size, size)))
    stem = max_pool(relu(conv(x, st["features.0.weight"], st["features.0.bias"], stride=2)), 3, 2,
                    ceil_mode=True)
    assert stem.shape[1] == 16
    _close(_slice(model, "input", "features_2", x), stem, "squeezenet stem")
    y = max_pool(fire(fire(stem, st, "features.3"), st, "features.4"), 3, 2, ceil_mode=True)
    _close(_slice(model, "features_2", "features_5", stem), y,
           "squeezenet features.3-4 (Fire) and features.5 (ceil_mode pool)")


def test_googlenet_inception_modules_and_ceil_mode_pool_match_numpy():
    model, st, _ = _loaded("googlenet")
    x = relu(np.random.default_rng(6).normal(size=(192, 8, 8)))  # post-ReLU, as in the network
    want = max_pool(inception(inception(x, st, "inception3a"), st, "inception3b"), 3, 2,
                    ceil_mode=True)
    assert want.shape == (480, 4, 4)  # ceil: 8 -> 4 (floor would give 3)
    _close(_slice(model, "maxpool2", "maxpool3", x), want,
           "googlenet inception3a, 3b and maxpool3")


def test_resnext_stem_and_grouped_bottleneck_match_numpy():
    model, st, _ = _loaded("resnext")
    x = np.random.default_rng(7).normal(size=(3, SIZE, SIZE))
    want = max_pool(relu(conv_bn(x, st, "conv1", "bn1", stride=2, padding=3)), 3, 2, padding=1)
    _close(_slice(model, "input", "maxpool", x), want, "resnext stem")
    x = relu(np.random.default_rng(8).normal(size=(256, 16, 16)))
    _close(_slice(model, "layer1_2_relu3", "layer2_0_relu3", x), bottleneck(x, st, "layer2.0", 2),
           "resnext layer2.0 (grouped 3x3/2, downsample)")


# ---- whole networks against outputs of real torchvision --------------------------------------

@pytest.mark.parametrize("name", ["shufflenet", "squeezenet"])
def test_whole_network_reproduces_real_torchvision(name):
    ref = json.loads((FIXTURES / f"reference_{NETWORKS[name]}.json").read_text())
    assert ref["weight_seed"] == GEN.WEIGHT_SEED and ref["input_size"] == GEN.REFERENCE_SIZE
    model, st, _ = _loaded(name, ref["input_size"], ref["weight_seed"])
    x = GEN.random_input(ref["input_size"], ref["input_seed"], 1).transpose(0, 2, 3, 1)
    features = keras.Model(model.input, model.get_layer("avg_pool").output).predict(x, verbose=0)
    _close(features, np.array(ref["features"]), f"{name} pooled features vs torchvision")
    dense = model.get_layer("predictions")
    if name == "shufflenet":
        logits = features @ dense.kernel.numpy() + dense.bias.numpy()
    else:  # torchvision's head: 1x1 conv, ReLU, then the pool (see squeezenet's docstring)
        fmap = keras.Model(model.input, model.get_layer("features_12_concat").output).predict(
            x, verbose=0)
        logits = relu(fmap @ dense.kernel.numpy() + dense.bias.numpy()).mean((1, 2))
    _close(logits, np.array(ref["logits"]), f"{name} logits vs torchvision")
    probs = model.predict(x, verbose=0)
    want = features @ dense.kernel.numpy() + dense.bias.numpy()
    want = np.exp(want - want.max()) / np.exp(want - want.max()).sum()
    _close(probs, want, f"{name} softmax head")


# ---- the paper's standard CNN -------------------------------------------------------------------

def test_standard_cnn_has_the_papers_hyperparameters_and_matches_numpy():
    from pipeline.models import standard_cnn

    model = standard_cnn.build(26, classes=2)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(l.filters, l.kernel_size) for l in convs] == [(11, (4, 4))] * 5  # Table 2
    assert [l.rate for l in model.layers if isinstance(l, keras.layers.Dropout)] == [0.4] * 5
    assert model.get_layer("pool").pool_size == (3, 3)
    rng = np.random.default_rng(9)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0, 0.3, w.shape) for w in layer.get_weights()])
    x = rng.uniform(0, 1, (3, 26, 26))
    y = x
    for layer in convs:
        kernel, bias = layer.get_weights()
        y = relu(conv(y, kernel.transpose(3, 2, 0, 1), bias))
    features = max_pool(y, 3, 3).mean((1, 2))  # 26 - 15 = 11 px, pooled to 3 x 3
    kernel, bias = model.get_layer("predictions").get_weights()
    logits = features @ kernel + bias
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    _close(model.predict(x.transpose(1, 2, 0)[None], verbose=0)[0], want, "standard cnn")
    flat = standard_cnn.build(224, classes=2, pooling="flatten")
    assert flat.get_layer("flatten").output.shape == (None, 69 * 69 * 11)
    assert standard_cnn.flatten_width(224) == 52371
