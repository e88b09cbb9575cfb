"""Model builders: MobileNet, MobileNetV2, DenseNet121 and EfficientNetB0 transfer models, a
custom CNN, and a flat ensemble of trained transfer models (`build_ensemble`).

Every model
* takes raw RGB in 0–255 at its input size (rescaling happens inside the model);
* is one flat functional graph — the backbone's layers sit directly in it, not in a
  nested sub-model — so Grad-CAM can reach any convolutional layer by name;
* ends in a linear layer named `logit` followed by a sigmoid named `probability`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from keras import layers

from medal_core.modeling.colour import COLOUR_CONSTANCY_LAYER, ShadesOfGrey

LOGIT_LAYER = "logit"
PROBABILITY_LAYER = "probability"
FEATURE_LAYER = "avg_pool"  # pooled features (the activation maps and tests read them)
COLOUR_CONSTANT_UNIT_RANGE = "colour_constant_to_unit_range"  # an ensemble member's scaling


@dataclass(frozen=True)
class ArchitectureSpec:
    """What a bundle needs to know about an architecture."""

    build: Callable[..., keras.Model]
    default_input_size: int
    gradcam_layer: str  # last convolutional activation, where Grad-CAM looks
    is_transfer: bool  # has a pretrained backbone to freeze, then fine-tune


def _classifier_head(features, dropout: float) -> keras.KerasTensor:
    x = layers.GlobalAveragePooling2D(name=FEATURE_LAYER)(features)
    if dropout > 0:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    logit = layers.Dense(1, name=LOGIT_LAYER)(x)
    return layers.Activation("sigmoid", name=PROBABILITY_LAYER, dtype="float32")(logit)


def _weights_argument(weights: str | None) -> str | None:
    """`None`/"none" → random init; "imagenet" → Keras download; else a file path."""
    if weights is None or str(weights).lower() == "none":
        return None
    return str(weights)


def _unit_range(inputs) -> keras.KerasTensor:
    """Raw RGB 0–255 → [-1, 1], as the MobileNets were trained on ImageNet."""
    return layers.Rescaling(1 / 127.5, offset=-1, name="to_unit_range")(inputs)


def _image_in_unit_range(input_size: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model input (raw RGB 0–255) and the same scaled to [-1, 1]."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    return inputs, _unit_range(inputs)


def _mobilenet_backbone(scaled, weights: str | None = None, alpha: float = 0.75) -> keras.Model:
    """MobileNet v1 up to its last activation maps (conv_pw_13_relu, the `.output`), its
    layers added to the graph of `scaled` (flat: no nested sub-model)."""
    return keras.applications.MobileNet(
        input_tensor=scaled, alpha=alpha, include_top=False, weights=_weights_argument(weights)
    )


def _mobilenetv2_backbone(scaled, weights: str | None = None, alpha: float = 1.0) -> keras.Model:
    """MobileNetV2 up to its last activation maps (out_relu), its layers added to the
    graph of `scaled`."""
    return keras.applications.MobileNetV2(
        input_tensor=scaled, alpha=alpha, include_top=False, weights=_weights_argument(weights)
    )


def build_mobilenet(input_size: int = 256, weights: str | None = None, alpha: float = 0.75) -> keras.Model:
    """MobileNet v1 (alpha 0.75, the ImageNet weights available offline in
    `../shared/weights`), global average pooling, dropout 0.3, one sigmoid unit."""
    inputs, scaled = _image_in_unit_range(input_size)
    maps = _mobilenet_backbone(scaled, weights, alpha).output
    return keras.Model(inputs, _classifier_head(maps, 0.3), name="mobilenet")


def build_mobilenetv2(input_size: int = 224, weights: str | None = None, alpha: float = 1.0) -> keras.Model:
    """MobileNetV2 (alpha 1.0: about the compute of MobileNet 0.75, with inverted residual
    blocks), global average pooling, dropout 0.3, one sigmoid unit."""
    inputs, scaled = _image_in_unit_range(input_size)
    maps = _mobilenetv2_backbone(scaled, weights, alpha).output
    return keras.Model(inputs, _classifier_head(maps, 0.3), name="mobilenetv2")


def _colour_constant_unit_range(inputs) -> keras.KerasTensor:
    """Raw RGB 0–255 → its illuminant made grey (`ShadesOfGrey`) → [-1, 1]."""
    return _unit_range(ShadesOfGrey(name=COLOUR_CONSTANCY_LAYER)(inputs))


def build_mobilenetv2_cc(
    input_size: int = 224, weights: str | None = None, alpha: float = 1.0
) -> keras.Model:
    """`build_mobilenetv2` with shades-of-grey colour constancy first ("cc"): each image's
    illuminant is made grey inside the model (`medal_core.modeling.colour`), so images
    from differently lit dermatoscopes look alike to the backbone."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    maps = _mobilenetv2_backbone(_colour_constant_unit_range(inputs), weights, alpha).output
    return keras.Model(inputs, _classifier_head(maps, 0.3), name="mobilenetv2_cc")


