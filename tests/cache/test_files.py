"""pipeline.cache.files: canonical JSON keys and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.cache.files import (atomic_path, hash_file, hash_json, read_json, save_npy,
                                  short_key, write_csv, write_json, write_text)


def test_keys_do_not_depend_on_dict_order_tuples_or_paths():
    a = {"b": [1, 2.5, (3, 4)], "a": {"y": Path("x/y"), "x": np.int64(7)}}
    b = {"a": {"x": 7, "y": "x/y"}, "b": [1, 2.5, [3, 4]]}
    assert hash_json(a) == hash_json(b)
    assert short_key(a) == hash_json(a)[:16] and len(short_key(a, 8)) == 8


def test_keys_tell_apart_what_changes_the_bytes():
    base = {"size": [224, 224], "values": [1.0, 2.0]}
    assert hash_json(base) != hash_json({**base, "size": [224, 225]})
    assert hash_json({"x": 1}) != hash_json({"x": "1"})  # a number is not its text
    assert hash_json({"x": 1}) != hash_json({"x": 1.5})
    arr = np.arange(6, dtype=np.float32)
    assert hash_json({"w": arr}) == hash_json({"w": arr.copy()})
    assert hash_json({"w": arr}) != hash_json({"w": arr.reshape(2, 3)})  # shape is in the key
    assert hash_json({"w": arr}) != hash_json({"w": arr.astype(np.float64)})  # so is the dtype
    changed = arr.copy()
    changed[3] = np.nextafter(changed[3], np.float32(10))
    assert hash_json({"w": arr}) != hash_json({"w": changed})


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out" / "features.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.endswith(".npy")
            np.save(tmp, np.zeros(3))
            raise RuntimeError("killed mid-write")
    assert list(target.parent.iterdir()) == []


def test_atomic_write_replaces_the_old_file_only_when_complete(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc', encoding="utf-8")
            raise RuntimeError("interrupted")
    assert read_json(target) == {"v": 1}
    write_json(target, {"v": 2})
    assert read_json(target) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_writers_round_trip_and_files_are_shared_readable(tmp_path):
    import pandas as pd

    write_text(tmp_path / "t.txt", "hé\n")
    save_npy(tmp_path / "a.npy", np.arange(4))
    write_csv(tmp_path / "t.csv", pd.DataFrame({"a": [1, 2]}))
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "hé\n"
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2, 3]
    assert (tmp_path / "t.csv").read_text() == "a\n1\n2\n"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "t.txt").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert hash_file(tmp_path / "t.txt") == __import__("hashlib").sha256("hé\n".encode()).hexdigest()


def test_write_json_is_canonical(tmp_path):
    write_json(tmp_path / "m.json", {"b": (1, 2), "a": np.float32(0.5)})
    text = (tmp_path / "m.json").read_text()
    assert text.index('"a"') < text.index('"b"') and json.loads(text) == {"a": 0.5, "b": [1, 2]}
