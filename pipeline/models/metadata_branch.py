"""Kim & Rocheteau's (2020) fusion: patient metadata through its own small branch, concatenated to
the network's pooled features before the output layer.

``add_metadata_branch`` takes a network (from ``build_network`` or ``replace_head``) and returns a
two-input model, ``[images, metadata]``: the layer ``spec.head_input`` (the pooled features the
head reads) and a ReLU ``Dense`` over the encoded metadata (``pipeline.classifiers.metadata``)
are concatenated and feed a new ``classes``-way softmax. The backbone's layers and weights are
shared with the given model. ``pipeline.training.train.train_classifier(metadata=...)`` trains it;
the finetune stage builds it for ``classifier.kind = "network"`` with ``classifier.metadata``, and
``pipeline.training.netstore.load`` rebuilds it from the encoder state an entry records.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import PipelineError
from pipeline.models.registry import NetworkSpec

METADATA_INPUT, METADATA_DENSE, FUSED_OUTPUT = "metadata", "metadata_dense", "fused_predictions"
# the layers with weights the branch adds: with the backbone's own head, what a recipe's
# head_epochs and head_learning_rate treat as the new head
HEAD_LAYERS = (METADATA_DENSE, FUSED_OUTPUT)


def add_metadata_branch(model: Any, spec: NetworkSpec, n_features: int, classes: int, *,
                        units: int = 16, seed: int = 0) -> Any:
    """The network with a metadata branch fused before a new softmax output.

    Args:
        model: a Keras model of ``spec`` (its layer ``spec.head_input`` is kept with its weights).
        spec: the network's registry entry.
        n_features: width of the encoded metadata (``len(MetadataEncoder.feature_names_)``).
        classes: outputs of the new softmax.
        units: width of the metadata branch's hidden layer.
        seed: seed of the new layers' Glorot-uniform initialisation.

    Returns:
        A ``keras.Model`` with inputs ``[images, metadata of shape (n_features,)]`` and a softmax
        output of ``classes`` units (layer ``fused_predictions``).
    """
    import keras

    if int(n_features) < 1 or int(classes) < 2:
        raise PipelineError(f"a metadata branch needs n_features >= 1 and classes >= 2; got "
                            f"{n_features} and {classes}.")
    pooled = keras.layers.Flatten(name="pooled_flat")(model.get_layer(spec.head_input).output)
    meta = keras.Input((int(n_features),), name=METADATA_INPUT)
    branch = keras.layers.Dense(units, activation="relu", name=METADATA_DENSE,
                                kernel_initializer=keras.initializers.GlorotUniform(seed))(meta)
    fused = keras.layers.Concatenate(name="fused")([pooled, branch])
    output = keras.layers.Dense(int(classes), activation="softmax", name=FUSED_OUTPUT,
                                dtype="float32",
                                kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(fused)
    return keras.Model([model.input, meta], output, name=f"{model.name}_metadata")
