"""Tests of pipeline.data.images and pipeline.data.image_cache: decoding, orientation, reduced-scale decoding,
frames, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data import image_cache
from pipeline.data import images as images_mod
from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.data.image_cache import CachedImages, build_image_cache
from pipeline.data.images import BadImageError, black_frame_box, load_image

MANIFEST_COLUMNS = ["image", "path", "abspath", "diagnosis", "category", "group", "difficulty",
                    "age", "sex", "site"]


def smooth_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (JPEG-friendly), array of shape (height, width, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    channels = [127 + 100 * np.sin(x / width * 3 * np.pi + p) * np.cos(y / height * 2 * np.pi + p)
                for p in phase]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def save(array: np.ndarray, path, **kwargs) -> str:
    Image.fromarray(array).save(path, **kwargs)
    return str(path)


def manifest_for(paths: list[str]) -> pd.DataFrame:
    """A manifest table as read_manifest returns it, for the given image files."""
    rows = [{"image": f"img{i:02d}", "path": str(p), "abspath": str(p), "diagnosis": "nevus",
             "category": "benign", "group": f"img{i:02d}", "difficulty": "", "age": "", "sex": "",
             "site": ""} for i, p in enumerate(paths)]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def make_images(folder, n: int, size=(40, 30)) -> list[str]:
    return [save(smooth_rgb(*size, seed=i), folder / f"im{i}.png") for i in range(n)]


# --- decoding --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, ext", [("RGB", "jpg"), ("RGB", "png"), ("RGB", "tiff"),
                                       ("L", "png"), ("L", "jpg"), ("RGBA", "png"),
                                       ("CMYK", "jpg"), ("P", "png")])
def test_formats_decode_to_rgb_uint8(tmp_path, mode, ext):
    img = Image.fromarray(smooth_rgb(50, 40)).convert(mode)
    path = tmp_path / f"x.{ext}"
    img.save(path)
    out = load_image(path, (32, 24))
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert out.std() > 10, f"{mode} {ext} decoded to a flat image"


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    out = load_image(path, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    expected = np.rint(ramp / 257.0)
    assert np.abs(out[..., 0].astype(float) - expected).mean() < 2
    assert np.array_equal(out[..., 0], out[..., 2])


def test_size_is_width_then_height(tmp_path):
    path = save(smooth_rgb(60, 60), tmp_path / "sq.png")
    assert load_image(path, (50, 20)).shape == (20, 50, 3)
    assert load_image(path, 33).shape == (33, 33, 3)
    with pytest.raises(PipelineError, match="positive"):
        load_image(path, (0, 10))


def test_exif_orientation_is_applied(tmp_path):
    array = smooth_rgb(80, 40)
    array[:10, :20] = (255, 0, 0)  # a marker in the top-left corner, to see the rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    Image.fromarray(array).save(path, quality=95, exif=exif)
    out = load_image(path, (40, 80))  # upright image is 40 wide, 80 tall
    rotated = np.rot90(array, k=-1)  # 90 degrees clockwise
    assert rotated.shape == out.shape
    assert np.abs(out.astype(int) - rotated.astype(int)).mean() < 4
    assert np.abs(out.astype(int) - np.rot90(array, k=1).astype(int)).mean() > 20


def spy_decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Record the (width, height) of every image as decoded, before cropping and resizing."""
    sizes = []
    original = images_mod._to_rgb

    def spy(img, path):
        sizes.append(img.size)
        return original(img, path)

    monkeypatch.setattr(images_mod, "_to_rgb", spy)
    return sizes


def test_reduced_decode_is_used_and_close_to_full(tmp_path, monkeypatch):
    path = save(smooth_rgb(1600, 1200), tmp_path / "big.jpg", quality=92)
    decoded = spy_decoded_sizes(monkeypatch)
    fast = load_image(path, (224, 224))
    full = load_image(path, (224, 224), reduced_decode=False)
    assert decoded[1] == (1600, 1200)
    assert decoded[0][0] < 1600, "JPEG was not decoded at reduced scale"
    assert min(decoded[0]) >= 224
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2.0


