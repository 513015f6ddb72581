"""Tests of ``pipeline.serving.predict`` and ``pipeline.serving.folder`` on toy arrays (no
network): the classifier's scores and classes for two and three classes, the metadata refusal and
the schema check. The whole chain on a real exported model is tested in tests/stages/test_export.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.serving.folder import SCHEMA_VERSION, ModelFolder, check_schema
from pipeline.serving.predict import check_metadata, score_table, svm_scores


def toy(classes, coef, intercept, threshold=0.0, metadata=()) -> ModelFolder:
    info = {"classes": list(classes), "threshold": threshold,
            "metadata": {"features": list(metadata)}, "preprocessing": {"mean": None}}
    return ModelFolder(folder=Path("toy"), info=info, coef=np.atleast_2d(coef),
                       intercept=np.asarray(intercept, dtype=np.float64).reshape(-1))


def test_two_class_scores_are_w_dot_unit_features_plus_b_and_the_threshold_decides():
    model = toy(["benign", "melanoma"], [[3.0, 4.0]], [0.5], threshold=1.0)
    features = np.array([[3.0, 4.0], [0.0, -2.0], [10.0, 0.0]], np.float32)
    scores = svm_scores(model, features)
    # unit vectors (0.6, 0.8), (0, -1), (1, 0): 5 + 0.5, -4 + 0.5, 3 + 0.5
    np.testing.assert_allclose(scores[:, 0], [5.5, -3.5, 3.5])
    table = score_table(model, ["a.jpg", "b.jpg", "c.jpg"], scores)
    assert list(table.columns) == ["image", "score", "predicted"]
    assert table["predicted"].tolist() == ["melanoma", "benign", "melanoma"]
    at_threshold = score_table(model, ["d.jpg"], np.array([[1.0]]))
    assert at_threshold["predicted"].tolist() == ["benign"]  # above the threshold, not at it


def test_three_class_scores_one_column_per_class_and_the_highest_wins():
    model = toy(["benign", "bcc", "melanoma"], np.eye(3)[:, :2] * 2, [0.0, 0.1, -0.1])
    scores = svm_scores(model, np.array([[1.0, 0.0], [0.0, 5.0], [-1.0, -1.0]]))
    np.testing.assert_allclose(scores, [[2.0, 0.1, -0.1], [0.0, 2.1, -0.1],
                                        [-np.sqrt(2), 0.1 - np.sqrt(2), -0.1]])
    table = score_table(model, ["a", "b", "c"], scores)
    assert list(table.columns) == ["image", "score_benign", "score_bcc", "score_melanoma",
                                   "predicted"]
    assert table["predicted"].tolist() == ["benign", "bcc", "melanoma"]


def test_features_of_another_width_are_refused():
    model = toy(["benign", "melanoma"], [[1.0, 0.0, 0.0]], [0.0])
    with pytest.raises(PipelineError, match="takes 3 per image"):
        svm_scores(model, np.ones((2, 4)))


def test_metadata_is_refused_for_a_model_without_metadata_and_silence_is_fine():
    model = toy(["benign", "melanoma"], [[1.0]], [0.0])
    check_metadata(model, {"--age": None, "--metadata": None})
    with pytest.raises(PipelineError, match=r"uses no clinical metadata.*remove --sex"):
        check_metadata(model, {"--age": None, "--sex": "female"})


@pytest.mark.parametrize("manifest, message", [
    ({"kind": "pipeline-model", "schema_version": SCHEMA_VERSION + 1}, "newer than"),
    ({"kind": "something-else", "schema_version": 1}, "not the manifest of a model folder"),
    ({"kind": "pipeline-model", "schema_version": "1"}, "not an int"),
])
def test_the_schema_check_refuses_newer_foreign_and_malformed_manifests(manifest, message):
    with pytest.raises(PipelineError, match=message):
        check_schema(Path("m"), manifest)
    check_schema(Path("m"), {"kind": "pipeline-model", "schema_version": SCHEMA_VERSION})