# DenseNet121 was trained on ImageNet with "torch" preprocessing: RGB scaled to [0, 1], then
# standardised per channel with ImageNet's mean and standard deviation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _imagenet_standardised(inputs) -> keras.KerasTensor:
    """Raw RGB 0–255 → "torch" preprocessing, as DenseNet121's ImageNet weights expect:
    scaled to [0, 1], then standardised per channel (`IMAGENET_MEAN`, `IMAGENET_STD`)."""
    x = layers.Rescaling(1 / 255.0, name="to_unit_interval")(inputs)
    return layers.Normalization(
        mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_standardise"
    )(x)


def _densenet121_backbone(standardised, weights: str | None = None) -> keras.Model:
    """DenseNet121 up to its last activation maps (relu), its layers added to the graph of
    `standardised` (the output of `_imagenet_standardised`)."""
    return keras.applications.DenseNet121(
        input_tensor=standardised, include_top=False, weights=_weights_argument(weights)
    )


def build_densenet121(input_size: int = 224, weights: str | None = None) -> keras.Model:
    """DenseNet121 (about 10x MobileNetV2's multiply-adds), global average pooling,
    dropout 0.3, one sigmoid unit. Inputs are standardised inside the model as its
    ImageNet weights expect."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    maps = _densenet121_backbone(_imagenet_standardised(inputs), weights).output
    return keras.Model(inputs, _classifier_head(maps, 0.3), name="densenet121")


def build_efficientnetb0(input_size: int = 224, weights: str | None = None) -> keras.Model:
    """EfficientNetB0, the original MedAL backbone: global average pooling, dropout 0.3,
    one sigmoid unit. Keras' EfficientNet rescales 0–255 inputs itself."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    backbone = keras.applications.EfficientNetB0(
        input_tensor=inputs, include_top=False, weights=_weights_argument(weights)
    )
    return keras.Model(inputs, _classifier_head(backbone.output, 0.3), name="efficientnetb0")


def build_custom_cnn(
    input_size: int = 192, weights: str | None = None, filters: tuple[int, ...] = (32, 64, 128, 256, 256)
) -> keras.Model:
    """A small CNN trained from scratch: blocks of a 3×3 Conv2D (batch-normalised, GELU)
    and a 2×2 MaxPooling, then global average pooling, dropout 0.5, one sigmoid unit."""
    if weights is not None and str(weights).lower() != "none":
        raise ValueError("custom_cnn is trained from scratch and takes no pretrained weights")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 255.0, name="to_unit_interval")(inputs)
    for block, width in enumerate(filters, start=1):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = layers.Activation("gelu", name=f"block{block}_gelu")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, _classifier_head(x, 0.5), name="custom_cnn")


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "mobilenet": ArchitectureSpec(build_mobilenet, 256, "conv_pw_13_relu", True),
    "mobilenetv2": ArchitectureSpec(build_mobilenetv2, 224, "out_relu", True),
    "mobilenetv2_cc": ArchitectureSpec(build_mobilenetv2_cc, 224, "out_relu", True),
    "densenet121": ArchitectureSpec(build_densenet121, 224, "relu", True),
    "efficientnetb0": ArchitectureSpec(build_efficientnetb0, 224, "top_activation", True),
    "custom_cnn": ArchitectureSpec(build_custom_cnn, 192, "block5_gelu", False),
}


# ------------------------------------------------------------------ ensembles


