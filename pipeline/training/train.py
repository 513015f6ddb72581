"""The one training routine: training from scratch, fine-tuning, Retinopathy and double transfer.

``train_classifier`` trains a Keras model whose last layer is a k-way softmax with the paper's
recipe (``pipeline.training.recipe.TrainRecipe``): a 10% stratified validation split; each epoch every
training image once as it is, plus, for each minority class, randomly transformed extra copies until
it has as many examples as the majority class; SGD with Nesterov momentum on the categorical
cross-entropy plus ``l2 * sum(w**2)`` over every kernel; the weights with the lowest validation loss
kept. Kim & Rocheteau's options (Adam, early stopping, learning-rate decay on a plateau, every
class augmented, brightness and saturation shifts) are recipe keys whose defaults are the above.
It reads the images from a uint8 array (the image cache's memmap) batch by batch, so memory
stays bounded, and writes nothing but a resumable checkpoint to its ``workdir``.

Randomness is a function of (seed, epoch, image, copy), never of batch position: the validation
split of ``seed``, the epoch's oversampling and order of ``(seed, epoch)``, each augmented copy's
transformation of ``(seed, epoch, image index, copy number)``, dropout's generators reset from
``(seed, epoch)``. An interrupted run that resumes from its checkpoint therefore ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import StratifiedShuffleSplit
from tqdm.auto import tqdm

from pipeline.errors import PipelineError
from pipeline.models.initializers import walk_layers
from pipeline.training.batchnorm import (batchnorm_layers, recompute_statistics, restore_trainable,
                                         set_trainable)
from pipeline.training.augment import epoch_dataset, epoch_length, epoch_plan, plain_plan
from pipeline.training.mean import compute_mean  # noqa: F401  (re-exported)
from pipeline.training.checkpoint import assign_all, fingerprint, load_checkpoint, save_checkpoint
from pipeline.training.optimizer import compiled_steps
from pipeline.training.inputs import check_inputs
from pipeline.training.recipe import TrainRecipe
from pipeline.training.schedule import epoch_rates, probing_body

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.npz"


@dataclass
class TrainResult:
    """What one training run did.

    Attributes:
        history: one dict per epoch: ``epoch`` (1-based), ``loss`` (the training objective,
            cross-entropy plus the L2 penalty, mean over the epoch), ``val_loss`` (validation
            cross-entropy), ``val_accuracy``, ``val_balanced_accuracy`` (the mean over classes of
            each class's recall: always answering one class scores 1/k, whatever the class
            shares), ``seconds`` (whole epoch), ``train_seconds`` (planning and training steps,
            without validation).
        best_epoch: 1-based epoch whose weights the model holds on return.
        best_val_loss: its validation loss.
        images_per_second: training throughput over every epoch in ``history`` (the first epoch of
            a call includes tracing the training step).
        resumed_from: the last completed epoch found in the checkpoint (0 for a fresh run).
        steps: SGD steps over all epochs (batches of ``recipe.batch_size``).
        val_majority: the share of the commonest class in the validation split: the accuracy of
            always answering it, what ``val_accuracy`` must beat to show learning.
        val_chance: ``1 / k``, the balanced accuracy of always answering one class (or of
            guessing), what ``val_balanced_accuracy`` must beat.
        weight_change: ``||w_end - w_start|| / ||w_start||`` over the trainable weights: how far
            training moved the network (a few % means it barely trained).
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    images_per_second: float = 0.0
    resumed_from: int = 0
    steps: int = 0
    val_majority: float = 0.0
    val_chance: float = 0.0
    weight_change: float = 0.0


