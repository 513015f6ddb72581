"""Copy a PyTorch state dict (as NumPy arrays) into a Keras model, layer by layer.

A converter describes a network as a list of ``TorchLayer`` rows: the Keras layer, the state-dict
prefix it takes its weights from, and the kind of layer, which fixes the layout change:

| kind        | PyTorch                                   | Keras                                   |
|-------------|-------------------------------------------|-----------------------------------------|
| ``conv``    | ``weight`` (out, in/groups, kh, kw), ``bias`` | ``kernel`` (kh, kw, in/groups, out), ``bias`` |
| ``depthwise`` | ``weight`` (in*m, 1, kh, kw), ``bias``  | ``kernel`` (kh, kw, in, m), ``bias``    |
| ``bn``      | ``weight, bias, running_mean, running_var`` (+ ``num_batches_tracked``) | ``gamma, beta, moving_mean, moving_variance`` |
| ``linear``  | ``weight`` (out, in), ``bias``            | ``kernel`` (in, out), ``bias``          |

``assign_torch_weights`` checks the whole mapping before it writes anything: every key the mapping
needs must be in the state dict, every key of the state dict must be used by the mapping, and every
shape must match; otherwise one ``PipelineError`` lists all the missing keys, unexpected keys and
shape mismatches. Nothing here imports PyTorch (or TensorFlow: it works on any Keras model given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.errors import PipelineError

KINDS = ("conv", "depthwise", "bn", "linear")
_SHOWN = 20  # keys listed per kind of problem


@dataclass(frozen=True)
class TorchLayer:
    """One Keras layer and the state-dict entries it takes.

    Attributes:
        keras: the Keras layer's name (``model.get_layer(keras)``).
        torch: the state-dict prefix, e.g. ``"_blocks.0._depthwise_conv"`` (keys ``<prefix>.weight``...).
        kind: one of ``KINDS``.
    """

    keras: str
    torch: str
    kind: str


def _torch_layout(kind: str, name: str, value: np.ndarray, want: tuple) -> np.ndarray:
    """A PyTorch array in Keras's layout (``want``: the Keras variable's shape)."""
    if name != "weight" or kind == "bn":
        return value
    if kind == "conv" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)  # (out, in/groups, kh, kw) -> (kh, kw, in/groups, out)
    if kind == "depthwise" and value.ndim == 4 and value.shape[1] == 1 and len(want) == 4:
        # PyTorch: (in*m, 1, kh, kw), output channel c*m + j is multiplier j of input c;
        # Keras: (kh, kw, in, m).
        kh, kw = value.shape[2:]
        multiplier = want[3]
        if value.shape[0] % multiplier:
            return value
        return value[:, 0].transpose(1, 2, 0).reshape(kh, kw, value.shape[0] // multiplier,
                                                      multiplier)
    if kind == "linear" and value.ndim == 2:
        return value.T
    return value


def _targets(layer: Any, kind: str) -> dict[str, Any]:
    """Keras variables of ``layer`` by PyTorch parameter name."""
    if kind == "bn":
        return {"weight": layer.gamma, "bias": layer.beta, "running_mean": layer.moving_mean,
                "running_var": layer.moving_variance}
    out = {"weight": layer.kernel}  # Keras 3 calls a depthwise kernel ``kernel`` too
    if getattr(layer, "bias", None) is not None:
        out["bias"] = layer.bias
    return out


def assign_torch_weights(model: Any, state: Mapping[str, np.ndarray],
                         layers: Sequence[TorchLayer], *, source: str = "the state dict",
                         ignore: Sequence[str] = ()) -> int:
    """Copy ``state`` into ``model`` through ``layers``; returns the number of arrays copied.

    Args:
        model: a built Keras model.
        state: PyTorch parameter name -> array, as ``torch.save`` stored them.
        layers: the mapping, one row per Keras layer with weights.
        source: how error messages name the state dict (its file).
        ignore: state-dict keys (or prefixes ending in ``.``) that are expected and not used.

    Raises:
        PipelineError: listing every missing key, unexpected key and shape mismatch (nothing is
            assigned then), or naming an unknown layer or kind.
    """
    plan, missing, mismatched, used = [], [], [], set()
    for row in layers:
        if row.kind not in KINDS:
            raise PipelineError(f"TorchLayer {row}: kind must be one of {', '.join(KINDS)}.")
        try:
            layer = model.get_layer(row.keras)
        except ValueError:
            raise PipelineError(f"the mapping names Keras layer {row.keras!r}, which model "
                                f"{model.name!r} does not have.") from None
        for name, variable in _targets(layer, row.kind).items():
            key = f"{row.torch}.{name}"
            if key not in state:
                missing.append(key)
                continue
            used.add(key)
            value = np.asarray(state[key])
            want = tuple(variable.shape)
            converted = _torch_layout(row.kind, name, value, want)
            if tuple(converted.shape) != want:
                mismatched.append(f"{key}: {tuple(value.shape)} in {source}, Keras layer "
                                  f"{row.keras!r} needs {want} (after the layout change)")
                continue
            plan.append((variable, converted))
        if row.kind == "bn":
            used.add(f"{row.torch}.num_batches_tracked")
    unexpected = [k for k in state if k not in used and not any(
        k == i or (i.endswith(".") and k.startswith(i)) for i in ignore)]
    if missing or unexpected or mismatched:
        parts = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                more = f" ... ({len(items)} in all)" if len(items) > _SHOWN else ""
                parts.append(f"{title}: " + "; ".join(items[:_SHOWN]) + more)
        raise PipelineError(f"{source} does not fit {model.name!r}: " + " | ".join(parts)
                            + ". Check that the file holds this network's weights (--network).")
    for variable, value in plan:
        variable.assign(value.astype(np.float32))
    return len(plan)