@dataclass(frozen=True)
class EnsembleMember:
    """How an architecture's backbone joins an ensemble: the input preprocessing it needs
    (its name, and raw RGB 0–255 → tensor) and its backbone, up to its last maps (the
    backbone's `.output`), built on that tensor."""

    preprocessing: str
    preprocess: Callable[[keras.KerasTensor], keras.KerasTensor]
    backbone: Callable[[keras.KerasTensor], keras.Model]


def _colour_constant_member_input(inputs) -> keras.KerasTensor:
    """`_colour_constant_unit_range` for an ensemble member: its scaling has a name of its
    own, beside the plain members' `to_unit_range`."""
    grey_lit = ShadesOfGrey(name=COLOUR_CONSTANCY_LAYER)(inputs)
    return layers.Rescaling(1 / 127.5, offset=-1, name=COLOUR_CONSTANT_UNIT_RANGE)(grey_lit)


# Architectures an ensemble can hold. Members of one preprocessing share its layer (one
# `to_unit_range` for both MobileNets). Backbones of different architectures keep their
# Keras layer names (MobileNet's `conv1` vs MobileNetV2's `Conv1`), so they sit side by
# side in one flat graph; a second member of one architecture gets its layers prefixed
# (`member_prefixes`).
ENSEMBLE_MEMBERS: dict[str, EnsembleMember] = {
    "mobilenet": EnsembleMember("unit_range", _unit_range, _mobilenet_backbone),
    "mobilenetv2": EnsembleMember("unit_range", _unit_range, _mobilenetv2_backbone),
    "mobilenetv2_cc": EnsembleMember(
        "colour_constant_unit_range", _colour_constant_member_input, _mobilenetv2_backbone
    ),
    "densenet121": EnsembleMember("imagenet_standardised", _imagenet_standardised, _densenet121_backbone),
}
# Pairs whose backbones share layer names (both have `conv1_bn` and `conv1_relu`), so they
# cannot sit in one graph.
ENSEMBLE_CLASHES = (frozenset({"mobilenet", "densenet121"}),)
ENSEMBLE_MAPS = "ensemble_maps"  # both members' last maps side by side: its Grad-CAM layer
ENSEMBLE = "ensemble"


def member_keys(archs: list[str]) -> list[str]:
    """A name for each member, unique within the ensemble: its architecture, with `_{n}`
    for the n-th member of that architecture (e.g. mobilenetv2, mobilenetv2_2)."""
    seen: dict[str, int] = {}
    keys = []
    for arch in archs:
        seen[arch] = seen.get(arch, 0) + 1
        keys.append(arch if seen[arch] == 1 else f"{arch}_{seen[arch]}")
    return keys


def member_prefixes(archs: list[str]) -> list[str]:
    """The prefix of each member's backbone layer names in an ensemble graph, in member
    order: none for the first member of a backbone (its layers keep their Keras names,
    as in the member's own model) and its key and `_` for a later one (`mobilenetv2_2_`,
    `mobilenetv2_cc_`), since two backbones of one kind would share every layer name.
    `mobilenetv2` and `mobilenetv2_cc` share one backbone."""
    seen: set = set()
    prefixes = []
    for arch, key in zip(archs, member_keys(archs)):
        backbone = ENSEMBLE_MEMBERS[arch].backbone
        prefixes.append(key + "_" if backbone in seen else "")
        seen.add(backbone)
    return prefixes