def split_validation(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out split of the training images (scikit-learn ``StratifiedShuffleSplit``).

    Args:
        y: int array of shape (n_images,).
        fraction: share of the images held out for validation.
        seed: random seed of the split.

    Returns:
        ``(train_idx, val_idx)``, sorted int arrays of positions into ``y``.
    """
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    try:
        train_idx, val_idx = next(splitter.split(np.zeros(len(y)), y))
    except ValueError as exc:
        raise PipelineError(
            f"cannot hold out a stratified validation_fraction={fraction} of {len(y)} images in "
            f"{len(np.unique(y))} classes: {exc}. Use more images or a larger validation_fraction "
            "in the recipe.") from exc
    return np.sort(train_idx), np.sort(val_idx)


def train_classifier(model: keras.Model, images: np.ndarray, y: np.ndarray, *, recipe: TrainRecipe,
                     preprocess: Callable[[tf.Tensor], tf.Tensor], seed: int, workdir: Path,
                     progress: bool = True, log: Callable[[str], None] | None = None,
                     on_epoch_end: Callable[[dict], None] | None = None,
                     notify: Callable[[str], None] | None = None,
                     validation: np.ndarray | None = None,
                     metadata: np.ndarray | None = None,
                     devices: str = "one", head: tuple[str, ...] = ()) -> TrainResult:
    """Train ``model`` in place with ``recipe``; on return it holds the best validation weights.

    Determinism: the function calls ``keras.utils.set_random_seed(seed)`` (Python, NumPy's global
    generator, TensorFlow and Keras) and ``tf.config.experimental.enable_op_determinism()``, which
    stays on for the rest of the process. Two runs with the same seed, model and data on the CPU end
    with identical weights. ``recipe.mixed_precision`` switches every layer but the output softmax
    to ``mixed_float16`` only when TensorFlow sees a GPU (restored on return); a CPU ignores it.

    Resume: after every epoch the model and optimizer variables, the best weights so far and the
    history are written atomically to ``workdir/checkpoint.npz``. A later call with the same
    ``workdir`` resumes after the last completed epoch if the checkpoint's fingerprint (recipe,
    seed, image count and shape, classes, hash of ``y``, hash of the model's initial weights,
    precision) matches; otherwise it raises ``PipelineError`` naming the field. A finished
    checkpoint just restores the best weights. The images' pixels are not hashed (gigabytes for
    Retinopathy): the caller's cache key covers them.

    Args:
        model: Keras model whose input is (height, width, 3) and whose last layer is a softmax with
            k outputs, freshly built (its weights are the run's initial weights).
        images: uint8 array of shape (n_images, height, width, 3) at the model's input size
            (possibly a read-only ``np.memmap``).
        y: int array of shape (n_images,), values 0..k-1, every class at least twice.
        recipe: the training hyper-parameters.
        preprocess: maps a float32 RGB batch of shape (batch, height, width, 3), pixel range 0-255,
            to the network's input (e.g. mean subtraction); traced into the ``tf.data`` pipeline.
        seed: non-negative int fixing the split, the epochs' sequences, augmentation and dropout.
        workdir: folder for the checkpoint (created if missing).
        progress: show a tqdm bar over epochs.
        log: receives one line per epoch (default: this module's logger at INFO).
        notify: receives what the person running the stage must see, e.g. that an interrupted
            run resumes (default: ``log``).
        on_epoch_end: called with the epoch's history row after its checkpoint is written
            (tests raise ``KeyboardInterrupt`` here to simulate an interrupted run).
        validation: positions into ``images`` of a given validation part (a hold-out's, Kim &
            Rocheteau), used instead of the recipe's stratified ``validation_fraction`` split;
            the other images train.
        metadata: float32 array of shape (n_images, d), the encoded patient metadata of each
            image, for a two-input model (``pipeline.models.metadata_branch``); in the
            checkpoint's fingerprint.
        devices: ``"one"`` or ``"all"``: data-parallel over every GPU (or logical CPU); ``model``
            receives the trained weights (``pipeline.training.mirrored`` states the batch rule).
        head: names of the model's top-level layers that form its new head (e.g. the registry's
            ``spec.head``, plus a metadata branch): what ``recipe.head_epochs`` trains alone and
            ``recipe.head_learning_rate`` applies to. Required by those two keys.

    Fine-tuning options of the recipe: ``batchnorm = "frozen"`` puts every BatchNormalization
    layer in inference mode (the source network's statistics; scale and offset not trained) for
    the whole run; ``head_epochs`` first trains the head alone with every BatchNormalization
    layer in inference mode and every Dropout layer outside the head off (the body is a fixed
    feature extractor: linear probing), then every layer for ``recipe.epochs``;
    ``lr_schedule = "cosine"`` sets the learning rate before every step of those epochs.

    Returns:
        The run's ``TrainResult``.
    """
    log = log or logger.info
    classes = check_inputs(model, images, y, recipe, seed)
    head = tuple(name for name in head if name in {layer.name for layer in model.layers})
    if (recipe.head_epochs or recipe.head_learning_rate) and not head:
        raise PipelineError("recipe.head_epochs and recipe.head_learning_rate need the new head's "
                            "layer names: pass head=spec.head (the registry entry's) to "
                            "train_classifier.")
    if devices == "all" and (recipe.head_epochs or recipe.head_learning_rate
                             or recipe.batchnorm == "frozen" or recipe.lr_schedule != "constant"):
        raise PipelineError("train.devices = 'all' trains every layer with a constant learning "
                            "rate; head_epochs, head_learning_rate, batchnorm = 'frozen' and "
                            "lr_schedule are for one device: set devices = 'one' or drop them.")
    y = np.asarray(y, np.int64)
    _seed_everything(seed)
    if validation is None:
        train_idx, val_idx = split_validation(y, recipe.validation_fraction, seed)
    else:
        val_idx = np.unique(np.asarray(validation, np.int64))
        if not len(val_idx) or val_idx[0] < 0 or val_idx[-1] >= len(y) or len(val_idx) == len(y):
            raise PipelineError(f"validation must hold distinct positions into the {len(y)} "
                                "images, leaving some to train on; got "
                                f"{len(val_idx)} positions.")
        train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    missing = sorted(set(range(classes)) - set(y[train_idx].tolist()))
    if missing:
        raise PipelineError(f"classes {missing} have no training image after the validation split; "
                            "give every class more images.")

    identity = fingerprint(model, images, y, recipe, seed, classes)  # before any change
    if validation is not None:
        identity["validation"] = val_idx.tolist()
    if metadata is not None:
        metadata = np.asarray(metadata, np.float32)
        if metadata.ndim != 2 or len(metadata) != len(y) or len(model.inputs) != 2 \
                or model.inputs[1].shape[-1] != metadata.shape[1]:
            raise PipelineError(f"metadata must be an array of shape ({len(y)}, d) for a model "
                                "with a second input of width d (add_metadata_branch); got "
                                f"shape {metadata.shape} for a model with {len(model.inputs)} "
                                "input(s).")
        identity["metadata"] = hashlib.sha256(metadata.tobytes()).hexdigest()
    elif len(model.inputs) != 1:
        raise PipelineError("the model has a metadata input; pass metadata=... to train it.")
    strategy, original = None, model
    if recipe.jit_compile and devices == "all":
        raise PipelineError("train.devices = 'all' with train.jit_compile: the mirrored step is "
                            "not XLA-compiled; turn one off.")
    if devices == "all":
        from pipeline.training.mirrored import replicate, strategy_for_all_devices

        strategy = strategy_for_all_devices()
        model = replicate(model, strategy)
    # frozen BN: out of the trainable variables and in inference mode, for the whole run
    frozen = set_trainable(batchnorm_layers(model), False) if recipe.batchnorm == "frozen" else []
    learned = list(model.trainable_weights)  # not BN statistics, nor frozen BN's scale and offset
    start = [np.array(w) for w in learned]
    try:
        policies = _set_precision(model, recipe.mixed_precision, log)
    except BaseException:
        restore_trainable(frozen)
        raise
    if policies and strategy is not None:
        raise PipelineError("train.devices = 'all' with train.mixed_precision: turn one off.")
    try:
        optimizer, steps = compiled_steps(model, recipe, bool(policies), strategy, head)
        identity["precision"] = "mixed_float16" if policies else "float32"
        identity = json.loads(json.dumps(identity))  # tuples -> lists, as stored
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        state = load_checkpoint(workdir / CHECKPOINT, identity, model, optimizer)
        if state["epoch"]:
            (notify or log)(f"resuming from {workdir / CHECKPOINT} after epoch {state['epoch']} "
                            f"of {recipe.total_epochs}")
        try:
            _run_epochs(model, optimizer, steps, images, y, train_idx, val_idx, classes, recipe,
                        preprocess, seed, workdir, identity, state, progress, log, on_epoch_end,
                        metadata, head)
        except tf.errors.UnimplementedError as exc:
            if not recipe.jit_compile:
                raise
            raise PipelineError(
                "train.jit_compile = true: XLA cannot compile this network's training step with "
                f"deterministic ops ({str(exc).splitlines()[0]}); networks with max pooling "
                "(VGG-M, VGG-16, the standard CNN) hit this. Set train.jit_compile = false (or "
                "use a network without max pooling, e.g. efficientnet-lite0).") from None
        if state["best"] is not None:
            assign_all(model.weights, state["best"])
    finally:
        for layer, policy in policies:
            layer.dtype_policy = policy
        restore_trainable(frozen)
    if strategy is not None:
        original.set_weights(model.get_weights())
    history = state["history"]
    images_trained = state["epoch_size"] * len(history)
    seconds = sum(row["train_seconds"] for row in history)
    moved = sum(float(np.sum((np.asarray(w) - a) ** 2))
                for w, a in zip(learned, start))
    size = sum(float(np.sum(a.astype(np.float64) ** 2)) for a in start)
    return TrainResult(history=history, best_epoch=state["best_epoch"],
                       best_val_loss=state["best_val_loss"],
                       images_per_second=images_trained / seconds if seconds > 0 else 0.0,
                       resumed_from=state["resumed_from"],
                       steps=len(history) * math.ceil(state["epoch_size"] / recipe.batch_size),
                       val_majority=float(np.bincount(y[val_idx]).max() / len(val_idx)),
                       val_chance=1.0 / classes,
                       weight_change=math.sqrt(moved / size) if size > 0 else 0.0)


def _run_epochs(model, optimizer, steps, images, y, train_idx, val_idx, classes, recipe,
                preprocess, seed, workdir, identity, state, progress, log, on_epoch_end,
                metadata=None, head=()) -> None:
    """Train from ``state['epoch'] + 1`` to ``recipe.total_epochs``, checkpointing after each
    epoch: the ``recipe.head_epochs`` head epochs first, then the epochs of every layer."""
    random_states = [v for v in model.variables if "seed_generator_state" in v.path]
    train_step, val_step, head_step = steps
    rate = optimizer.learning_rate
    val_data = epoch_dataset(images, y, plain_plan(val_idx), classes=classes,
                             batch_size=recipe.batch_size, preprocess=preprocess, extra=metadata)
    # precise BN: the training images as they are (no augmentation), never the validation ones
    statistics_data = epoch_dataset(images, y, plain_plan(train_idx), classes=classes,
                                    batch_size=recipe.batch_size, preprocess=preprocess,
                                    extra=metadata) \
        if recipe.batchnorm == "precise" else None
    state["epoch_size"] = epoch_length(y[train_idx], recipe)
    per_epoch = math.ceil(state["epoch_size"] / recipe.batch_size)
    bar = tqdm(total=recipe.total_epochs, initial=state["epoch"], unit="epoch", desc="train",
               disable=not progress)
    try:
        for epoch in range(state["epoch"] + 1, recipe.total_epochs + 1):
            probing = epoch <= recipe.head_epochs
            if stops_early(state["epoch"], state["best_epoch"], recipe):
                log(f"early stopping after epoch {state['epoch']}: no lower validation loss "
                    f"since epoch {state['best_epoch']} (patience "
                    f"{recipe.early_stopping_patience})")
                break
            started = time.perf_counter()
            # Dropout's generators restart from (seed, epoch), so the epoch's masks do not depend on
            # how the model was built or on earlier epochs, and a resumed run draws the same masks.
            for number, variable in enumerate(random_states):
                draw = np.random.default_rng([seed, epoch, number]).integers(2**31 - 1)
                variable.assign(np.array([draw, 0], dtype=variable.dtype))
            plan = epoch_plan(y, train_idx, recipe=recipe, seed=seed, epoch=epoch,
                              image_size=images.shape[1:3])
            data = epoch_dataset(images, y, plan, classes=classes, batch_size=recipe.batch_size,
                                 preprocess=preprocess, extra=metadata)
            total = tf.constant(0.0)
            rates = epoch_rates(recipe, epoch, per_epoch)
            with probing_body(model, head, probing):
                for number, (x, target) in enumerate(data):
                    if rates is not None:
                        rate.assign(rates[number])
                    batch = (head_step if probing else train_step)(x, target)
                    total += batch * tf.cast(tf.shape(target)[0], tf.float32)
            loss = float(total) / len(plan.index)
            train_seconds = time.perf_counter() - started
            # the statistics of the weights just learned (a head epoch changes no BN input)
            if statistics_data is not None and not probing:
                recompute_statistics(model, statistics_data)
            val_loss, val_accuracy, val_balanced = _evaluate(val_step, val_data, y[val_idx],
                                                             classes)
            if not (math.isfinite(loss) and math.isfinite(val_loss)):
                raise PipelineError(f"training diverged in epoch {epoch} (loss {loss}, val_loss "
                                    f"{val_loss}); lower the recipe's learning_rate.")
            # state["best"] is None while the best weights are the model's current ones; they are
            # copied (from the previous epoch's snapshot) only once a later epoch is worse.
            if val_loss < state["best_val_loss"]:
                state.update(best_epoch=epoch, best_val_loss=val_loss, best=None)
            elif state["best"] is None:
                state["best"] = state["previous"]
            row = {"epoch": epoch, "loss": loss, "val_loss": val_loss, "val_accuracy": val_accuracy,
                   "val_balanced_accuracy": val_balanced,
                   "seconds": time.perf_counter() - started, "train_seconds": train_seconds}
            if recipe.head_epochs:
                row["phase"] = "head" if probing else "all"
            if rates is not None:  # the body's rate at the epoch's last step
                row["learning_rate"] = float(rates[-1])
            if recipe.lr_decay_factor < 1:  # the rate this epoch used; decayed for the next
                row["learning_rate"] = float(rate.numpy())
                row["lr_decayed"] = decays(state["history"], epoch, state["best_epoch"], recipe)
                if row["lr_decayed"]:
                    rate.assign(rate * recipe.lr_decay_factor)
            state["history"].append(row)
            state["epoch"] = epoch
            current = [v.numpy() for v in model.weights]
            state["previous"] = current
            save_checkpoint(workdir / CHECKPOINT, identity, model, optimizer, state, current)
            log(f"epoch {epoch}/{recipe.total_epochs}{' (head only)' if probing else ''}: loss {loss:.4f}, val_loss {val_loss:.4f}, "
                f"val_accuracy {val_accuracy:.3f}, best epoch {state['best_epoch']}, "
                f"{row['seconds']:.1f} s, {len(plan.index) / train_seconds:.1f} images/s")
            bar.set_postfix(loss=f"{loss:.4f}", val_loss=f"{val_loss:.4f}",
                            val_acc=f"{val_accuracy:.3f}", best=state["best_epoch"])
            bar.update(1)
            if on_epoch_end is not None:
                on_epoch_end(dict(row))
    finally:
        bar.close()


def stops_early(epoch: int, best_epoch: int, recipe: TrainRecipe) -> bool:
    """Whether training stops after ``epoch`` (completed) when ``best_epoch`` had the lowest
    validation loss: ``early_stopping_patience`` epochs without improvement (0: never). A function
    of the checkpoint's state, so a resumed run stops where an uninterrupted one would."""
    patience = recipe.early_stopping_patience
    return bool(patience) and epoch > 0 and epoch - best_epoch >= patience


def decays(history: list[dict], epoch: int, best_epoch: int, recipe: TrainRecipe) -> bool:
    """Whether the learning rate decays after ``epoch``: ``lr_decay_patience`` epochs without a
    lower validation loss since the best epoch or the last decay, whichever is later (Keras's
    ``ReduceLROnPlateau`` counts the same way). ``history`` holds the earlier epochs' rows."""
    if recipe.lr_decay_factor >= 1:
        return False
    last = max([row["epoch"] for row in history if row.get("lr_decayed")], default=0)
    return epoch - max(best_epoch, last) >= recipe.lr_decay_patience


_SEEDED: list[int] = []  # the seed of the last ``keras.utils.set_random_seed`` of this process


def _seed_everything(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` and op determinism, once per seed and process.

    Setting TensorFlow's global seed clears its kernel cache, so the next call of every compiled
    function is re-optimised (~3 s for an EfficientNet step); runs of one seed in a row (every
    fine-tuning run of an experiment) skip that. Nothing in a run draws from the global
    generators beyond what the seed set here gives: dropout's generators are reset from
    (seed, epoch) every epoch, augmentation and the validation split use seeded NumPy generators.
    """
    if _SEEDED != [seed]:
        keras.utils.set_random_seed(seed)
        _SEEDED[:] = [seed]
    tf.config.experimental.enable_op_determinism()


def _evaluate(val_step, data, y_val: np.ndarray, classes: int) -> tuple[float, float, float]:
    """Mean cross-entropy, accuracy and balanced accuracy (mean recall over the classes present)
    over the validation set (no augmentation, no dropout)."""
    loss, hits = tf.constant(0.0), tf.zeros(classes)
    for x, target in data:
        batch_loss, batch_hits = val_step(x, target)
        loss, hits = loss + batch_loss, hits + batch_hits
    hits, counts = hits.numpy().astype(np.float64), np.bincount(y_val, minlength=classes)
    present = counts > 0
    return (float(loss) / len(y_val), float(hits.sum()) / len(y_val),
            float(np.mean(hits[present] / counts[present])))


def _set_precision(model, wanted: bool, log) -> list:
    """Switch every layer but the output to mixed_float16 when asked and a GPU is present.

    Returns:
        ``(layer, previous policy)`` pairs to restore; empty when nothing changed.
    """
    if not wanted:
        return []
    if not tf.config.list_physical_devices("GPU"):
        log("recipe.mixed_precision is ignored: no GPU, training in float32 on the CPU")
        return []
    output = model.layers[-1]
    changed = []
    for layer in walk_layers(model):
        if layer is output or isinstance(layer, keras.layers.InputLayer):
            continue
        changed.append((layer, layer.dtype_policy))
        layer.dtype_policy = "mixed_float16"
    log("mixed_float16 on the GPU; the output softmax stays float32")
    return changed

