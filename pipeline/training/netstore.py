"""Networks in the content-keyed cache: ``features_cache/networks/<key>/``.

An entry holds ``model.weights.h5`` (the whole model, head included), ``mean.npy`` (the RGB mean
subtracted from its inputs: the ImageNet mean for ImageNet-derived networks, the training set's
own mean otherwise, as in the paper) and ``manifest.json`` (written last: the network's name,
input size, width, head size and everything its key hashes). The key of a trained network hashes
the digest of its initial weights, the training images and labels, the recipe and the seed, so a
change retrains exactly what it affects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import console
from pipeline.cache.entries import entry_complete, finish_entry, remove_tree, verify_entry
from pipeline.cache.files import atomic_path, save_npy, short_key
from pipeline.errors import PipelineError


@dataclass
class StoredNetwork:
    """A network loaded from the cache."""

    model: object  # keras.Model
    spec: object  # pipeline.models.registry.NetworkSpec
    mean: np.ndarray | None  # shape (3,), RGB; None: the backbone's own preprocess_input
    entry: Path
    info: dict


def weights_digest(model) -> str:
    """SHA-256 over every weight array of ``model`` in layer order (its identity for cache keys)."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight.numpy()))
        digest.update(weight.path.encode() if hasattr(weight, "path") else b"")
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def entry_dir(cache_dir: str | Path, key_inputs: dict) -> Path:
    """The cache folder of a network whose key hashes ``key_inputs``: ``<cache_dir>/networks/<key>``."""
    return Path(cache_dir) / "networks" / short_key(key_inputs)


def save(entry: Path, model, mean: np.ndarray, inputs: dict) -> Path:
    """Write a network entry atomically (manifest last)."""
    entry.mkdir(parents=True, exist_ok=True)
    with atomic_path(entry / "model.weights.h5") as tmp:
        model.save_weights(tmp)
    files = ["model.weights.h5"]
    if mean is not None:
        save_npy(entry / "mean.npy", np.asarray(mean, dtype=np.float32).reshape(3))
        files.append("mean.npy")
    finish_entry(entry, {**inputs, "classes": int(model.output_shape[-1]),
                         "digest": weights_digest(model)}, files)
    return entry


def load(entry: str | Path, reuse: dict | None = None) -> StoredNetwork:
    """Rebuild a network from its entry (architecture from the manifest, then its weights).

    Args:
        entry: the network entry.
        reuse: models built by earlier calls, by architecture; a model of the same architecture
            is loaded with this entry's weights instead of being built again (it is then shared:
            the earlier network's weights are gone).
    """
    from pipeline.models.registry import get_network

    entry = Path(entry)
    if not entry_complete(entry):
        raise PipelineError(f"network entry {entry} is missing or incomplete (no manifest.json); "
                            "rerun `make pretrain` / `make finetune` to rebuild it.")
    info = verify_entry(entry)
    spec = get_network(info["network"])
    # Keras' default init, not the (slow) orthogonal one: every weight is overwritten next, and
    # load_weights fails loudly on any mismatch, so nothing random survives.
    branch = metadata_width(info)
    key = (info["network"], info["input_size"], info["width"], info["classes"], branch)
    if reuse is not None and key in reuse:
        model = reuse[key]
    else:
        model = spec.builder(spec, info["input_size"], info["width"], info["classes"], None, 0)
        if branch:
            from pipeline.models.metadata_branch import add_metadata_branch

            model = add_metadata_branch(model, spec, branch, info["classes"])
        if reuse is not None:
            reuse[key] = model
    model.load_weights(entry / "model.weights.h5")
    if weights_digest(model) != info["digest"]:
        raise PipelineError(f"network entry {entry}: the loaded weights do not match the digest in "
                            "its manifest.json (a damaged file?). Delete the folder and rerun.")
    return StoredNetwork(model=model, spec=spec, mean=load_mean(entry), entry=entry, info=info)


def metadata_width(info: dict) -> int:
    """Width of a network entry's metadata input (0: images only), from its encoder state."""
    from pipeline.classifiers.metadata import MetadataEncoder

    state = info.get("metadata")
    return len(MetadataEncoder.from_state(state).feature_names_) if state else 0


