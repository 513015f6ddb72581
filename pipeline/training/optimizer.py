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


def head_variables(model, head) -> list:
    """The trainable variables of the layers named in ``head`` (the new head), in layer order."""
    names = set(head)
    return [v for layer in model.layers if layer.name in names for v in layer.trainable_variables]


def compiled_steps(model, recipe: TrainRecipe, mixed: bool, strategy=None, head=()):
    """A fresh optimizer state and the compiled steps of ``model`` under ``recipe``.

    Returns ``(optimizer, (train_step, val_step, head_step))``: ``train_step`` updates every
    trainable variable, the head's (the layers named in ``head``) with its gradients scaled by
    ``head_learning_rate / learning_rate``; ``head_step`` (``None`` unless
    ``recipe.head_epochs``) updates only the head's, for the linear-probing epochs (the caller
    puts the body in inference mode meanwhile).

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
        return optimizer, (train_step, _steps(model, optimizer, [], 0.0)[1], None)
    head_vars = head_variables(model, head)
    ratio = recipe.head_rate / recipe.learning_rate
    settings = (recipe.optimizer, recipe.learning_rate, recipe.momentum, recipe.nesterov, recipe.l2,
                recipe.jit_compile, tuple(head), ratio, recipe.head_epochs > 0,
                tuple(id(v) for v in model.trainable_variables))  # frozen BN: fewer variables
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
    steps = _steps(model, optimizer, kernels, recipe.l2, recipe.jit_compile, head_vars, ratio,
                   recipe.head_epochs > 0)
    if not mixed:
        _COMPILED[model] = (settings, optimizer, steps, [v.numpy() for v in optimizer.variables])
    return optimizer, steps


def _steps(model, optimizer, kernels, l2: float, jit_compile: bool = False, head_vars=(),
           ratio: float = 1.0, head_phase: bool = False):
    """The compiled training step (returns the batch's objective), validation step and head-only
    step (``None`` without ``head_phase``); with ``jit_compile`` they are XLA-compiled (else
    ``jit_compile`` is left unset: TensorFlow's own default, as before the option existed)."""
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    jit = True if jit_compile else None
    every = list(model.trainable_variables)
    head_ids = {id(v) for v in head_vars}
    scales = [ratio if id(v) in head_ids else 1.0 for v in every]
    head_only = [v for v in every if id(v) in head_ids]

    def step(x, target, variables, weights, factors):
        with tf.GradientTape() as tape:
            probabilities = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(target, probabilities))
            if weights and l2:
                # Lasagne's regularize_network_params(net, l2) * 5e-3 is 5e-3 * sum(W**2) over the
                # kernels (no 1/2), the same as keras.regularizers.L2(5e-3) on every kernel and as
                # an SGD weight decay of 2 * l2 * learning_rate per step.
                loss += l2 * tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32)))
                                       for w in weights])
            objective = optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(objective, variables)
        # SGD with momentum is linear in the gradients: scaling a variable's gradients by r is
        # exactly a learning rate r times the optimizer's for it (head_learning_rate)
        gradients = [g if f == 1.0 else g * f for g, f in zip(gradients, factors)]
        optimizer.apply(gradients, variables)
        return loss

    @tf.function(reduce_retracing=True, jit_compile=jit)
    def train_step(x, target):
        return step(x, target, every, kernels, scales)

    head_step = None
    if head_phase:
        @tf.function(reduce_retracing=True, jit_compile=jit)
        def head_step(x, target):
            # the objective as in train_step (every kernel's L2), its gradients for the head only
            return step(x, target, head_only, kernels, [ratio] * len(head_only))

    @tf.function(reduce_retracing=True, jit_compile=jit)
    def val_step(x, target):
        probabilities = tf.cast(model(x, training=False), tf.float32)
        losses = keras.losses.categorical_crossentropy(target, probabilities)
        hits = tf.cast(tf.equal(tf.argmax(probabilities, -1), tf.argmax(target, -1)), tf.float32)
        return tf.reduce_sum(losses), tf.reduce_sum(target * hits[:, None], axis=0)  # per class

    return train_step, val_step, head_step