def build_ensemble(member_archs: tuple[str, ...] | list[str], input_size: int = 224) -> keras.Model:
    """One flat graph holding several transfer backbones (keys of `ENSEMBLE_MEMBERS`; an
    architecture may come more than once, its later backbones' layers prefixed as
    `member_prefixes` says), untrained: image → each backbone's last maps → their
    concatenation `ensemble_maps` (h, w, Σc) → `avg_pool` → `logit` → `probability`.

    Pooling is per channel, so the pooled concatenation is the members' pooled features
    side by side, and a `logit` whose kernel is each member's kernel divided by the
    number of members (bias: their mean) computes the mean of the members' logits exactly
    (`medal_core.modeling.ensembling.merge_members`). Grad-CAM on `ensemble_maps` then
    explains that mean: before its ReLU and scaling, the map is the mean of the members'
    own maps.
    """
    archs = list(member_archs)
    problem = ensemble_problem(archs)
    if problem:
        raise ValueError(problem)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    preprocessed: dict[str, keras.KerasTensor] = {}  # one layer per preprocessing
    maps = []
    for arch, prefix in zip(archs, member_prefixes(archs)):
        member = ENSEMBLE_MEMBERS[arch]
        if member.preprocessing not in preprocessed:
            preprocessed[member.preprocessing] = member.preprocess(inputs)
        backbone = member.backbone(preprocessed[member.preprocessing])
        if prefix:  # renamed before the ensemble's graph is made, which reads the names
            for layer in backbone.layers:
                if is_backbone_layer(layer):
                    layer.name = prefix + layer.name
        maps.append(backbone.output)
    if len({tuple(m.shape[1:3]) for m in maps}) != 1:
        shapes = [tuple(m.shape) for m in maps]
        raise ValueError(f"the members' last maps differ in size at {input_size} px: {shapes}")
    joined = layers.Concatenate(name=ENSEMBLE_MAPS)(maps)
    return keras.Model(inputs, _classifier_head(joined, 0.0), name=ENSEMBLE)


def ensemble_problem(archs: list[str]) -> str | None:
    """Why the architectures `archs` cannot form one ensemble, or None if they can."""
    unknown = sorted(set(archs) - set(ENSEMBLE_MEMBERS))
    if unknown or len(archs) < 2:
        return (
            f"an ensemble holds two or more members of the architectures {sorted(ENSEMBLE_MEMBERS)}; "
            f"got {archs}"
        )
    for clash in ENSEMBLE_CLASHES:
        if clash <= set(archs):
            return f"{' and '.join(sorted(clash))} share layer names and cannot sit in one graph"
    return None


# The screening features: global-average-pooled activations of a frozen ImageNet MobileNet
# at three depths. The shallow ones see texture and colour (what tells a dermoscope's
# magnified, evenly lit skin from a phone photo), the deepest one sees objects (what tells
# a lesion from a cat or a screenshot). No melanoma training touches them, so every bundle
# gets the same "is this an image we validated?" answer (`medal_core.screening.screen`).
SCREENING_BLOCKS = ("conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu")
SCREENING_FEATURES = "screening_features"


def build_screening_features(input_size: int = 224, weights: str | None = None) -> keras.Model:
    """Raw RGB 0–255 (n, s, s, 3) → (n, 1536) pooled ImageNet features (MobileNet 0.75 at
    the depths of `SCREENING_BLOCKS`: 256 + 512 + 768 channels), frozen."""
    inputs, scaled = _image_in_unit_range(input_size)
    backbone = keras.applications.MobileNet(
        input_tensor=scaled, alpha=0.75, include_top=False, weights=_weights_argument(weights)
    )
    pooled = [
        layers.GlobalAveragePooling2D(name=f"{block}_pool")(backbone.get_layer(block).output)
        for block in SCREENING_BLOCKS
    ]
    features = layers.Concatenate(name=SCREENING_FEATURES)(pooled)
    model = keras.Model(inputs, features, name="screening_features")
    model.trainable = False
    return model


def build_model(arch: str, input_size: int | None = None, weights: str | None = None) -> keras.Model:
    """Build architecture `arch` (a key of `ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{arch}'; choose one of {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    return spec.build(input_size=input_size or spec.default_input_size, weights=weights)


def logit_model(model: keras.Model) -> keras.Model:
    """The same graph, ending at the `logit` layer instead of the sigmoid."""
    return keras.Model(model.inputs, model.get_layer(LOGIT_LAYER).output)


def is_backbone_layer(layer: keras.layers.Layer) -> bool:
    """True for layers of a pretrained backbone, False for the input and the head."""
    return layer.name not in {
        "image",
        COLOUR_CONSTANCY_LAYER,
        COLOUR_CONSTANT_UNIT_RANGE,
        "to_unit_range",
        "to_unit_interval",
        "imagenet_standardise",
        FEATURE_LAYER,
        "head_dropout",
        LOGIT_LAYER,
        PROBABILITY_LAYER,
    }


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze the backbone. Batch-norm layers stay frozen either way: with
    batches of 32 their statistics would drift away from the ImageNet ones."""
    for layer in model.layers:
        if is_backbone_layer(layer):
            layer.trainable = trainable and not isinstance(layer, layers.BatchNormalization)