def load_mean(entry: str | Path) -> np.ndarray | None:
    """The RGB mean of a network entry, or ``None`` for a Keras backbone with ImageNet weights,
    whose own ``preprocess_input`` applies."""
    path = Path(entry) / "mean.npy"
    return np.load(path) if path.is_file() else None


def train_and_save(entry: Path, model, spec, pixels: np.ndarray, labels: np.ndarray,
                   mean: np.ndarray | None, recipe, seed: int, inputs: dict,
                   validation: np.ndarray | None = None,
                   metadata: np.ndarray | None = None,
                   devices: str = "one") -> Path:
    """Train ``model`` with the recipe (``pipeline.training.train``) and store it as the entry ``entry``.

    Training checkpoints go to ``<entry>.partial/`` so an interrupted run resumes from its last
    completed epoch; that folder is removed once the entry is complete.

    Args:
        entry: the cache folder of the trained network.
        model: a Keras model ending in a softmax over the classes of ``labels``.
        spec: its ``NetworkSpec`` (preprocessing).
        pixels: uint8 images of shape (n, size, size, 3) at the network's input size.
        labels: class indices of shape (n,).
        mean: RGB mean subtracted from the inputs (``None``: the backbone's own preprocessing).
        recipe: the ``TrainRecipe``.
        seed: seed of the training sequence.
        inputs: what the entry's key hashes, recorded in its manifest.
        validation: positions of a given validation part in ``pixels`` (a hold-out's); None:
            the recipe's own split.
        metadata: encoded patient metadata of ``pixels``, for a model with a metadata branch
            (``inputs["metadata"]`` then holds the encoder's state, which ``load`` rebuilds
            the branch from).
        devices: ``"one"`` or ``"all"`` (data-parallel, ``pipeline.training.mirrored``).
    """
    from pipeline.models.metadata_branch import HEAD_LAYERS
    from pipeline.models.preprocessing import preprocess
    from pipeline.training.train import train_classifier

    partial = entry.with_name(entry.name + ".partial")
    result = train_classifier(model, pixels, labels, recipe=recipe,
                              preprocess=lambda x: preprocess(spec, x, mean), seed=seed,
                              workdir=partial, log=None, notify=console.log,
                              validation=validation, metadata=metadata,
                              devices=devices, head=tuple(spec.head) + HEAD_LAYERS)
    save(entry, model, mean, {**inputs, "best_epoch": result.best_epoch,
                              "best_val_loss": result.best_val_loss,
                              "images_per_second": result.images_per_second,
                              "history": result.history, "steps": result.steps,
                              "val_majority": result.val_majority,
                              "val_chance": result.val_chance,
                              "weight_change": result.weight_change})
    remove_tree(partial, entry.parent)
    return entry


class HeadSwapPool:
    """Source networks with a new head for fine-tuning, one Keras model per architecture, reused.

    Building an EfficientNet and tracing its training step takes ~20 s on the CPU, more than a
    short fine-tuning run itself. A finetune stage asks the pool for each run: the pool builds the
    model once per (network, input size, width, classes), then for every run copies the source
    network's weights into it layer by layer and gives the head the same seeded no-transfer init
    ``replace_head`` gives a new one, so the run starts from exactly the weights a freshly built
    model would have, and ``train_classifier`` reuses the compiled steps.
    """

    def __init__(self) -> None:
        self._models: dict[tuple, object] = {}
        self._sources: dict[str, tuple] = {}

    def model_for(self, source_entry: str | Path, classes: int, seed: int):
        """``(model, spec)``: the source network of ``source_entry`` with a new ``classes``-way
        head, its head initialised from ``seed``."""
        from pipeline.models.build import replace_head
        from pipeline.models.initializers import init_no_transfer

        key_entry = str(source_entry)
        if key_entry not in self._sources:
            net = load(source_entry)
            weights = {layer.name: layer.get_weights() for layer in net.model.layers}
            self._sources[key_entry] = (net, weights)
        net, weights = self._sources[key_entry]
        spec, info = net.spec, net.info
        key = (info["network"], info["input_size"], info["width"], int(classes))
        if key not in self._models:
            self._models[key] = replace_head(net.model, spec, classes, seed=seed)
        model = self._models[key]
        for layer in model.layers:
            if layer.name not in spec.head and layer.name in weights:
                layer.set_weights(weights[layer.name])
        init_no_transfer(model.get_layer(spec.head[0]), seed)  # as replace_head does
        return model, spec