def test_reduced_decode_accounts_for_exif_rotation(tmp_path, monkeypatch):
    # 1600x400 stored, 400x1600 upright; a (300, 1200) target must not be decoded below 1200 tall.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "wide.jpg"
    Image.fromarray(smooth_rgb(1600, 400)).save(path, exif=exif)
    decoded = spy_decoded_sizes(monkeypatch)
    out = load_image(path, (300, 1200))
    assert out.shape == (1200, 300, 3)
    assert decoded[0][0] >= 300 and decoded[0][1] >= 1200


# --- black frame ------------------------------------------------------------------------------

def test_black_frame_is_found_and_cropped(tmp_path):
    rng = np.random.default_rng(0)
    framed = rng.integers(0, 12, size=(120, 160, 3)).astype(np.uint8)  # noisy black frame
    framed[15:105, 25:140] = smooth_rgb(115, 90)
    framed[15:105, 25:140] = np.maximum(framed[15:105, 25:140], 30)
    assert black_frame_box(framed) == (25, 15, 140, 105)
    path = save(framed, tmp_path / "framed.png")
    cropped = load_image(path, (115, 90), crop_black_frame=True)
    assert np.abs(cropped.astype(int) - framed[15:105, 25:140].astype(int)).max() <= 1
    # JPEG ringing blurs the frame's edge by a pixel or two at most.
    jpeg = save(framed, tmp_path / "framed.jpg", quality=85)
    box = black_frame_box(load_image(jpeg, (160, 120), reduced_decode=False))
    assert np.abs(np.subtract(box, (25, 15, 140, 105))).max() <= 2, box


def test_dark_image_without_frame_is_not_cropped(tmp_path):
    rng = np.random.default_rng(1)
    dark = rng.integers(10, 45, size=(60, 80, 3)).astype(np.uint8)  # dark, yet no frame
    assert black_frame_box(dark) == (0, 0, 80, 60)
    assert black_frame_box(np.zeros((30, 30, 3), np.uint8)) == (0, 0, 30, 30)  # never to nothing
    path = save(dark, tmp_path / "dark.png")
    assert np.array_equal(load_image(path, (80, 60), crop_black_frame=True),
                          load_image(path, (80, 60)))


# --- bad input --------------------------------------------------------------------------------

def test_corrupt_truncated_missing_files_raise_naming_file(tmp_path):
    good = save(smooth_rgb(300, 200), tmp_path / "good.jpg")
    data = Path(good).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all" * 10)
    for path, words in [(truncated, "truncated"), (corrupt, "not a readable image"),
                        (tmp_path / "missing.jpg", "not found")]:
        with pytest.raises(BadImageError, match=words) as info:
            load_image(path, 32)
        assert str(path) in str(info.value)


def test_decompression_bomb_limit_is_a_setting_and_its_message_says_how_to_raise_it(tmp_path):
    path = save(smooth_rgb(100, 120), tmp_path / "big.png")
    with pytest.raises(BadImageError) as info:
        load_image(path, 32, max_pixels=5000)
    message = str(info.value)
    assert "100x120 = 12,000 pixels is over the limit of 5,000" in message
    assert "data.max_image_pixels" in message and "--max-pixels" in message
    assert "Repair or replace" not in message  # a genuine large photo is not broken
    assert load_image(path, 32, max_pixels=12_000).shape == (32, 32, 3)
    with pytest.raises(PipelineError, match="12,000 pixels is over the limit"):
        build_image_cache(manifest_for([path]), tmp_path / "cache", 16, n_jobs=1,
                          progress=False, max_pixels=5000)
    entry = build_image_cache(manifest_for([path]), tmp_path / "cache", 16, n_jobs=1,
                              progress=False, max_pixels=20_000)
    assert len(entry) == 1


