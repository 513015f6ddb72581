"""Tests of pipeline.explain.attributions and pipeline.explain.targets: integrated gradients'
completeness and exactness on a linear model, Grad-CAM on a network built to see one region, the
SVM target through a network, and bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.preprocessing import normalize

from pipeline.classifiers.svm import make_svm
from pipeline.errors import PipelineError
from pipeline.explain.attributions import (
    DEFAULT_STEPS,
    grad_cam,
    integrated_gradients,
    last_conv_layer,
    trapezoid_weights,
)
from pipeline.explain.targets import linear_svm, svm_score, svm_target


def small_network(seed: int, activation: str = "tanh"):
    keras.utils.set_random_seed(seed)
    init = {"bias_initializer": "random_normal"}
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, activation=activation, **init)(inputs)
    x = keras.layers.Conv2D(6, 3, activation=activation, **init)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation=activation, **init)(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


@pytest.mark.parametrize("seed", range(4))
def test_integrated_gradients_are_complete_within_1_percent_at_the_default_steps(seed):
    model = small_network(seed)
    image = np.random.default_rng(seed).uniform(0, 255, (12, 12, 3)).astype(np.float32)
    result = integrated_gradients(lambda p: tf.reshape(model(p / 255.0), [-1]), image)
    f_x = float(model(image[None] / 255.0).numpy().ravel()[0])
    f_0 = float(model(np.zeros((1, 12, 12, 3), np.float32)).numpy().ravel()[0])
    assert result.f_x == pytest.approx(f_x, abs=1e-5)
    assert result.f_baseline == pytest.approx(f_0, abs=1e-5)
    delta = f_x - f_0
    assert abs(delta) > 1e-3, "the test needs a target that moves along the path"
    assert abs(result.values.sum() - delta) <= 0.01 * abs(delta), (result.values.sum(), delta)
    assert result.attribution_sum == pytest.approx(float(result.values.sum()), rel=1e-5)


def test_integrated_gradients_of_a_linear_model_are_x_minus_baseline_times_w():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4, 3)).astype(np.float32)
    image = rng.uniform(0, 255, w.shape).astype(np.float32)
    baseline = rng.uniform(0, 50, w.shape).astype(np.float32)
    target = lambda p: tf.reduce_sum(p * w, axis=(1, 2, 3)) + 0.7  # noqa: E731
    for steps, batch_size in ((DEFAULT_STEPS, 16), (3, 2), (1, 1)):
        result = integrated_gradients(target, image, baseline, steps=steps, batch_size=batch_size)
        np.testing.assert_allclose(result.values, (image - baseline) * w, rtol=1e-5, atol=1e-4,
                                   err_msg=f"IG of a linear model, {steps} steps")
    black = integrated_gradients(target, image)
    np.testing.assert_allclose(black.values, image * w, rtol=1e-5, atol=1e-4)
    assert black.f_baseline == pytest.approx(0.7, abs=1e-5)


def test_batching_over_interpolation_steps_does_not_change_the_result():
    model = small_network(7, "relu")
    image = np.random.default_rng(1).uniform(0, 255, (12, 12, 3)).astype(np.float32)
    target = lambda p: tf.reshape(model(p / 255.0), [-1])  # noqa: E731
    one = integrated_gradients(target, image, steps=20, batch_size=21)
    many = integrated_gradients(target, image, steps=20, batch_size=4)
    np.testing.assert_allclose(one.values, many.values, rtol=1e-4, atol=1e-7)


def test_trapezoid_weights():
    np.testing.assert_allclose(trapezoid_weights(4), [0.125, 0.25, 0.25, 0.25, 0.125])
    assert trapezoid_weights(1).tolist() == [0.5, 0.5]
    with pytest.raises(PipelineError, match="steps >= 1"):
        trapezoid_weights(0)


def planted_network():
    """Channel 0 fires on red squares and raises the score; channel 1 fires on green squares and
    lowers it. Grad-CAM must show the red square only."""
    inputs = keras.Input((24, 24, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="detect")
    x = conv(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1, name="score")
    model = keras.Model(inputs, dense(x))
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[:, :, 0, 0], kernel[:, :, 1, 0] = 1.0, -1.0  # red minus green
    kernel[:, :, 1, 1], kernel[:, :, 0, 1] = 1.0, -1.0  # green minus red
    conv.set_weights([kernel, np.full(2, -4.0, np.float32)])
    dense.set_weights([np.array([[1.0], [-1.0]], np.float32), np.zeros(1, np.float32)])
    return model


def test_grad_cam_points_at_the_planted_region():
    image = np.random.default_rng(0).uniform(0, 0.2, (24, 24, 3)).astype(np.float32)
    image[14:20, 3:9, 0] = 1.0  # the red square: the evidence for the score
    image[2:8, 15:21, 1] = 1.0  # a green square elsewhere: evidence against
    model = planted_network()
    assert last_conv_layer(model) == "detect"
    result = grad_cam(model, "detect", lambda out: out[:, 0], image)
    cam = result.values
    assert cam.shape == (24, 24) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    row, col = np.unravel_index(np.argmax(cam), cam.shape)
    assert 13 <= row <= 20 and 2 <= col <= 9, (row, col)
    inside = np.zeros(cam.shape, bool)
    inside[13:21, 2:10] = True
    assert cam[inside].mean() > 10 * cam[~inside].mean()
    assert cam[2:8, 15:21].max() < 0.05  # the green square lowers the score: not highlighted
    assert result.f_x == pytest.approx(float(model(image[None]).numpy().ravel()[0]), abs=1e-5)


def test_the_svm_target_is_the_svm_decision_score_through_the_network():
    rng = np.random.default_rng(0)
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Dense(5, activation="relu", bias_initializer="ones")(
        keras.layers.Flatten()(inputs))
    net = keras.Model(inputs, features)
    pixels = rng.uniform(0, 255, (30, 8, 8, 3)).astype(np.float32)
    X = net(pixels / 255.0 - 0.5).numpy()
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    svm = make_svm(1.0).fit(X, y)
    w, b = linear_svm(svm)
    np.testing.assert_allclose(normalize(X.astype(np.float64)) @ w + b, svm.decision_function(X),
                               rtol=1e-6, atol=1e-6)  # X is float32
    target = svm_target(net, lambda p: p / 255.0 - 0.5, w, b)
    np.testing.assert_allclose(target(tf.constant(pixels)).numpy(), svm.decision_function(X),
                               rtol=1e-4, atol=1e-5)
    result = integrated_gradients(target, pixels[0])
    assert result.f_x == pytest.approx(float(svm.decision_function(X[:1])[0]), abs=1e-4)
    np.testing.assert_allclose(svm_score(w, b)(tf.constant(X)).numpy(), svm.decision_function(X),
                               rtol=1e-4, atol=1e-5)


def test_bad_input_is_a_clear_error():
    target = lambda p: tf.reduce_sum(p, axis=(1, 2, 3))  # noqa: E731
    with pytest.raises(PipelineError, match="shape"):
        integrated_gradients(target, np.zeros((4, 4)))
    with pytest.raises(PipelineError, match="baseline"):
        integrated_gradients(target, np.zeros((4, 4, 3)), np.zeros((4, 4, 1)))
    with pytest.raises(PipelineError, match="one score per image"):
        integrated_gradients(lambda p: tf.reshape(p, [-1]), np.ones((4, 4, 3)))
    with pytest.raises(PipelineError, match="No such layer: nope. Existing layers are"):
        grad_cam(planted_network(), "nope", lambda out: out[:, 0], np.zeros((24, 24, 3)))
    with pytest.raises(PipelineError, match="4-D"):
        grad_cam(planted_network(), "score", lambda out: out[:, 0], np.zeros((24, 24, 3)))
    with pytest.raises(PipelineError, match="2-class linear SVM"):
        linear_svm(make_svm(1.0).fit(np.eye(3) + 0.1, [0, 1, 2]))
