"""Tests for pipeline.models.registry: registry, no-transfer init, weights errors, heads, preprocessing.

Networks are built with ``weights=None`` at small inputs on the CPU; nothing here touches the
network (downloads are replaced by functions that fail).
"""

from __future__ import annotations

import numpy as np
import pytest


from pipeline.models import weights
from pipeline.errors import PipelineError
from pipeline.models.build import build_network, feature_model, replace_head
from pipeline.models.device import select_device
from pipeline.models.preprocessing import preprocess
from pipeline.models.registry import NETWORKS, describe_networks, get_network

# Feature widths of the published architectures (Chatfield et al. 2014; Keras applications docs).
# The feature widths the networks' papers and torchvision/Keras publish (the standard CNN: 11 filters,
# Kim & Rocheteau 2020, Appendix B).
PUBLISHED_WIDTHS = {"vgg-m": 4096, "vgg16": 4096, "resnet50": 2048, "densenet121": 1024,
                    "mobilenetv2": 1280, "efficientnetb0": 1280, "inceptionv3": 2048,
                    "efficientnet-lite0": 1280, "efficientnet-lite1": 1280,
                    "efficientnet-lite2": 1280, "mnasnet1.0": 1280, "shufflenet-v2": 1024,
                    "squeezenet1.1": 512, "googlenet": 1024, "resnext50": 2048,
                    "standard-cnn": 11}
SMALL = {"vgg-m": (64, 0.125), "vgg16": (64, 0.125), "inceptionv3": (75, 1.0)}


def images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def small_vgg_m():
    return build_network("vgg-m", weights=None, input_size=64, width=0.125, classes=10,
                                  seed=7)


def test_registry_has_published_feature_widths():
    assert {name: spec.feature_width for name, spec in NETWORKS.items()} == \
        PUBLISHED_WIDTHS
    table = describe_networks()
    assert list(table["name"]) == list(NETWORKS)
    assert {"input_size", "feature_layer", "feature_width", "preprocessing",
            "imagenet_weights"} <= set(table.columns)
    assert table.set_index("name").loc["vgg16", "feature_layer"] == "fc2"
    assert table.set_index("name").loc["vgg-m", "feature_layer"] == "relu7"


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_network_builds_and_gives_finite_features(name):
    spec = get_network(name)
    size, width = SMALL.get(name, (64, 1.0))
    model = build_network(name, weights=None, input_size=size, width=width, classes=3)
    x = preprocess(spec, images(2, size), mean=np.array([120.0, 110.0, 100.0]))
    features = feature_model(model, spec)(x, training=False).numpy()
    probs = model(x, training=False).numpy()
    assert model.get_layer(spec.feature_layer).name == spec.feature_layer
    assert features.shape == (2, spec.width_at(width)) == (2, round(PUBLISHED_WIDTHS[name] * width))
    assert np.isfinite(features).all() and np.isfinite(probs).all()
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert spec.family and spec.preprocessing.description
    head = replace_head(model, spec, 2, seed=1)  # a new head on the same features
    assert head.output_shape == (None, 2)
    assert head.get_layer(spec.feature_layer) is model.get_layer(spec.feature_layer)


def test_unknown_network_lists_known_ones():
    with pytest.raises(PipelineError, match=r"No such network: 'alexnet'.*vgg-m, vgg16, resnet50"):
        get_network("alexnet")


def test_bad_settings_are_refused():
    with pytest.raises(PipelineError, match="'retina' are not available for vgg-m: it has none, "
                                            "imagenet"):
        build_network("vgg-m", weights="retina")
    with pytest.raises(PipelineError, match="at least 75 px"):
        build_network("inceptionv3", weights=None, input_size=64)
    with pytest.raises(PipelineError, match="width=0.5"):
        build_network("resnet50", weights=None, width=0.5)
    with pytest.raises(PipelineError, match="would be ignored"):
        build_network("vgg-m", weights="none", weights_path="w.npz")


def test_no_transfer_init_is_orthogonal_with_biases_005(small_vgg_m):
    fc7 = small_vgg_m.get_layer("fc7").kernel.numpy()  # 512 x 512
    conv1 = small_vgg_m.get_layer("conv1").kernel.numpy().reshape(-1, 12)  # 147 x 12
    fc6 = small_vgg_m.get_layer("fc6").kernel.numpy()  # 64 x 512 (1x1x64 pool5 at 64 px)
    for name, w in (("fc7", fc7), ("conv1", conv1), ("fc6 transposed", fc6.T)):
        assert np.allclose(w.T @ w, np.eye(w.shape[1]), atol=1e-4), f"{name}: W^T W is not I"
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        assert np.all(small_vgg_m.get_layer(name).bias.numpy() == np.float32(0.05)), name


