"""Image cache: decode, orient and resize each image once; later stages read a memory-mapped array.

Reads a manifest table (``pipeline.data.manifest.read_manifest``: columns ``image`` and ``abspath``) and
writes one cache entry per (image ids and file contents, size, options):

    <cache_root>/<key>/images.npy     uint8 array of shape (n_images, height, width, 3)
                       index.csv      image, path, sha256, row (the row of images.npy)
                       skipped.csv    image, path, row, reason (when images were skipped; row: file, row)
                       manifest.json  the inputs of the key; written last: marks the entry complete

Each image is decoded by ``pipeline.data.images.load_image`` (size order, resampling and bad-image rules
are described there); a size is ``(width, height)``, arrays are ``(height, width, 3)``.

The command (``pipeline.commands.images``): ``python -m pipeline images --manifest manifest.csv --size 224 [--height H]
--cache features_cache/images [--crop-black-frame] [--skip-bad-images] [--jobs N]``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from PIL import Image
from tqdm import tqdm

from pipeline.cache import entries
from pipeline.cache import files as cache
from pipeline.data.images import (
    DECODER_VERSION,
    MAX_PIXELS,
    REDUCING_GAP,
    RESAMPLE,
    BadImageError,
    as_size,
    load_image,
)
from pipeline.errors import PipelineError

_FIX = ("repair or replace the file, remove its row from the manifest, or pass --skip-bad-images "
        "(skip_bad_images=True) to leave it out and list it in skipped.csv")


class CachedImages:
    """A finished entry of the image cache, opened read-only.

    ``CachedImages(entry_folder)`` opens an entry that ``build_image_cache`` wrote.

    Attributes:
        path: the entry folder ``<cache_root>/<key>``.
        key: the entry's key.
        images: memory-mapped uint8 array of shape (n_images, height, width, 3).
        ids: image ids in row order.
        skipped: table of the skipped images (image, path, row, reason); empty if none.
        n_decoded: images decoded by the build that returned this object (0 when it was cached).
        decode_seconds: wall time of that decoding.
    """

    def __init__(self, path: str | os.PathLike, *, n_decoded: int = 0, decode_seconds: float = 0.0):
        self.path = Path(path)
        if not entries.entry_complete(self.path):
            raise PipelineError(f"{self.path} is not a finished image cache entry (no "
                                f"{entries.MANIFEST}); build it with `python -m pipeline images`.")
        self.key = self.path.name
        entries.verify_entry(self.path)  # sizes always, contents once per process
        self.images = np.load(self.path / "images.npy", mmap_mode="r")
        index = pd.read_csv(self.path / "index.csv", dtype=str, keep_default_na=False)
        self.ids: list[str] = index["image"].tolist()
        self._rows = {image: row for row, image in enumerate(self.ids)}
        skipped = self.path / "skipped.csv"
        self.skipped = (pd.read_csv(skipped, dtype=str, keep_default_na=False) if skipped.is_file()
                        else pd.DataFrame(columns=["image", "path", "row", "reason"]))
        self.n_decoded, self.decode_seconds = n_decoded, decode_seconds

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, ids: Iterable[str] | str) -> np.ndarray:
        """Rows of ``images`` holding ``ids``, as an int64 array of shape (len(ids),)."""
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        missing = [i for i in ids if i not in self._rows]
        if missing:
            skipped = sorted(set(missing) & set(self.skipped["image"]))
            note = (f" {len(skipped)} of them were skipped as bad images (see "
                    f"{self.path / 'skipped.csv'}).") if skipped else ""
            raise PipelineError(f"{len(missing)} image id(s) are not in the image cache entry "
                                f"{self.path}: {missing[:5]}.{note} Build the cache from the "
                                "manifest that lists them (`python -m pipeline images`).")
        return np.fromiter((self._rows[i] for i in ids), dtype=np.int64, count=len(ids))

    def get(self, ids: Iterable[str] | str) -> np.ndarray:
        """Images of ``ids``, in that order: uint8 array of shape (len(ids), height, width, 3)."""
        return np.asarray(self.images[self.index_of(ids)])


_OPENED: dict[str, CachedImages] = {}


def open_cached(path: str | os.PathLike) -> CachedImages:
    """The finished entry at ``path``, opened once per process (an entry is keyed by its content,
    so it never changes under a name); a training or extraction task on a worker opens its images
    this way from the shared cache folder."""
    name = str(Path(path).resolve())
    if name not in _OPENED:
        _OPENED[name] = CachedImages(name)
    return _OPENED[name]

# (path, size, mtime in ns) -> SHA-256, for this process: the data stage hashes a manifest's
# files to find duplicates, then builds the image cache of the same files without reading them
# again. A changed file has another size or modification time, so it is hashed anew.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def _hash(path: str) -> tuple[str | None, str | None]:
    try:
        stat = os.stat(path)
        known = (str(path), stat.st_size, stat.st_mtime_ns)
        if known not in _DIGESTS:
            _DIGESTS[known] = cache.hash_file(path)
        return _DIGESTS[known], None
    except FileNotFoundError:
        return None, "file not found"
    except OSError as exc:
        return None, f"cannot read the file ({exc.strerror or exc})"


def _decode_chunk(rows: list[int], paths: list[str], size: tuple[int, int], crop: bool,
                  reduced: bool, memmap_path: str | None, max_pixels: int = MAX_PIXELS):
    """Decode one chunk; write into the memmap at ``memmap_path`` or return the arrays."""
    good, arrays, bad = [], [], []
    for row, path in zip(rows, paths):
        try:
            arrays.append(load_image(path, size, crop_black_frame=crop, reduced_decode=reduced,
                                     max_pixels=max_pixels))
            good.append(row)
        except BadImageError as exc:
            bad.append((row, exc.reason))
    stacked = np.stack(arrays) if arrays else None
    if memmap_path is not None and good:
        out = np.load(memmap_path, mmap_mode="r+")
        out[good] = stacked
        out.flush()
        stacked = None
    return len(rows), good, stacked, bad


def _bad_image(bad: pd.DataFrame) -> PipelineError:
    """The error for the first row of ``bad`` (columns image, row, abspath, reason)."""
    first = bad.iloc[0]
    more = f" ({len(bad) - 1} more bad image(s) in this manifest)" if len(bad) > 1 else ""
    return PipelineError(f"image {first['image']!r} ({first['row']}, file {first['abspath']}) "
                         f"cannot be used: {first['reason']}{more}. Fix: {_FIX}.")


def _rows_of(manifest: pd.DataFrame) -> list[str]:
    """Where each image's row is, for messages: the table's own ``_where`` (the label file's row,
    from ``build_manifest``/``read_manifest``), else the manifest row (header = row 1)."""
    if "_where" in manifest.columns:
        return manifest["_where"].astype(str).tolist()
    if pd.api.types.is_integer_dtype(manifest.index):
        return [f"manifest row {int(i) + 2}" for i in manifest.index]
    return [f"manifest row {i}" for i in manifest.index]


def _hashed_table(manifest: pd.DataFrame, n_jobs: int, progress: bool) -> pd.DataFrame:
    """image, path, abspath, row, sha256 (None if unreadable), reason; sorted by image."""
    for column in ("image", "abspath"):
        if column not in manifest.columns:
            raise PipelineError(f"the manifest table has no {column!r} column (columns: "
                                f"{list(manifest.columns)}); read the manifest with "
                                "pipeline.data.manifest.read_manifest.")
    if len(manifest) == 0:
        raise PipelineError("the manifest table lists no images; there is nothing to cache.")
    table = pd.DataFrame({"image": manifest["image"].astype(str).to_numpy(),
                          "path": manifest.get("path", manifest["abspath"]).astype(str).to_numpy(),
                          "abspath": manifest["abspath"].astype(str).to_numpy(),
                          "row": _rows_of(manifest)})
    repeated = table["image"][table["image"].duplicated()].unique().tolist()
    if repeated:
        raise PipelineError(f"image ids must be unique in the manifest; repeated: {repeated[:5]}. "
                            "Remove or rename the duplicate rows.")
    jobs = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
        delayed(_hash)(p) for p in table["abspath"])
    hashed = list(tqdm(jobs, total=len(table), desc="hashing", unit="img", disable=not progress))
    table["sha256"], table["reason"] = [h for h, _ in hashed], [r for _, r in hashed]
    return table.sort_values("image", kind="stable").reset_index(drop=True)


def file_digests(manifest: pd.DataFrame, n_jobs: int = -1, progress: bool = True
                 ) -> dict[str, str]:
    """Image id -> SHA-256 of its file (``abspath``), for the readable files of ``manifest``;
    the image cache's key uses the same digests, and a later ``build_image_cache`` of these files
    in this process does not read them again."""
    table = _hashed_table(manifest, n_jobs, progress)
    readable = table[table["sha256"].notna()]
    return dict(zip(readable["image"], readable["sha256"]))


def _decode_into(entry: Path, todo: pd.DataFrame, *, size: tuple[int, int], crop: bool,
                 reduced: bool, n_jobs: int, skip_bad_images: bool, progress: bool,
                 chunk_size: int, workers_write: bool, max_pixels: int
                 ) -> tuple[np.memmap, int, dict]:
    """Decode the rows of ``todo`` not yet done into ``entry/images.partial.npy``.

    Returns:
        The partial array, the number of images decoded, and {row: reason} of the bad images.
    """
    partial, done_path = entry / "images.partial.npy", entry / "done.txt"
    shape = (len(todo), size[1], size[0], 3)
    try:
        images = np.load(partial, mmap_mode="r+")
        if images.shape != shape or images.dtype != np.uint8:
            raise ValueError("partial array of another layout")
        done = _done_rows(done_path, len(todo))
    except (OSError, ValueError):  # absent, or torn while being created
        images = cache.allocate_npy(partial, np.uint8, shape)
        done = set()
        done_path.unlink(missing_ok=True)
    rows = [r for r in range(len(todo)) if r not in done]
    paths = todo["abspath"].tolist()
    tasks = (delayed(_decode_chunk)(chunk, [paths[r] for r in chunk], size, crop, reduced,
                                    str(partial) if workers_write else None, max_pixels)
             for chunk in (rows[i:i + chunk_size] for i in range(0, len(rows), chunk_size)))
    n_decoded, bad_rows = 0, {}
    with open(done_path, "a", encoding="utf-8") as record, \
            tqdm(total=len(todo), initial=len(done), desc="decoding", unit="img",
                 disable=not progress) as bar:
        for count, good, arrays, bad in Parallel(n_jobs=n_jobs, backend="loky",
                                                 return_as="generator_unordered")(tasks):
            if arrays is not None:
                images[good] = arrays
                images.flush()
            # The done record follows the flush, so a row listed there is on disk.
            record.write("".join(f"{r}\n" for r in good))
            record.flush()
            os.fsync(record.fileno())
            n_decoded += count
            bar.update(count)
            bad_rows.update(bad)
            if bad and not skip_bad_images:
                raise _bad_image(_with_reasons(todo, dict(bad)))
    return images, n_decoded, bad_rows


def _with_reasons(todo: pd.DataFrame, bad_rows: dict) -> pd.DataFrame:
    return todo.loc[list(bad_rows)].assign(reason=list(bad_rows.values()))


def _done_rows(path: Path, n: int) -> set[int]:
    """Rows recorded as written by an interrupted build (a torn last line is ignored)."""
    if not path.is_file():
        return set()
    lines = path.read_text(encoding="utf-8").split("\n")
    return {int(s) for s in lines if s.isdigit() and int(s) < n}


def build_image_cache(manifest: pd.DataFrame, cache_root: str | os.PathLike,
                      size: int | tuple[int, int], *, crop_black_frame: bool = False,
                      reduced_decode: bool = True, n_jobs: int = -1, skip_bad_images: bool = False,
                      progress: bool = True, chunk_size: int = 16,
                      workers_write: bool = False, max_pixels: int = MAX_PIXELS) -> CachedImages:
    """Decode every image of ``manifest`` into a content-keyed cache entry, or reuse a finished one.

    The key hashes the sorted (image id, SHA-256 of the file) list, the size, the options and
    ``DECODER_VERSION``; a finished entry is opened without decoding anything. An unfinished one
    resumes: rows recorded in ``done.txt`` (appended after each chunk is flushed to the partial
    array) are not decoded again.

    Args:
        manifest: table with columns ``image`` (unique ids) and ``abspath`` (image files); ``path``
            is recorded too when present. Manifest rows are reported as ``read_manifest`` counts
            them: index label + 2 (the CSV's header is row 1).
        cache_root: folder holding the entries, e.g. ``features_cache/images``.
        size: ``(width, height)`` of the cached images, or one int for a square.
        crop_black_frame: cut black rectangular frames first (see ``pipeline.data.images.load_image``).
        reduced_decode: decode JPEGs at reduced scale where the size allows (see
            ``pipeline.data.images.load_image``).
        n_jobs: decoding processes (joblib; -1 = all cores).
        skip_bad_images: leave out missing or undecodable images, listing them in ``skipped.csv``,
            instead of raising.
        progress: show tqdm progress bars.
        chunk_size: images per task; also how much an interrupted build may have to redo.
        workers_write: workers write into the memory-mapped partial array themselves instead of
            returning arrays to this process (no faster in ``benchmarks/bench_images.py``).
        max_pixels: images with more pixels are refused as possible decompression bombs (part
            of the key: raising it admits images an earlier entry refused).

    Returns:
        The entry, with ``n_decoded`` and ``decode_seconds`` of this call.

    Raises:
        PipelineError: a bad image (naming the file and its manifest row) unless
            ``skip_bad_images``; a manifest without ``image``/``abspath`` or with repeated ids.
    """
    width, height = as_size(size)
    table = _hashed_table(manifest, n_jobs, progress)
    unread = table[table["sha256"].isna()]
    if len(unread) and (not skip_bad_images or len(unread) == len(table)):
        raise _bad_image(unread)
    key_inputs = {"images": table[["image", "sha256"]].values.tolist(), "size": [width, height],
                  "crop_black_frame": crop_black_frame, "reduced_decode": reduced_decode,
                  "decoder_version": DECODER_VERSION, "max_pixels": int(max_pixels)}
    entry = Path(cache_root) / cache.short_key(key_inputs)
    n_decoded, seconds = 0, 0.0
    # A concurrent build of the same entry (stages run side by side) holds the lock; this one
    # waits for it, then reuses its result.
    with entries.claim(entry) as todo:
        if todo:
            entry.mkdir(parents=True, exist_ok=True)
            n_decoded, seconds = _write_entry(
                entry, table, key_inputs, size=(width, height), crop=crop_black_frame,
                reduced=reduced_decode, n_jobs=n_jobs, skip_bad_images=skip_bad_images,
                progress=progress, chunk_size=chunk_size, workers_write=workers_write,
                max_pixels=max_pixels)
    return _finish(CachedImages(entry, n_decoded=n_decoded, decode_seconds=seconds), table,
                   skip_bad_images)


def _write_entry(entry: Path, table: pd.DataFrame, key_inputs: dict,
                 **decode) -> tuple[int, float]:
    """Decode into ``entry`` and write its files, manifest last; returns (n_decoded, seconds)."""
    unread = table[table["sha256"].isna()]
    todo = table[table["sha256"].notna()].reset_index(drop=True)  # rows of the partial array
    start = time.perf_counter()
    images, n_decoded, bad_rows = _decode_into(entry, todo, **decode)
    seconds = time.perf_counter() - start
    keep = [r for r in range(len(todo)) if r not in bad_rows]
    if not keep:
        raise _bad_image(_with_reasons(todo, bad_rows))
    if bad_rows:  # copy the good rows; the partial array keeps a hole for each bad one
        with cache.atomic_path(entry / "images.npy", suffix=".npy") as tmp:
            out = cache.allocate_npy(tmp, np.uint8, (len(keep),) + images.shape[1:])
            for i in range(0, len(keep), 256):
                out[i:i + 256] = images[keep[i:i + 256]]
            out.flush()
            del out
        del images
        (entry / "images.partial.npy").unlink()
    else:
        images.flush()
        del images
        os.replace(entry / "images.partial.npy", entry / "images.npy")
    index = todo.loc[keep, ["image", "path", "sha256"]].reset_index(drop=True)
    cache.write_csv(entry / "index.csv", index.assign(row=range(len(index))))
    skipped = pd.concat([unread, _with_reasons(todo, bad_rows)])
    (entry / "skipped.csv").unlink(missing_ok=True)
    files = ["images.npy", "index.csv"]
    if len(skipped):
        cache.write_csv(entry / "skipped.csv",
                        skipped[["image", "path", "row", "reason"]].sort_values("image"))
        files.append("skipped.csv")
    (entry / "done.txt").unlink()
    entries.finish_entry(entry, {**key_inputs, "n_images": len(keep), "n_skipped": len(skipped),
                               "pillow": Image.__version__, "resample": RESAMPLE.name,
                               "reducing_gap": REDUCING_GAP}, files)
    return n_decoded, seconds


def _finish(result: CachedImages, table: pd.DataFrame, skip_bad_images: bool) -> CachedImages:
    """Refuse an entry with skipped images unless skipping was asked for; otherwise report them."""
    if len(result.skipped):
        if not skip_bad_images:
            bad = table.merge(result.skipped[["image", "reason"]], on="image",
                              suffixes=("_hash", ""))
            raise _bad_image(bad)
        print(f"skipped {len(result.skipped)} bad image(s); listed with reasons in "
              f"{result.path / 'skipped.csv'}", file=sys.stderr)
    return result

