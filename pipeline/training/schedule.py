"""The fine-tuning recipes' per-step rules, used by ``pipeline.training.train``: the cosine
learning-rate schedule's rate at each step (``epoch_rates``) and the head epochs' body in inference
mode (``probing_body``: BatchNormalization layers not trainable, Dropout outside the head off)."""

from __future__ import annotations

import keras
import numpy as np

from pipeline.models.initializers import walk_layers
from pipeline.training.batchnorm import batchnorm_layers, restore_trainable, set_trainable
from pipeline.training.recipe import TrainRecipe


def epoch_rates(recipe: TrainRecipe, epoch: int, per_epoch: int) -> np.ndarray | None:
    """The body's learning rate at each of the ``per_epoch`` steps of ``epoch`` (1-based, head
    epochs counted), or ``None`` where it stays the optimizer's own (a constant schedule, a head
    epoch): ``lr_schedule = "cosine"``, a linear warm-up from 0 over ``warmup_epochs``, then a
    half cosine to 0 over the rest of the ``epochs``. A function of the step's position only,
    so a resumed run sets the rates an uninterrupted one does."""
    if recipe.lr_schedule == "constant" or epoch <= recipe.head_epochs:
        return None
    first = (epoch - recipe.head_epochs - 1) * per_epoch
    step = np.arange(first, first + per_epoch, dtype=np.float64)
    warm, total = recipe.warmup_epochs * per_epoch, recipe.epochs * per_epoch
    decay = 0.5 * (1.0 + np.cos(np.pi * np.clip(step - warm, 0, None) / max(total - warm, 1)))
    ramp = np.minimum((step + 1) / warm, 1.0) if warm else 1.0
    return recipe.learning_rate * np.where(step < warm, ramp, decay)


class probing_body:
    """While ``on``: the head epochs' body in inference mode: every BatchNormalization layer not
    trainable (inference statistics), every Dropout layer outside ``head`` at rate 0 (Keras reads
    the rate when the step is traced, and the head step is traced only in here)."""

    def __init__(self, model, head, on: bool):
        self.model, self.head, self.on = model, set(head), on
        self.changed, self.rates = [], []

    def __enter__(self):
        if self.on:
            self.changed = set_trainable(batchnorm_layers(self.model), False)
            head_layers = [l for l in self.model.layers if l.name in self.head]
            inside = {id(l) for layer in head_layers for l in walk_layers(layer)}
            self.rates = [(l, l.rate) for l in walk_layers(self.model)
                          if isinstance(l, keras.layers.Dropout) and id(l) not in inside]
            for layer, _ in self.rates:
                layer.rate = 0.0
        return self

    def __exit__(self, *exc):
        for layer, rate in self.rates:
            layer.rate = rate
        restore_trainable(self.changed)
        return False