def test_no_transfer_init_is_seeded(small_vgg_m):
    same = build_network("vgg-m", weights=None, input_size=64, width=0.125,
                                  classes=10, seed=7)
    other = build_network("vgg-m", weights=None, input_size=64, width=0.125,
                                   classes=10, seed=8)
    for a, b, c in zip(small_vgg_m.get_weights(), same.get_weights(), other.get_weights()):
        assert np.array_equal(a, b)
    assert not np.allclose(small_vgg_m.get_layer("fc7").kernel.numpy(),
                           other.get_layer("fc7").kernel.numpy())


def test_narrow_vgg16_has_keras_layout():
    import keras

    narrow = build_network("vgg16", weights=None, input_size=64, width=0.125)
    full = keras.applications.VGG16(weights=None, input_shape=(64, 64, 3))
    assert [l.name for l in narrow.layers[1:]] == [l.name for l in full.layers[1:]]
    for a, b in zip(narrow.layers[1:], full.layers[1:]):
        if hasattr(b, "kernel"):
            units = b.kernel.shape[-1] if b.name == "predictions" else b.kernel.shape[-1] // 8
            assert a.kernel.shape[-1] == units, a.name
            assert a.get_config()["activation"] == b.get_config()["activation"], a.name
        if "conv" in b.name or "pool" in b.name:
            assert (a.strides, a.padding) == (b.strides, b.padding), a.name


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    calls = []

    def fail(url, cache_dir, file_hash):
        calls.append(url)
        raise OSError("no network in tests")

    monkeypatch.setattr(weights, "_fetch", fail)
    return calls


def test_missing_vgg16_weights_name_the_file(monkeypatch, tmp_path):
    calls = _offline(monkeypatch, tmp_path)
    with pytest.raises(PipelineError) as err:
        build_network("vgg16", weights="imagenet")
    message = str(err.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in message
    assert str(tmp_path / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5") in message
    assert "network.imagenet_weights" in message and "no network in tests" in message
    assert calls == [get_network("vgg16").imagenet.url +
                     "vgg16_weights_tf_dim_ordering_tf_kernels.h5"]


def test_offline_download_fails_fast_at_the_probe(monkeypatch, tmp_path):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def no_connection(address, timeout=None):
        assert timeout is not None and timeout <= 10, "the probe must not wait long"
        raise OSError("unreachable")

    def no_download(*args, **kwargs):
        raise AssertionError("get_file must not run when the probe fails")

    monkeypatch.setattr(weights.socket, "create_connection", no_connection)
    monkeypatch.setattr(keras.utils, "get_file", no_download)
    with pytest.raises(PipelineError,
                       match=r"\(OSError: unreachable\)\. Fix: place the file efficientnetb0_notop"):
        build_network("efficientnetb0", weights="imagenet")


def test_cached_file_is_used_before_any_download(monkeypatch, tmp_path):
    calls = _offline(monkeypatch, tmp_path)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / name).write_bytes(b"not an HDF5 file")
    with pytest.raises(PipelineError, match=r"could not load mobilenetv2 ImageNet weights from"):
        build_network("mobilenetv2", weights="imagenet", input_size=96)
    assert calls == []


def test_efficientnet_loaded_by_path_gets_the_imagenet_rescaling():
    import keras

    from pipeline.models.keras_apps import efficientnet_imagenet_scaling

    base = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                             input_shape=(32, 32, 3))
    model = keras.Sequential([base])  # the fix finds the Normalization inside nested models
    norm = next(l for l in base.layers if isinstance(l, keras.layers.Normalization))
    x = np.random.default_rng(0).uniform(0, 1, (1, 4, 4, 3)).astype(np.float32)
    # what keras.applications.EfficientNetB0(weights="imagenet") puts after the Normalization
    keras_rescaling = keras.layers.Rescaling([1 / np.sqrt(s) for s in (0.229, 0.224, 0.225)])
    want = keras_rescaling(norm(x)).numpy()
    efficientnet_imagenet_scaling(model)
    assert np.allclose(norm(x).numpy(), want, rtol=1e-5)
    assert not np.allclose(want, x, rtol=1e-2)


