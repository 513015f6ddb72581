"""pipeline.cache.entries: verified entries, one writer per entry, guarded removal, and
pipeline.cache.files' disk-space reservation."""

from __future__ import annotations

import errno
import threading
import time

import numpy as np
import pandas as pd
import pytest

from pipeline.cache import entries, files
from pipeline.cache.entries import claim, entry_complete, finish_entry, remove_tree, verify_entry
from pipeline.errors import PipelineError


def _entry(tmp_path, values=None):
    entry = tmp_path / "cache" / "k1"
    entry.mkdir(parents=True)
    files.save_npy(entry / "features.npy", np.arange(12, dtype=np.float32).reshape(4, 3)
                   if values is None else values)
    files.write_csv(entry / "index.csv", pd.DataFrame({"image": ["a", "b", "c", "d"]}))
    finish_entry(entry, {"key": "inputs"}, ["features.npy", "index.csv"])
    entries._VERIFIED.clear()  # as a new process would see it
    return entry


def test_a_finished_entry_records_its_files_and_verifies(tmp_path):
    entry = _entry(tmp_path)
    manifest = verify_entry(entry)
    assert manifest["key"] == "inputs" and set(manifest["files"]) == {"features.npy", "index.csv"}
    assert entry_complete(entry)
    assert not entry_complete(tmp_path / "cache" / "nothing")


def test_changed_values_are_refused_naming_the_entry_the_file_and_the_fix(tmp_path):
    entry = _entry(tmp_path)
    changed = np.load(entry / "features.npy")
    changed[2, 1] += 1.0
    np.save(entry / "features.npy", changed)  # same size, other bytes
    with pytest.raises(PipelineError) as info:
        verify_entry(entry)
    message = str(info.value)
    assert str(entry) in message and "features.npy" in message and "contents changed" in message
    assert "make clean-cache" in message


def test_swapped_ids_and_truncation_are_refused(tmp_path):
    entry = _entry(tmp_path)
    files.write_csv(entry / "index.csv", pd.DataFrame({"image": ["b", "a", "c", "d"]}))
    with pytest.raises(PipelineError, match="index.csv.*contents changed"):
        verify_entry(entry)
    entry = _entry(tmp_path / "second")
    data = (entry / "features.npy").read_bytes()
    (entry / "features.npy").write_bytes(data[:-10])
    with pytest.raises(PipelineError, match=r"features.npy has \d+ bytes.*\(truncated\)"):
        verify_entry(entry)
    (entry / "features.npy").unlink()
    with pytest.raises(PipelineError, match="features.npy is missing"):
        verify_entry(entry)


def test_an_entry_without_file_digests_is_incomplete(tmp_path):
    entry = tmp_path / "old"
    entry.mkdir()
    files.write_json(entry / "manifest.json", {"key": "from an older version"})
    assert not entry_complete(entry)
    with pytest.raises(PipelineError, match="older version"):
        verify_entry(entry)


def test_two_writers_of_one_entry_compute_it_once(tmp_path):
    entry = tmp_path / "cache" / "shared"
    computed, seen = [], []

    def writer(name):
        with claim(entry) as todo:
            seen.append((name, todo))
            if todo:
                time.sleep(0.2)  # the other writer waits on the lock meanwhile
                entry.mkdir(parents=True, exist_ok=True)
                files.write_text(entry / "data.txt", name)
                finish_entry(entry, {}, ["data.txt"])
                computed.append(name)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1 and sorted(todo for _, todo in seen) == [False, True]
    assert (entry / "data.txt").read_text() == computed[0]
    verify_entry(entry)


def test_remove_tree_refuses_anything_outside_its_folder(tmp_path):
    inside = tmp_path / "cache" / "entry.partial"
    inside.mkdir(parents=True)
    (inside / "x").write_text("x")
    for path, top in ((tmp_path, tmp_path / "cache"), (tmp_path / "cache", tmp_path / "cache"),
                      ("", tmp_path), ("/", tmp_path), (tmp_path / "cache" / ".." / "..",
                                                        tmp_path / "cache")):
        with pytest.raises(PipelineError, match="refusing to delete"):
            remove_tree(path, top)
    assert (inside / "x").is_file()
    remove_tree(inside, tmp_path / "cache")
    assert not inside.exists()


def test_a_full_disk_is_a_clear_error_before_anything_is_written(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "posix_fallocate", no_space)
    with pytest.raises(PipelineError) as info:
        files.allocate_npy(tmp_path / "big.partial.npy", np.uint8, (1000, 64, 64, 3))
    message = str(info.value)
    assert "no space left to write" in message and "big.partial.npy" in message
    assert "It needs 11.7 MiB" in message and "free there" in message
    assert not (tmp_path / "big.partial.npy").exists()  # nothing that looks started


def test_io_errors_name_the_path_and_the_fix(tmp_path):
    read_only = files.io_error(OSError(errno.EROFS, "Read-only file system", str(tmp_path / "c")),
                               tmp_path)
    assert "read-only file system" in str(read_only) and str(tmp_path / "c") in str(read_only)
    assert "experiment.cache_dir" in str(read_only)
    denied = files.io_error(PermissionError(errno.EACCES, "Permission denied"), tmp_path / "d")
    assert "no permission" in str(denied) and str(tmp_path / "d") in str(denied)