def test_bad_image_in_build_names_file_and_row(tmp_path):
    paths = make_images(tmp_path, 3)
    Path(paths[1]).write_bytes(b"garbage")
    with pytest.raises(PipelineError) as info:
        build_image_cache(manifest_for(paths), tmp_path / "cache", 16, n_jobs=1, progress=False)
    message = str(info.value)
    assert paths[1] in message and "manifest row 3" in message and "--skip-bad-images" in message
    missing = manifest_for(paths[:1] + [str(tmp_path / "gone.png")])
    with pytest.raises(PipelineError, match=r"manifest row 3.*gone\.png.*file not found"):
        build_image_cache(missing, tmp_path / "cache", 16, n_jobs=1, progress=False)


def test_skip_bad_images_lists_them(tmp_path, capsys):
    paths = make_images(tmp_path, 4)
    Path(paths[2]).write_bytes(b"garbage")
    manifest = manifest_for(paths + [str(tmp_path / "gone.png")])
    result = build_image_cache(manifest, tmp_path / "cache", 16, n_jobs=1, progress=False,
                               skip_bad_images=True)
    assert result.ids == ["img00", "img01", "img03"]
    assert result.images.shape == (3, 16, 16, 3)
    skipped = pd.read_csv(result.path / "skipped.csv")
    assert skipped["image"].tolist() == ["img02", "img04"]
    assert skipped["row"].tolist() == ["manifest row 4", "manifest row 6"]  # CSV rows
    assert "not a readable image" in skipped["reason"][0] and "not found" in skipped["reason"][1]
    assert "skipped 2 bad image(s)" in capsys.readouterr().err
    with pytest.raises(PipelineError, match="skipped as bad images"):
        result.index_of(["img02"])
    with pytest.raises(PipelineError, match="img04.*file not found"):
        build_image_cache(manifest, tmp_path / "cache", 16, n_jobs=1, progress=False)


def test_entry_with_skipped_images_is_refused_without_skipping(tmp_path):
    paths = make_images(tmp_path, 3)
    Path(paths[1]).write_bytes(b"garbage")
    manifest = manifest_for(paths)
    kwargs = dict(n_jobs=1, progress=False)
    built = build_image_cache(manifest, tmp_path / "cache", 16, skip_bad_images=True, **kwargs)
    assert built.n_decoded == 3 and len(built) == 2
    with pytest.raises(PipelineError, match=r"'img01' \(manifest row 3.*not a readable image"):
        build_image_cache(manifest, tmp_path / "cache", 16, **kwargs)
    again = build_image_cache(manifest, tmp_path / "cache", 16, skip_bad_images=True, **kwargs)
    assert again.n_decoded == 0 and again.skipped["image"].tolist() == ["img01"]


# --- cache ------------------------------------------------------------------------------------

def test_cache_matches_load_image_and_second_build_decodes_nothing(tmp_path):
    paths = make_images(tmp_path, 5)
    manifest = manifest_for(paths)
    first = build_image_cache(manifest, tmp_path / "cache", (24, 16), n_jobs=1, progress=False,
                              chunk_size=2)
    assert first.n_decoded == 5
    assert isinstance(first.images, np.memmap) and first.images.shape == (5, 16, 24, 3)
    for i in [0, 3]:
        assert np.array_equal(first.get([f"img{i:02d}"])[0], load_image(paths[i], (24, 16)))
    index = pd.read_csv(first.path / "index.csv")
    assert list(index.columns) == ["image", "path", "sha256", "row"]
    assert (first.path / "manifest.json").is_file() and not (first.path / "done.txt").exists()
    second = build_image_cache(manifest.iloc[::-1], tmp_path / "cache", (24, 16), n_jobs=1,
                               progress=False)
    assert second.n_decoded == 0 and second.key == first.key
    assert np.array_equal(second.index_of(["img04", "img01"]), [4, 1])
    with pytest.raises(PipelineError, match="nope"):
        second.index_of(["img01", "nope"])
    assert CachedImages(first.path).ids == first.ids


