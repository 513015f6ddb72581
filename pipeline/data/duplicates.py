"""Duplicate images in a manifest: exact copies by content, near copies by a perceptual hash.

The same file listed under two ids (real collections have them: ISIC 2019 and ISIC 2020 share
images, and Kim & Rocheteau add ISIC 2019's melanomas to ISIC 2020) can land in both halves of a
split, so an image would be trained on and tested on. ``exact_duplicates`` groups a manifest's
rows by the SHA-256 of their files (the digests the image cache computes anyway);
``resolve_duplicates`` applies the experiment's ``data.duplicates`` policy:

- ``"error"`` (default): refuse, listing each group of ids with its labels and the fix;
- ``"group"``: the ids of one content (and every id sharing a group with them, e.g. a patient)
  become one group, so they always fall in the same part of every split;
- ``"drop"``: keep the first id of each content, drop the others.

Copies with different labels (one file called melanoma and benign) are an error under every
policy: which label is right is for a person to decide.

Near copies (the same lesion resized or re-encoded) have different bytes. ``perceptual_hashes``
and ``near_duplicate_pairs`` (``python -m pipeline duplicates``) list candidate pairs by the
Hamming distance of a 64-bit DCT hash (pHash), for a person to judge; nothing is changed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

POLICIES = ("error", "group", "drop")
HASH_SIDE = 8  # the hash is HASH_SIDE x HASH_SIDE bits: 64
_DCT_SIDE = 32  # images are reduced to 32 x 32 grey before the DCT, as pHash does


def _where(frame: pd.DataFrame, index) -> str:
    return str(frame.at[index, "_where"]) if "_where" in frame.columns else f"row {index}"


def exact_duplicates(frame: pd.DataFrame, digests: dict[str, str]) -> pd.DataFrame:
    """The rows of ``frame`` whose file has the same SHA-256 as another row's.

    Args:
        frame: a manifest table (``image``, ``category``; ``_where`` names each row's label file
            and row when present).
        digests: image id -> SHA-256 of its file (ids without one, unreadable files, are left
            out).

    Returns:
        Columns ``sha256``, ``image``, ``category``, ``where``, ``index`` (the row's index in
        ``frame``), one row per duplicated image, in ``frame``'s order within each content; empty
        when every file is unique.
    """
    sha = frame["image"].map(digests)
    repeated = sha.notna() & sha.duplicated(keep=False)
    rows = frame[repeated]
    return pd.DataFrame({"sha256": sha[repeated].to_numpy(), "image": rows["image"].to_numpy(),
                         "category": rows["category"].to_numpy(),
                         "where": [_where(frame, i) for i in rows.index],
                         "index": rows.index.to_numpy()})


def _describe(groups: pd.DataFrame, limit: int = 10) -> str:
    lines = []
    for sha, members in list(groups.groupby("sha256", sort=False))[:limit]:
        ids = ", ".join(f"{r.image} ({r.category}, {r.where})" for r in members.itertuples())
        lines.append(f"  {sha[:12]}: {ids}")
    more = groups["sha256"].nunique() - limit
    return "\n".join(lines + ([f"  ... and {more} more"] if more > 0 else []))


def resolve_duplicates(frame: pd.DataFrame, digests: dict[str, str], policy: str,
                       where: str = "data.duplicates") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply ``policy`` (see the module docstring) to ``frame``'s exact duplicates.

    Args:
        frame: the manifest table (the target's rows and any extra dataset's).
        digests: image id -> SHA-256 of its file.
        policy: ``"error"``, ``"group"`` or ``"drop"``.
        where: the setting's name, for the messages.

    Returns:
        The table to use (``drop``: without the later copies; ``group``: with their groups
        joined) and the duplicates found (``exact_duplicates`` plus ``action``: ``kept``,
        ``dropped`` or ``grouped``, and the ``group`` each ends in); both unchanged or empty
        when there is none.

    Raises:
        PipelineError: duplicates under ``"error"``, or copies with different labels under any
            policy, listing each group of ids with its labels, label file and row, and the fix.
    """
    if policy not in POLICIES:
        raise PipelineError(f"{where} = {policy!r}: choose one of {', '.join(POLICIES)}.")
    found = exact_duplicates(frame, digests)
    if found.empty:
        return frame, found.assign(action=[], group=[])
    n_contents = found["sha256"].nunique()
    conflicting = found.groupby("sha256")["category"].transform("nunique") > 1
    if conflicting.any():
        raise PipelineError(
            f"{conflicting.groupby(found['sha256']).any().sum()} image file(s) are listed under "
            f"several ids with different labels (the same bytes, by SHA-256):\n"
            f"{_describe(found[conflicting])}\nWhich label is right is for you to decide: "
            "correct or remove the wrong rows in the label file(s); no data.duplicates setting "
            "keeps both.")
    if policy == "error":
        raise PipelineError(
            f"{len(found)} ids share {n_contents} image file(s) (the same bytes, by SHA-256), so "
            f"one image could be trained on and tested on:\n{_describe(found)}\nRemove the "
            "repeated rows, or set data.duplicates = \"group\" (the ids of one file always fall "
            "in the same part) or \"drop\" (keep the first id of each file).")
    out = frame.copy()
    if policy == "drop":
        first = ~found["sha256"].duplicated()
        out = out.drop(index=found.loc[~first, "index"])
        found = found.assign(action=np.where(first, "kept", "dropped"),
                             group=[frame.at[i, "group"] for i in found["index"]])
        return out.reset_index(drop=True), found
    # group: join the groups of every content's ids, transitively (a patient with a copy joins
    # the copy's other patient), naming each joined group after its first member's group
    parent: dict[str, str] = {}

    def root(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for _, members in found.groupby("sha256", sort=False):
        groups = [frame.at[i, "group"] for i in members["index"]]
        for g in groups[1:]:
            a, b = root(groups[0]), root(g)
            if a != b:
                parent[b] = a
    out["group"] = out["group"].map(lambda g: root(g))
    found = found.assign(action="grouped", group=[out.at[i, "group"] for i in found["index"]])
    return out, found


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """64-bit DCT hashes (pHash) of decoded images: grey, reduced to 32 x 32, the 8 x 8 lowest
    DCT frequencies compared with their median. Near copies (resized, re-encoded, slightly
    recoloured) differ in few bits.

    Args:
        images: uint8 array (n, height, width, 3), e.g. the image cache's.

    Returns:
        uint64 array (n,).
    """
    from PIL import Image
    from scipy.fft import dctn

    out = np.empty(len(images), dtype=np.uint64)
    weights = 1 << np.arange(HASH_SIDE * HASH_SIDE, dtype=np.uint64)[::-1]
    for i, image in enumerate(images):
        grey = Image.fromarray(np.asarray(image)).convert("L").resize(
            (_DCT_SIDE, _DCT_SIDE), Image.Resampling.LANCZOS)
        low = dctn(np.asarray(grey, dtype=np.float64), norm="ortho")[:HASH_SIDE, :HASH_SIDE]
        bits = (low > np.median(low)).ravel().astype(np.uint64)
        out[i] = np.sum(bits * weights, dtype=np.uint64)
    return out


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 counts them natively)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    bits = np.unpackbits(np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8), axis=-1)
    return bits.sum(axis=-1, dtype=np.int64)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, block: int = 2048
                         ) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)``, i < j, of hashes at most ``max_distance`` bits apart, nearest
    first (then by i, j); compared in blocks of ``block`` rows, so memory stays
    ``block x len(hashes)``."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs = []
    for start in range(0, len(hashes), block):
        rows = hashes[start:start + block]
        distance = _popcount(rows[:, None] ^ hashes[None, :])
        i, j = np.nonzero(distance <= max_distance)
        i = i + start
        keep = i < j
        pairs += [(int(a), int(b), int(d)) for a, b, d in
                  zip(i[keep], j[keep], distance[i[keep] - start, j[keep]])]
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))
