"""The optimizer of a training run and its compiled training and validation steps.

``make_optimizer`` builds the recipe's optimizer: SGD with Nesterov momentum (Menegola et al. 2017,
the default) or Adam with Keras's defaults besides the learning rate (Kim & Rocheteau 2020).
``compiled_steps`` traces the steps once per model and optimizer settings (``pipeline.training.train``
reuses them across the runs of one architecture). The learning rate is an optimizer variable, so a
decayed learning rate is saved and restored with the checkpoint.
"""

from __future__ import annotations

import weakref

import keras
import tensorflow as tf

from pipeline.errors import PipelineError
from pipeline.training.recipe import OPTIMIZERS, TrainRecipe


def make_optimizer(recipe: TrainRecipe) -> keras.optimizers.Optimizer:
    """The recipe's optimizer, unbuilt: ``sgd`` (momentum, Nesterov) or ``adam``.

    Raises:
        PipelineError: an unknown ``recipe.optimizer``.
    """
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(recipe.learning_rate, momentum=recipe.momentum,
                                    nesterov=recipe.nesterov)
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(recipe.learning_rate)
    raise PipelineError(f"recipe.optimizer must be one of {', '.join(OPTIMIZERS)}; got "
                        f"{recipe.optimizer!r}.")


# model -> (optimizer settings, optimizer, (train_step, val_step), the optimizer's initial values):
# a model trained again (the
# finetune stage reuses one per architecture, with new weights each run) keeps its compiled steps,
# which saves tracing them (~20 s for an EfficientNet on the CPU) on every run.
_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compiled_steps(model, recipe: TrainRecipe, mixed: bool, strategy=None):
    """A fresh optimizer state and the compiled steps of ``model`` under ``recipe``.

    A model seen before with the same optimizer settings gets its optimizer back with every
    variable at its initial value (iterations and momenta 0, the learning rate, what a new SGD
    starts from) and its traced steps, so the run computes exactly what it would with new objects.
    With a ``tf.distribute`` ``strategy`` (``train.devices = "all"``), ``model`` is the replicated
    copy made for the run (nothing to reuse): the optimizer's variables are mirrored and the
    training step splits each global batch over the replicas (``pipeline.training.mirrored``).
    """
    if strategy is not None:
        from pipeline.training.mirrored import mirrored_training

        optimizer, train_step = mirrored_training(strategy, model, recipe, make_optimizer)
        return optimizer, (train_step, _steps(model, optimizer, [], 0.0)[1])
    settings = (recipe.optimizer, recipe.learning_rate, recipe.momentum, recipe.nesterov, recipe.l2,
                recipe.jit_compile)
    cached = None if mixed else _COMPILED.get(model)
    if cached is not None and cached[0] == settings:
        _, optimizer, steps, initial = cached
        for variable, value in zip(optimizer.variables, initial, strict=True):
            variable.assign(value)  # iterations and momenta 0, the learning rate as it was
        return optimizer, steps
    optimizer = make_optimizer(recipe)
    if mixed:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    kernels = [v for v in model.trainable_variables if v.name.endswith("kernel")]
    steps = _steps(model, optimizer, kernels, recipe.l2, recipe.jit_compile)
    if not mixed:
        _COMPILED[model] = (settings, optimizer, steps, [v.numpy() for v in optimizer.variables])
    return optimizer, steps


def _steps(model, optimizer, kernels, l2: float, jit_compile: bool = False):
    """The compiled training step (returns the batch's objective) and validation step; with
    ``jit_compile`` both are XLA-compiled (else ``jit_compile`` is left unset: TensorFlow's own
    default, as before the option existed)."""
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    jit = True if jit_compile else None

    @tf.function(reduce_retracing=True, jit_compile=jit)
    def train_step(x, target):
        with tf.GradientTape() as tape:
            probabilities = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(target, probabilities))
            if kernels and l2:
                # Lasagne's regularize_network_params(net, l2) * 5e-3 is 5e-3 * sum(W**2) over the
                # kernels (no 1/2), the same as keras.regularizers.L2(5e-3) on every kernel and as
                # an SGD weight decay of 2 * l2 * learning_rate per step.
                loss += l2 * tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32)))
                                       for w in kernels])
            objective = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(objective, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    @tf.function(reduce_retracing=True, jit_compile=jit)
    def val_step(x, target):
        probabilities = tf.cast(model(x, training=False), tf.float32)
        losses = keras.losses.categorical_crossentropy(target, probabilities)
        hits = tf.cast(tf.equal(tf.argmax(probabilities, -1), tf.argmax(target, -1)), tf.float32)
        return tf.reduce_sum(losses), tf.reduce_sum(target * hits[:, None], axis=0)  # per class

    return train_step, val_step
