"""Data-parallel training (pipeline.training.mirrored, ``train_classifier(devices="all")``) over
two logical CPU devices against the same run on one device.

Logical devices must be configured before TensorFlow initialises, so the runs happen in a fresh
Python process. The network has neither dropout nor BatchNormalization (the two things that
legitimately differ per replica), so the two runs compute the same SGD steps up to the order of
float sums: losses and weights must agree to ``rtol=1e-5`` (measured: 1e-7).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys, tempfile
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from pipeline.training.mirrored import strategy_for_all_devices
from pipeline.training.recipe import TrainRecipe
from pipeline.training.train import train_classifier

rng = np.random.default_rng(0)
y = np.repeat([0, 1], 24)
images = rng.integers(0, 120, size=(48, 16, 16, 3)).astype(np.uint8)
images[y == 1, :, :, 0] += 100  # a red class

def network():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))

recipe = TrainRecipe(epochs=4, batch_size=8, learning_rate=0.05, augment="none",
                     validation_fraction=0.25, l2=1e-3)
out = {"replicas": strategy_for_all_devices().num_replicas_in_sync}
for devices in ("one", "all"):
    model = network()
    result = train_classifier(model, images, y, recipe=recipe, preprocess=lambda x: x / 255.0,
                              seed=1, workdir=tempfile.mkdtemp(), progress=False,
                              devices=devices)
    out[devices] = {"loss": [r["loss"] for r in result.history],
                    "val_loss": [r["val_loss"] for r in result.history],
                    "weights": [w.tolist() for w in model.get_weights()]}
print(json.dumps(out))
"""


def test_mirrored_training_over_two_logical_cpus_matches_one_device():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    one, both = out["one"], out["all"]
    assert one["loss"][-1] < one["loss"][0], "the single-device run did not learn"
    np.testing.assert_allclose(both["loss"], one["loss"], rtol=1e-5, atol=1e-6,
                               err_msg="training loss, 2 replicas vs 1 device")
    np.testing.assert_allclose(both["val_loss"], one["val_loss"], rtol=1e-5, atol=1e-6,
                               err_msg="validation loss, 2 replicas vs 1 device")
    for a, b in zip(both["weights"], one["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6,
                                   err_msg="trained weights, 2 replicas vs 1 device")


# Kim & Rocheteau's recipe (Adam, a given validation part, early stopping, learning-rate decay)
# on a two-input network (images + encoded metadata, as add_metadata_branch builds): the
# mirrored path splits both inputs of each batch and uses the recipe's optimizer.
SCRIPT_KR = r"""
import json, sys, tempfile
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from pipeline.training.recipe import TrainRecipe
from pipeline.training.train import train_classifier

rng = np.random.default_rng(0)
y = np.repeat([0, 1], 24)
images = rng.integers(0, 120, size=(48, 16, 16, 3)).astype(np.uint8)
images[y == 1, :, :, 0] += 60
metadata = np.stack([y + rng.normal(0, 0.5, 48), rng.normal(0, 1, 48)], 1).astype(np.float32)
validation = np.arange(0, 48, 4)

def network():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    meta = keras.Input((2,))
    branch = keras.layers.Dense(4, activation="relu")(meta)
    fused = keras.layers.Concatenate()([x, branch])
    return keras.Model([inputs, meta], keras.layers.Dense(2, activation="softmax")(fused))

recipe = TrainRecipe(epochs=5, batch_size=8, learning_rate=0.01, augment="none", l2=0.0,
                     optimizer="adam", early_stopping_patience=3, lr_decay_factor=0.4,
                     lr_decay_patience=1)
out = {}
for devices in ("one", "all"):
    model = network()
    result = train_classifier(model, images, y, recipe=recipe, preprocess=lambda x: x / 255.0,
                              seed=1, workdir=tempfile.mkdtemp(), progress=False,
                              devices=devices, validation=validation, metadata=metadata)
    out[devices] = {"loss": [r["loss"] for r in result.history],
                    "val_loss": [r["val_loss"] for r in result.history],
                    "weights": [w.tolist() for w in model.get_weights()]}
print(json.dumps(out))
"""


def test_mirrored_adam_with_metadata_and_a_validation_part_matches_one_device():
    result = subprocess.run([sys.executable, "-c", SCRIPT_KR], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    one, both = out["one"], out["all"]
    assert one["loss"][-1] < one["loss"][0], "the single-device run did not learn"
    assert len(both["loss"]) == len(one["loss"])  # same early stop
    np.testing.assert_allclose(both["loss"], one["loss"], rtol=1e-5, atol=1e-6,
                               err_msg="training loss, 2 replicas vs 1 device (Adam, metadata)")
    np.testing.assert_allclose(both["val_loss"], one["val_loss"], rtol=1e-5, atol=1e-6,
                               err_msg="validation loss, 2 replicas vs 1 device (Adam, metadata)")
    for a, b in zip(both["weights"], one["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6,
                                   err_msg="trained weights, 2 replicas vs 1 device (Adam)")
