"""Patient metadata (age, sex, body site) encoded for a classifier, and joined to image features.

Kim & Rocheteau (2020) process the static features separately and concatenate them to the CNN's
output. The encoding here, fitted on a run's training part only:

- ``sex`` and ``site``: one-hot over the values seen in the training part, plus an explicit
  ``unknown`` column that takes empty values, published "unknown"s, and values the training part
  never saw (so an unexpected value in the test part never crashes and never borrows a column);
- ``age``: standardised with the training part's mean and standard deviation (of the known ages),
  0 when missing, plus a missing indicator.

``join_metadata`` puts the encoded block beside L2-normalised image features for the linear SVM.
Scaling, and why: an L2-normalised feature vector has norm 1; the metadata block has norm about
sqrt(k) for k keys (each one-hot block has norm 1, a standardised age about 1), so it is divided
by sqrt(k) to have norm about 1 too. The SVM pipeline then L2-normalises the joined vector (it
always does: Menegola's classifier, unchanged), leaving each block about 1/sqrt(2) of it: neither
the 4096 image dimensions nor the few metadata ones drown the other, and no weight has to be
tuned on the test part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.preprocessing import normalize

from pipeline.data.vocabulary import METADATA_KEYS, UNKNOWN_VALUES
from pipeline.errors import PipelineError

UNKNOWN = "unknown"


def _clean(values: pd.Series) -> pd.Series:
    """Strings stripped and lower-cased, every spelling of unknown as ``UNKNOWN``."""
    text = values.fillna("").astype(str).str.strip().str.lower()
    return text.where(~text.isin(UNKNOWN_VALUES), UNKNOWN)


def _ages(values: pd.Series, key_source: str) -> np.ndarray:
    """Ages as floats, NaN when unknown."""
    text = _clean(values)
    numbers = pd.to_numeric(text.where(text != UNKNOWN), errors="coerce")
    bad = text[(text != UNKNOWN) & numbers.isna()]
    if len(bad):
        raise PipelineError(f"column 'age' of {key_source} holds {bad.iloc[0]!r} (image "
                            f"{bad.index[0]}), not a number; ages must be numbers of years or "
                            "empty. Fix the dataset's table and rerun `make data`.")
    return numbers.to_numpy(dtype=np.float64)


class MetadataEncoder:
    """One-hot sex and site with an explicit unknown; age standardised with a missing indicator.

    Args:
        keys: the metadata to encode, a subset of ``("age", "sex", "site")`` in any order (the
            output follows ``METADATA_KEYS``' order).
        source: what the rows come from, for error messages (the manifest's path).

    Attributes (after ``fit``):
        categories_: key -> the values seen in the training part, sorted (``sex``, ``site``).
        age_mean_, age_scale_: the training part's mean and standard deviation of known ages
            (scale 1 when they are all equal).
        feature_names_: the output's column names, e.g. ``sex=female``, ``sex=unknown``,
            ``age``, ``age_missing``.
    """

    def __init__(self, keys: Sequence[str], source: str = "the manifest"):
        self.keys = tuple(keys)
        self.source = source

    def fit(self, frame: pd.DataFrame) -> "MetadataEncoder":
        """Learn categories and age statistics from the training part.

        Args:
            frame: the training rows, one column per key (strings as in the manifest), indexed
                by image id.

        Returns:
            self.

        Raises:
            PipelineError: an unknown key, a missing column, a key with no known value in the
                training part (the encoding would be constant), or an age that is not a number.
        """
        unknown = [k for k in self.keys if k not in METADATA_KEYS]
        if unknown or len(set(self.keys)) != len(self.keys):
            raise PipelineError(f"metadata keys must be distinct values of {list(METADATA_KEYS)}; "
                                f"got {list(self.keys)}.")
        missing = [k for k in self.keys if k not in frame.columns]
        if missing:
            raise PipelineError(f"{self.source} has no column {missing[0]!r}; metadata needs "
                                f"{list(self.keys)}. Rebuild it with `make data`.")
        self.categories_ = {}
        for key in self.ordered_keys:
            if key == "age":
                ages = _ages(frame["age"], self.source)
                known = ages[~np.isnan(ages)]
                if not len(known):
                    raise PipelineError(self._empty("age", len(frame)))
                self.age_mean_ = float(known.mean())
                scale = float(known.std())
                self.age_scale_ = scale if scale > 0 else 1.0
            else:
                values = sorted(set(_clean(frame[key])) - {UNKNOWN})
                if not values:
                    raise PipelineError(self._empty(key, len(frame)))
                self.categories_[key] = values
        names = []
        for key in self.ordered_keys:
            names += (["age", "age_missing"] if key == "age" else
                      [f"{key}={v}" for v in self.categories_[key]] + [f"{key}={UNKNOWN}"])
        self.feature_names_ = names
        return self

    @property
    def ordered_keys(self) -> tuple[str, ...]:
        """The keys in ``METADATA_KEYS``' order (the output's block order)."""
        return tuple(k for k in METADATA_KEYS if k in self.keys)

    def _empty(self, key: str, n: int) -> str:
        return (f"metadata key {key!r}: none of the {n} training images in {self.source} has a "
                f"known {key}, so it cannot inform the classifier. Remove {key!r} from "
                "`classifier.metadata`, or use a dataset that records it.")

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode rows (any part) with the training part's categories and statistics.

        Args:
            frame: rows with one column per key, as for ``fit``.

        Returns:
            Array of shape (n_rows, len(feature_names_)), float32.
        """
        if not hasattr(self, "feature_names_"):
            raise PipelineError("MetadataEncoder.transform before fit; fit it on the training "
                                "part first.")
        blocks = []
        for key in self.ordered_keys:
            if key == "age":
                ages = _ages(frame["age"], self.source)
                missing = np.isnan(ages)
                z = np.where(missing, 0.0, (ages - self.age_mean_) / self.age_scale_)
                blocks.append(np.stack([z, missing.astype(np.float64)], axis=1))
            else:
                cats = self.categories_[key]
                values = _clean(frame[key]).to_numpy()
                onehot = np.zeros((len(values), len(cats) + 1))
                index = {v: i for i, v in enumerate(cats)}
                onehot[np.arange(len(values)),
                       [index.get(v, len(cats)) for v in values]] = 1.0
                blocks.append(onehot)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def state(self) -> dict:
        """The fitted encoding as plain data (for a network entry's manifest and cache key)."""
        if not hasattr(self, "feature_names_"):
            raise PipelineError("MetadataEncoder.state before fit; fit it on the training part.")
        out = {"keys": list(self.ordered_keys), "categories": self.categories_}
        if "age" in self.keys:
            out.update(age_mean=self.age_mean_, age_scale=self.age_scale_)
        return out

    @classmethod
    def from_state(cls, state: dict, source: str = "the manifest") -> "MetadataEncoder":
        """The encoder ``state()`` describes, fitted, without the training rows."""
        encoder = cls(state["keys"], source)
        encoder.categories_ = {k: list(v) for k, v in state["categories"].items()}
        if "age" in encoder.keys:
            encoder.age_mean_, encoder.age_scale_ = state["age_mean"], state["age_scale"]
        names = []
        for key in encoder.ordered_keys:
            names += (["age", "age_missing"] if key == "age" else
                      [f"{key}={v}" for v in encoder.categories_[key]] + [f"{key}={UNKNOWN}"])
        encoder.feature_names_ = names
        return encoder

    def fit_transform(self, frame: pd.DataFrame) -> np.ndarray:
        """``fit(frame).transform(frame)``."""
        return self.fit(frame).transform(frame)


def join_metadata(features: np.ndarray, metadata: np.ndarray, n_keys: int) -> np.ndarray:
    """Image features L2-normalised, joined with the metadata block scaled by 1/sqrt(n_keys).

    Args:
        features: array of shape (n_images, n_features).
        metadata: array of shape (n_images, n_encoded), from ``MetadataEncoder.transform``.
        n_keys: how many metadata keys were encoded (each block has norm about 1).

    Returns:
        Array of shape (n_images, n_features + n_encoded), float32 (see the module docstring for
        why this scaling).
    """
    if len(features) != len(metadata):
        raise PipelineError(f"{len(features)} feature rows but {len(metadata)} metadata rows; "
                            "they must describe the same images in the same order.")
    scaled = np.asarray(metadata, dtype=np.float64) / np.sqrt(max(int(n_keys), 1))
    return np.concatenate([normalize(np.asarray(features, dtype=np.float64)), scaled],
                          axis=1).astype(np.float32)
