"""pipeline.features.extraction: the key, resuming an interrupted extraction, verified reading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data.image_cache import build_image_cache
from pipeline.errors import PipelineError
from pipeline.features import extraction as extract
from pipeline.training import netstore

SIZE, WIDTH = 48, 0.0625


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A stored no-transfer VGG-M and an image cache of 24 synthetic images."""
    import pandas as pd
    from PIL import Image

    from pipeline.models.build import build_network

    root = tmp_path_factory.mktemp("extraction")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        path = root / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    table = pd.DataFrame({"image": [f"img{i:02d}" for i in range(24)], "abspath": paths})
    images = build_image_cache(table, root / "images", SIZE, n_jobs=1, progress=False)
    model = build_network("vgg-m", weights=None, input_size=SIZE, width=WIDTH, classes=2)
    entry = netstore.save(root / "networks" / "n1", model, np.full(3, 100.0, np.float32),
                          {"network": "vgg-m", "input_size": SIZE, "width": WIDTH})
    return netstore.load(entry), images, table["image"].tolist()


def test_the_key_holds_what_changes_the_bytes(setup):
    net, images, ids = setup
    key = extract.feature_key(net.entry, images, ids, 16)
    assert key != extract.feature_key(net.entry, images, ids, 32)  # batch size changes floats
    assert key != extract.feature_key(net.entry, images, ids, 16, device="gpu")
    assert key != extract.feature_key(net.entry, images, ids[::-1], 16)
    assert key == extract.feature_key(net.entry, images, list(ids), 16)


def test_interrupted_extraction_resumes_to_the_same_features(setup, tmp_path, monkeypatch):
    net, images, ids = setup
    monkeypatch.setattr(extract, "CHUNK_BATCHES", 1)
    entry = tmp_path / "features"
    with pytest.raises(KeyboardInterrupt):
        extract.extract_features(net, images, ids, entry, batch_size=8, progress=False,
                                 stop_after_chunks=2)
    assert not (entry / "features.npy").exists() and not (entry / "manifest.json").exists()
    assert json.loads((entry / "progress.json").read_text())["done"] == 16
    extract.extract_features(net, images, ids, entry, batch_size=8, progress=False)
    resumed, resumed_ids = extract.load_features(entry)
    whole = tmp_path / "whole"
    extract.extract_features(net, images, ids, whole, batch_size=8, progress=False)
    fresh, _ = extract.load_features(whole)
    assert resumed_ids == ids
    np.testing.assert_allclose(resumed, fresh, rtol=1e-5, atol=1e-6,
                               err_msg="resumed features differ from an uninterrupted run")



def test_reading_a_damaged_entry_names_it(setup, tmp_path):
    net, images, ids = setup
    entry = tmp_path / "f"
    assert extract.extract_features(net, images, ids, entry, batch_size=8, progress=False)
    assert not extract.extract_features(net, images, ids, entry, batch_size=8, progress=False)
    data = (entry / "features.npy").read_bytes()
    (entry / "features.npy").write_bytes(data[:-4])
    with pytest.raises(PipelineError, match=r"features.npy has .*\(truncated\)"):
        extract.load_features(entry)


def test_features_are_bit_identical_to_the_former_tf_data_path(setup, tmp_path):
    """The features equal, bit for bit, those of the tf.data input path that extraction had
    before issue 15 (from_generator + preprocessing map + prefetch, then the same traced network
    call), a partial last batch included."""
    import tensorflow as tf

    from pipeline.models.preprocessing import preprocess

    net, images, ids = setup
    ids = ids[:21]  # batches of 8, 8 and 5
    extract.extract_features(net, images, ids, tmp_path / "f", batch_size=8, progress=False)
    got, _ = extract.load_features(tmp_path / "f")
    rows = images.index_of(ids)

    def batches():
        for start in range(0, len(ids), 8):
            yield np.asarray(images.images[rows[start:start + 8]])

    dataset = (tf.data.Dataset.from_generator(
        batches, output_signature=tf.TensorSpec((None, *images.images.shape[1:]), tf.uint8))
        .map(lambda x: preprocess(net.spec, x, net.mean), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2))
    _, infer = extract._inference(net)
    want = np.concatenate([infer(batch).numpy() for batch in dataset]).astype(np.float32)
    assert np.array_equal(np.asarray(got), want)
