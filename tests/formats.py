"""Tiny files in the published formats the pipeline reads, written for the tests.

- MatConvNet's ``imagenet-vgg-m.mat`` (both layouts) with random weights at any width and size;
- Keras applications' legacy HDF5 weights file (the layout of
  ``vgg16_weights_tf_dim_ordering_tf_kernels.h5``) of any model;
- the ISIC 2016 Part 3 layout (two ground-truth CSVs without header, two image folders).

``tests/conftest.py`` puts this folder on ``sys.path``: tests ``import formats``.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import scipy.io

LRN = [5.0, 2.0, 1e-4, 0.75]
# The test's own description of imagenet-vgg-m.mat (Chatfield et al. 2014), independent of
# pipeline.models.VGG_M: (name, type, filter/pool size or None for "whole map", channels at
# width 1 or None for the classes, stride, pad [top bottom left right]).
VGG_M_ARCH = [
    ("conv1", "conv", 7, 96, 2, [0, 0, 0, 0]), ("relu1", "relu"), ("norm1", "normalize"),
    ("pool1", "pool", 3, None, 2, [0, 1, 0, 1]),
    ("conv2", "conv", 5, 256, 2, [1, 1, 1, 1]), ("relu2", "relu"), ("norm2", "normalize"),
    ("pool2", "pool", 3, None, 2, [0, 1, 0, 1]),
    ("conv3", "conv", 3, 512, 1, [1, 1, 1, 1]), ("relu3", "relu"),
    ("conv4", "conv", 3, 512, 1, [1, 1, 1, 1]), ("relu4", "relu"),
    ("conv5", "conv", 3, 512, 1, [1, 1, 1, 1]), ("relu5", "relu"),
    ("pool5", "pool", 3, None, 2, [0, 1, 0, 1]),
    ("fc6", "conv", None, 4096, 1, [0, 0, 0, 0]), ("relu6", "relu"),
    ("fc7", "conv", None, 4096, 1, [0, 0, 0, 0]), ("relu7", "relu"),
    ("fc8", "conv", None, None, 1, [0, 0, 0, 0]), ("prob", "softmax"),
]


def make_vgg_m_net(width: float, size: int, classes: int, seed: int = 0) -> list[dict]:
    """Random weights for VGG_M_ARCH at a width, input size and number of classes, as a list of
    layer dicts (float64)."""
    rng = np.random.default_rng(seed)
    net, hw, c_in = [], size, 3
    for entry in VGG_M_ARCH:
        name, kind = entry[:2]
        layer = {"name": name, "type": kind}
        if kind == "normalize":
            layer["param"] = np.array(LRN)
        if kind in ("conv", "pool"):
            size, channels, stride, pad = entry[2:]
            layer.update(stride=stride, pad=pad)
        if kind == "pool":
            layer["pool"] = size
            hw = (hw + pad[0] + pad[1] - size) // stride + 1
        if kind == "conv":
            k = size or hw
            c_out = round(channels * width) if channels else classes
            # He-scaled so activations stay O(100) and LRN changes them by a large factor
            layer["filters"] = rng.normal(0, np.sqrt(2 / (k * k * c_in)), (k, k, c_in, c_out))
            layer["biases"] = rng.normal(0, 0.5, c_out)
            hw, c_in = (hw + pad[0] + pad[1] - k) // stride + 1, c_out
        net.append(layer)
    return net


def write_mat(path, net, average_image, size: int, layout: str = "current") -> None:
    """Write ``net`` as MatConvNet would: a cell array of layer structs plus normalization."""
    cells = np.empty((1, len(net)), dtype=object)
    for i, layer in enumerate(net):
        entry = {"name": layer["name"], "type": layer["type"]}
        for key in ("param", "pool"):
            if key in layer:
                entry[key] = np.asarray(layer[key], dtype=float) * (np.ones(2) if key == "pool"
                                                                    else 1)
        if layer["type"] == "pool":
            entry["method"] = "max"
        if "stride" in layer:
            entry["stride"] = np.array([layer["stride"]] * 2, dtype=float)
            entry["pad"] = np.array(layer["pad"], dtype=float)
        if layer["type"] == "conv":
            filters = layer["filters"].astype(np.float32)
            biases = layer["biases"].astype(np.float32).reshape(1, -1)
            if layout == "current":
                weights = np.empty((1, 2), dtype=object)
                weights[0, 0], weights[0, 1] = filters, biases
                entry["weights"] = weights
            else:
                entry["filters"], entry["biases"] = filters, biases
        cells[0, i] = entry
    normalization = {"averageImage": average_image.astype(np.float32),
                     "imageSize": np.array([size, size, 3], dtype=float)}
    content = {"layers": cells}
    if layout == "current":
        content["meta"] = {"normalization": normalization, "inputs": {"name": "data"}}
    else:
        content["normalization"] = normalization
    scipy.io.savemat(path, content)


def write_keras_h5(model, path: str | Path) -> Path:
    """``model``'s weights as Keras 2 wrote them for keras-applications: root attributes
    ``layer_names``/``backend``/``keras_version``, one group per layer with ``weight_names``."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            group.attrs["weight_names"] = np.array(names)
            for name, weight in zip(names, layer.weights):
                group.create_dataset(name.decode(), data=np.asarray(weight.numpy()))
    return Path(path)


def write_isic2016(root: Path, derm7pt: Path, n_train: int, n_test: int) -> Path:
    """ISIC 2016 Part 3 from a derm7pt-layout folder's images: melanomas are ``malignant`` (the
    test file writes 1.0/0.0, as the published one does)."""
    import csv

    rows = list(csv.DictReader(open(derm7pt / "meta" / "meta.csv", encoding="utf-8")))
    rows = [r for r in rows if r["location"] != "acral"]
    random.Random(0).shuffle(rows)  # the demo's meta.csv is sorted by diagnosis
    rows = rows[: n_train + n_test]
    for split, part in (("Training", rows[:n_train]), ("Test", rows[n_train:])):
        folder = root / f"ISBI2016_ISIC_Part3_{split}_Data"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, row in enumerate(part):
            image_id = f"ISIC_{(0 if split == 'Training' else 5000) + i:07d}"
            shutil.copy(derm7pt / "images" / row["derm"], folder / f"{image_id}.jpg")
            melanoma = row["diagnosis"].startswith("melanoma")
            label = ("malignant" if melanoma else "benign") if split == "Training" else \
                ("1.0" if melanoma else "0.0")
            lines.append(f"{image_id},{label}")
        (root / f"ISBI2016_ISIC_Part3_{split}_GroundTruth.csv").write_text(
            "\n".join(lines) + "\n", encoding="utf-8")
    return root