def test_missing_vgg_m_weights(tmp_path):
    with pytest.raises(PipelineError, match=r"convert-matconvnet.*network.imagenet_weights"):
        build_network("vgg-m", weights="imagenet")
    with pytest.raises(PipelineError, match=r"missing\.npz.*does not exist"):
        build_network("vgg-m", weights="imagenet", weights_path=tmp_path / "missing.npz")


def test_replace_head_keeps_features(small_vgg_m):
    spec = get_network("vgg-m")
    new = replace_head(small_vgg_m, spec, classes=3, seed=1)
    x = preprocess(spec, images(2, 64), mean=np.full(3, 110.0))
    assert new(x, training=False).shape == (2, 3)
    assert [l.name for l in new.layers[-2:]] == ["fc8", "prob"]
    assert np.array_equal(new.get_layer("fc7").kernel.numpy(),
                          small_vgg_m.get_layer("fc7").kernel.numpy())
    old_features = feature_model(small_vgg_m, spec)(x, training=False).numpy()
    new_features = feature_model(new, spec)(x, training=False).numpy()
    assert np.array_equal(old_features, new_features)
    assert np.all(new.get_layer("fc8").bias.numpy() == np.float32(0.05))


def test_preprocess_vgg_m_subtracts_mean_in_rgb():
    spec = get_network("vgg-m")
    image = np.zeros((1, 2, 2, 3), np.uint8) + np.array([10, 20, 30], np.uint8)
    out = preprocess(spec, image, mean=np.array([1.0, 2.0, 3.0]))
    assert out.dtype == np.float32 and np.allclose(out[0, 0, 0], [9, 18, 27])
    full = np.arange(12, dtype=float).reshape(2, 2, 3)
    assert np.allclose(preprocess(spec, image, mean=full)[0], image[0] - full)
    with pytest.raises(PipelineError, match="needs a mean"):
        preprocess(spec, image)
    with pytest.raises(PipelineError, match=r"mean must have shape"):
        preprocess(spec, image, mean=np.zeros(4))


def test_preprocess_vgg16_is_keras_caffe_mode():
    from keras.applications import vgg16

    spec = get_network("vgg16")
    image = np.zeros((1, 2, 2, 3), np.uint8) + np.array([10, 20, 30], np.uint8)
    out = preprocess(spec, image)
    assert np.allclose(out[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)
    assert np.allclose(out, vgg16.preprocess_input(image.astype(np.float32)), atol=1e-4)
    assert np.allclose(preprocess(spec, image, mean=weights.imagenet_mean(get_network("vgg16"))),
                       out, atol=1e-4)
    # a training set's RGB mean is subtracted in the network's BGR order
    assert np.allclose(preprocess(spec, image, mean=np.array([1.0, 2.0, 3.0]))[0, 0, 0],
                       [27, 18, 9])


def test_preprocess_backbones_use_their_keras_function():
    spec = get_network("inceptionv3")
    out = preprocess(spec, np.array([[[[0, 255, 51]]]], np.uint8))
    assert np.allclose(out[0, 0, 0], [-1.0, 1.0, 51 / 127.5 - 1])


@pytest.mark.parametrize("name, mean", [("vgg-m", [120.0, 110.0, 100.0]), ("vgg16", None),
                                        ("resnet50", [1.0, 2.0, 3.0]), ("densenet121", None)])
def test_preprocess_works_inside_tf_data(name, mean):
    import tensorflow as tf

    spec = get_network(name)
    batch = images(2, 8, seed=3)
    mean = None if mean is None else np.array(mean)
    mapped = tf.data.Dataset.from_tensors(batch).map(lambda x: preprocess(spec, x, mean))
    got = next(iter(mapped)).numpy()
    want = preprocess(spec, batch, mean)
    assert isinstance(want, np.ndarray) and want.dtype == got.dtype == np.float32
    assert np.allclose(got, want, atol=1e-5), f"{name}: tf.data and NumPy preprocessing differ"


def test_select_device_names_the_device_tensorflow_sees():
    import tensorflow as tf

    device = select_device()
    assert device == ("/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0")


def test_cli_prints_the_table(capsys):
    from pipeline.cli import main

    assert main(["networks"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NETWORKS) and "relu7" in out