def test_key_changes_with_content_size_and_options(tmp_path):
    paths = make_images(tmp_path, 3)
    manifest = manifest_for(paths)

    def key(size=16, **kw):
        return build_image_cache(manifest, tmp_path / "cache", size, n_jobs=1, progress=False,
                                 **kw).key

    base = key()
    assert key(size=(16, 12)) != base
    assert key(crop_black_frame=True) != base
    save(smooth_rgb(40, 30, seed=99), paths[1])  # same name, new content
    changed = key()
    assert changed != base
    reused = build_image_cache(manifest, tmp_path / "cache", 16, n_jobs=1, progress=False)
    assert reused.n_decoded == 0 and reused.key == changed


def test_interrupted_build_resumes(tmp_path, monkeypatch):
    n, chunk, fail_at = 7, 2, 5
    paths = make_images(tmp_path, n)
    manifest = manifest_for(paths)
    calls = {"n": 0}
    original = image_cache.load_image

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return original(*args, **kwargs)

    monkeypatch.setattr(image_cache, "load_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_image_cache(manifest, tmp_path / "cache", 16, n_jobs=1, progress=False,
                          chunk_size=chunk)
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # and its .lock
    assert len(entries) == 1 and not (entries[0] / "images.npy").exists()
    monkeypatch.setattr(image_cache, "load_image", original)
    resumed = build_image_cache(manifest, tmp_path / "cache", 16, n_jobs=1, progress=False,
                                chunk_size=chunk)
    finished_chunks = (fail_at - 1) // chunk  # chunks completed before the failing image
    assert resumed.n_decoded == n - finished_chunks * chunk
    fresh = build_image_cache(manifest, tmp_path / "fresh", 16, n_jobs=1, progress=False)
    assert np.array_equal(np.asarray(resumed.images), np.asarray(fresh.images))


@pytest.mark.parametrize("workers_write", [False, True])
def test_parallel_build_matches_sequential(tmp_path, workers_write):
    paths = make_images(tmp_path, 6)
    manifest = manifest_for(paths)
    parallel = build_image_cache(manifest, tmp_path / "a", 16, n_jobs=2, progress=False,
                                 chunk_size=2, workers_write=workers_write)
    sequential = build_image_cache(manifest, tmp_path / "b", 16, n_jobs=1, progress=False)
    assert parallel.n_decoded == 6
    assert np.array_equal(np.asarray(parallel.images), np.asarray(sequential.images))


# --- command line -----------------------------------------------------------------------------

def test_cli_builds_then_reuses(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    paths = make_images(folder, 3)
    manifest = manifest_for([p.split("/")[-1] for p in paths]).drop(columns="abspath")
    manifest.to_csv(folder / "manifest.csv", index=False)
    argv = ["images", "--manifest", str(folder / "manifest.csv"), "--size", "20", "--height", "10",
            "--cache", str(tmp_path / "cache"), "--jobs", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "images: 3 of size 20x10" in out and "decoded: 3" in out and "images/s" in out
    entry = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert str(entry) in out
    assert np.load(entry / "images.npy").shape == (3, 10, 20, 3)
    assert main(argv) == 0
    assert "decoded: 0" in capsys.readouterr().out
    Path(paths[0]).write_bytes(b"garbage")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "manifest.csv, row 2, file" in err and paths[0] in err and "--skip-bad-images" in err
    assert main(argv + ["--skip-bad-images"]) == 0
    captured = capsys.readouterr()
    assert "images: 2 of size 20x10 (width x height), 1 skipped" in captured.out
    assert "skipped 1 bad image(s)" in captured.err and "skipped.csv" in captured.err


def test_a_read_only_cache_is_a_clear_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    import errno
    import os as os_module

    folder = tmp_path / "data"
    folder.mkdir()
    paths = make_images(folder, 2)
    manifest_for([p.split("/")[-1] for p in paths]).drop(columns="abspath").to_csv(
        folder / "manifest.csv", index=False)
    real_mkdir = os_module.mkdir

    def read_only(path, *args, **kwargs):
        if str(tmp_path / "cache") in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os_module, "mkdir", read_only)
    status = main(["images", "--manifest", str(folder / "manifest.csv"), "--size", "8",
                   "--cache", str(tmp_path / "cache"), "--jobs", "1"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "read-only file system" in err and str(tmp_path / "cache") in err
    assert "experiment.cache_dir" in err
