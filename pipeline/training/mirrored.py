"""Data-parallel training of one network on every device of a machine
(``tf.distribute.MirroredStrategy``, ``train.devices = "all"``).

The rule: ``recipe.batch_size`` stays the *global* batch, the images of one SGD step, so each of
the ``n`` replicas gets ``batch_size / n`` of them (the first ``batch_size % n`` replicas one more),
and the learning rate is the recipe's, unchanged. Each replica's loss is its cross-entropy summed
and divided by the global batch's size (plus ``1/n`` of the L2 term); the optimizer sums the
replicas' gradients, so a step is the single-device step on the same batch up to float rounding
of the sums. What differs: BatchNormalization normalises each replica's share of the batch (not
synchronised), and dropout draws its masks per replica, so a network with either trains
equivalently but not to the same numbers. Use batch sizes that are a multiple of the replicas.

The replicas are the GPUs TensorFlow sees, else every logical CPU device (the test makes two with
``tf.config.set_logical_device_configuration``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

DEVICES = ("one", "all")


def strategy_for_all_devices() -> tf.distribute.MirroredStrategy:
    """A ``MirroredStrategy`` over every GPU, or over every logical CPU device without one."""
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def replicate(model: keras.Model, strategy) -> keras.Model:
    """A copy of ``model`` with its variables mirrored on every replica (same weights)."""
    with strategy.scope():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    return copy


def mirrored_training(strategy, model: keras.Model, recipe, make_optimizer):
    """``(optimizer, train_step)``: the recipe's optimizer (``make_optimizer(recipe)``, SGD or
    Adam: ``pipeline.training.optimizer.make_optimizer``) with its variables mirrored, and the
    step that splits each global batch over the replicas (``mirrored_train_step``)."""
    with strategy.scope():
        optimizer = make_optimizer(recipe)
        optimizer.build(model.trainable_variables)
    kernels = [v for v in model.trainable_variables if v.name.endswith("kernel")]
    return optimizer, mirrored_train_step(strategy, model, optimizer, kernels, recipe.l2)


def _share(x, replica, replicas):
    size = tf.shape(x)[0]
    per, extra = size // replicas, size % replicas
    start = replica * per + tf.minimum(replica, extra)
    return x[start:start + per + tf.cast(replica < extra, tf.int32)]


def mirrored_train_step(strategy, model, optimizer, kernels, l2: float):
    """The training step of ``pipeline.training.train`` split over the replicas: takes a global
    batch ``(x, target)``, returns the batch's mean objective (as the single-device step does).
    ``x`` may be a tuple ``(images, metadata)`` (a model with a metadata branch): each part is
    split the same way."""
    replicas = strategy.num_replicas_in_sync

    def replica_step(x, target):
        # Every replica sees the global batch and trains on its own share of it.
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        global_size = tf.shape(target)[0]
        x = tf.nest.map_structure(lambda part: _share(part, replica, replicas), x)
        target = _share(target, replica, replicas)
        with tf.GradientTape() as tape:
            probabilities = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_sum(keras.losses.categorical_crossentropy(target, probabilities))
            loss = loss / tf.cast(global_size, tf.float32)
            if kernels and l2:
                loss += (l2 / replicas) * tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, tf.float32)))
                                                    for w in kernels])
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    @tf.function(reduce_retracing=True)
    def step(x, target):
        losses = strategy.run(replica_step, args=(x, target))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return step
