"""Explanations: Grad-CAM heatmaps and per-layer activation maps (the maths; the
drawing is in `medal_core.explain.overlay`).

Grad-CAM (Selvaraju et al., 2017) asks *where* the evidence for a decision sits: it
weights the channels of a convolutional layer by how much the decision's score changes
with them, sums the weighted channels, and keeps the positive part.

The layout follows pytorch-grad-cam: one base class owns the costly part (a sub-model
returning a layer's activations and the logit, plus a traced gradient function), a CAM
method is a small subclass that only says how to weight channels, and drawing
(`overlay.overlay_heatmap`, `overlay.activation_grid`) is kept apart from the maths.

Every model here is a flat functional graph from `medal_core.modeling.architectures`: raw RGB 0–255 in,
a Dense layer named `logit`, then a sigmoid named `probability`. A positive logit means
"malignant" (label 1).

Typical use::

    cam = GradCAM(model)                       # layer defaults to the architecture's
    heatmap = cam(image)                       # (s, s) float32 in [0, 1]
    picture = overlay.overlay_heatmap(original_rgb, heatmap)
"""

from __future__ import annotations

import threading
import weakref

import cv2
import keras
import numpy as np
import tensorflow as tf

from medal_core.modeling.architectures import ARCHITECTURES, LOGIT_LAYER
from medal_core.modeling.colour import ShadesOfGrey
from medal_core.modeling.runner import DIHEDRAL_VIEWS

DIRECTIONS = ("malignant", "benign")

# Layers with 4-D outputs that are not features: they only copy, rescale or pad pixels.
_NOT_FEATURE_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.ZeroPadding2D,
    ShadesOfGrey,
)


# --------------------------------------------------------------------------- layers


def _is_4d(layer: keras.layers.Layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):  # layers with several or no outputs
        return False


def conv_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers whose output is a 4-D feature map (n, h, w, c), in graph
    order (input side first): convolutions, batch norms, activations, poolings, adds.
    The input and pixel-level preprocessing (rescaling, normalisation, zero padding)
    are left out. Meant for a layer picker; any of these works with `GradCAM` and
    `activation_maps`."""
    return [
        layer.name for layer in model.layers if _is_4d(layer) and not isinstance(layer, _NOT_FEATURE_LAYERS)
    ]


def _feature_layer(model: keras.Model, layer_name: str) -> keras.layers.Layer:
    """The layer called `layer_name`, checked to output a 4-D map; ValueError otherwise."""
    try:
        layer = model.get_layer(layer_name)
    except ValueError:
        layer = None
    if layer is None or not _is_4d(layer):
        problem = "has no layer" if layer is None else "has no 4-D (n, h, w, c) layer"
        raise ValueError(
            f"model '{model.name}' {problem} named '{layer_name}'; "
            f"convolutional layers: {conv_layer_names(model)}"
        )
    return layer


def default_gradcam_layer(model: keras.Model) -> str:
    """The layer Grad-CAM looks at by default: the architecture's `gradcam_layer` when
    the model is named after one in `models.ARCHITECTURES` (and has that layer), else
    the last 4-D feature layer."""
    spec = ARCHITECTURES.get(model.name)
    names = conv_layer_names(model)
    if spec is not None and spec.gradcam_layer in names:
        return spec.gradcam_layer
    if not names:
        raise ValueError(f"model '{model.name}' has no 4-D convolutional layer")
    return names[-1]


def layers_worth_looking_at(model: keras.Model) -> list[tuple[str, str]]:
    """A few layers, one per stage of the network, as (plain-words label, layer name):
    the last activation before each halving of the map size, and the architecture's
    Grad-CAM layer last. Early stages respond to edges and colours, middle ones to
    textures, the last to the lesion-level patterns the decision is read from."""
    candidates = [
        layer
        for layer in model.layers
        if _is_4d(layer) and isinstance(layer, (keras.layers.Activation, keras.layers.ReLU))
    ]
    if not candidates:
        names = conv_layer_names(model)
        return [("last convolutional layer", names[-1])] if names else []
    stage_ends = [
        layer
        for layer, following in zip(candidates, candidates[1:])
        if following.output.shape[1] is not None
        and layer.output.shape[1] is not None
        and following.output.shape[1] < layer.output.shape[1]
    ]
    final = default_gradcam_layer(model)
    stage_ends = [layer.name for layer in stage_ends if layer.name != final]
    if len(stage_ends) > 3:  # keep an early, a middle and a late stage
        stage_ends = [stage_ends[0], stage_ends[len(stage_ends) // 2], stage_ends[-1]]
    words = (
        ["early: edges and colours", "middle: textures and shapes", "late: larger structures"][
            -len(stage_ends) :
        ]
        if stage_ends
        else []
    )
    if len(stage_ends) == 1:
        words = ["early: edges, colours and textures"]
    sized = [
        f"{label} ({int(model.get_layer(name).output.shape[1])} px maps)"
        for label, name in zip(words, stage_ends)
    ]
    size = model.get_layer(final).output.shape[1]
    return list(zip(sized, stage_ends)) + [
        (f"final: the patterns the estimate is read from ({size} px maps; default)", final)
    ]


def layer_channels(model: keras.Model, layer_name: str) -> int:
    """Number of channels c of the (n, h, w, c) output of `layer_name`."""
    return int(_feature_layer(model, layer_name).output.shape[-1])


# ---------------------------------------------------------------- shared sub-models


class ActivationsAndLogit:
    """Images → one layer's activations and the logit, for one (model, layer).

    Building the sub-model and tracing its functions is the costly part, so instances
    are cached per model and layer (see `activations_and_logit`). Both functions have a
    fixed input signature (None, h, w, 3) float32, so new batch sizes do not retrace.
    """

    def __init__(self, model: keras.Model, layer_name: str):
        layer = _feature_layer(model, layer_name)
        self.layer_name = layer_name
        self.channels = int(layer.output.shape[-1])
        # (h, w) of the model input; None entries for a model taking any size.
        self.input_size = tuple(model.inputs[0].shape[1:3])
        # Holds the layers, never `model` itself, so the cache cannot keep it alive.
        self.model = keras.Model(
            model.inputs,
            [layer.output, model.get_layer(LOGIT_LAYER).output],
            name=f"{model.name}_{layer_name}_and_logit",
        )
        spec = tf.TensorSpec((None, *self.input_size, 3), tf.float32)
        self.forward = tf.function(self._forward, input_signature=[spec])
        self.gradients = tf.function(self._gradients, input_signature=[spec, tf.TensorSpec((), tf.float32)])

    def _forward(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(activations (n, h, w, c), logits (n,)), both float32."""
        activations, logits = self.model(images, training=False)
        return tf.cast(activations, tf.float32), tf.reshape(tf.cast(logits, tf.float32), [-1])

    def _gradients(self, images: tf.Tensor, sign: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(activations, d(sign · logit)/d activations, logits). The logit, not the
        probability: the sigmoid saturates, and its near-zero gradients would blank
        the maps of confident predictions."""
        with tf.GradientTape() as tape:
            activations, logits = self._forward(images)
            # Images are independent, so the gradient of the sum is each image's own.
            score = tf.reduce_sum(sign * logits)
        grads = tape.gradient(score, activations)
        if grads is None:  # the layer does not feed the logit
            grads = tf.zeros_like(activations)
        return activations, grads, logits

    @property
    def tracing_count(self) -> int:
        """How many times the gradient function has been traced (1 after first use)."""
        return self.gradients.experimental_get_tracing_count()


_CACHE: "weakref.WeakKeyDictionary[keras.Model, dict[str, ActivationsAndLogit]]" = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()  # Streamlit serves sessions from several threads


def activations_and_logit(model: keras.Model, layer_name: str) -> ActivationsAndLogit:
    """The cached `ActivationsAndLogit` for (model, layer_name), built on first use.
    Entries go away with the model (weak keys), so ids are never confused."""
    with _CACHE_LOCK:
        per_layer = _CACHE.setdefault(model, {})
        if layer_name not in per_layer:
            per_layer[layer_name] = ActivationsAndLogit(model, layer_name)
        return per_layer[layer_name]


def _as_batch(images: np.ndarray, input_size: tuple) -> tuple[np.ndarray, bool]:
    """float32 (n, h, w, 3) batch from a batch or a single image, and whether it was
    single. Checks the spatial size against the model input's."""
    images = np.asarray(images)
    single = images.ndim == 3
    if single:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB images (n, h, w, 3) or one image (h, w, 3), got shape {images.shape}")
    for got, want in zip(images.shape[1:3], input_size):
        if want is not None and got != want:
            raise ValueError(
                f"images are {images.shape[1]}×{images.shape[2]}, the model "
                f"takes {input_size[0]}×{input_size[1]}; resize them first"
            )
    return images.astype(np.float32, copy=False), single


def _scale_to_unit(maps: np.ndarray, subtract_min: bool) -> np.ndarray:
    """Scale each (h, w) map of a (k, h, w) stack to [0, 1] by its own range; a map
    with no range (all zero, or constant with `subtract_min`) becomes all zero."""
    maps = maps.astype(np.float32, copy=True)
    low = maps.min(axis=(1, 2), keepdims=True) if subtract_min else np.zeros_like(maps[:, :1, :1])
    span = maps.max(axis=(1, 2), keepdims=True) - low
    safe = np.where(span > 0, span, 1.0)
    scaled = np.where(span > 0, (maps - low) / safe, 0.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _resize(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a (k, hs, ws) float32 stack to (k, height, width)."""
    return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps]).astype(
        np.float32
    )


# ------------------------------------------------------------------------ Grad-CAM


class BaseCAM:
    """Class activation maps over one convolutional layer of a model.

    Subclasses say how to weight the layer's channels (`channel_weights`); the map is
    ReLU(Σ_c weight_c · activation_c), upsampled to the input size and scaled to [0, 1].
    Instances are reusable: call them on as many batches as needed.
    """

    def __init__(self, model: keras.Model, layer_name: str | None = None):
        self.layer_name = layer_name or default_gradcam_layer(model)
        self._extractor = activations_and_logit(model, self.layer_name)

    def warm_up(self) -> None:
        """Trace the gradient function now, on a blank image, so that the first real
        image does not wait for it. Does nothing for a model of unfixed input size."""
        if None not in self._extractor.input_size:
            self(np.zeros((1, *self._extractor.input_size, 3), np.float32))

    @property
    def tracing_count(self) -> int:
        """Traces of the underlying gradient function (stays 1 across batch sizes)."""
        return self._extractor.tracing_count

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """(n, c) weights from activations and gradients, both (n, h, w, c)."""
        raise NotImplementedError

    def __call__(self, images: np.ndarray, direction: str = "malignant") -> np.ndarray:
        """Heatmaps for a batch (n, s, s, 3) or one image (s, s, 3), uint8 or float,
        RGB 0–255 at the model's input size.

        `direction` "malignant" shows the evidence raising the logit, "benign" the
        evidence lowering it. Returns float32 (n, s, s) — or (s, s) for one image — in
        [0, 1], each map scaled by its own maximum; 0 everywhere when there is no such
        evidence.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        batch, single = _as_batch(images, self._extractor.input_size)
        sign = tf.constant(1.0 if direction == "malignant" else -1.0)
        activations, grads, _ = self._extractor.gradients(tf.constant(batch), sign)
        activations, grads = activations.numpy(), grads.numpy()
        weights = self.channel_weights(activations, grads)
        cams = np.maximum(np.einsum("nhwc,nc->nhw", activations, weights), 0.0)
        heatmaps = _scale_to_unit(_resize(cams, *batch.shape[1:3]), subtract_min=False)
        return heatmaps[0] if single else heatmaps

    def explain_estimate(self, image: np.ndarray) -> "CamPair":
        """Maps that explain the number the app shows: the estimate is the mean over 8
        rotated/mirrored copies of the image, so the map is the mean of their maps, each
        turned back onto the original orientation (augmentation smoothing, as in
        pytorch-grad-cam), from one batched gradient call.

        The malignant and benign maps come from the same gradients (the benign score is
        minus the logit, so its channel weights are minus the malignant ones, for any
        method linear in the gradients such as Grad-CAM) and share one scale: the
        stronger direction reaches 1, the other shows how much weaker it is.
        """
        batch, single = _as_batch(image, self._extractor.input_size)
        if not single and len(batch) != 1:
            raise ValueError("explain_estimate takes one image")
        views = dihedral_stack(batch[0])
        activations, grads, _ = self._extractor.gradients(tf.constant(views), tf.constant(1.0))
        activations, grads = activations.numpy(), grads.numpy()
        signed = np.einsum("nhwc,nc->nhw", activations, self.channel_weights(activations, grads))
        return averaged_cam_pair(signed, batch.shape[1:3])


def averaged_cam_pair(signed_maps: np.ndarray, size: tuple[int, int]) -> "CamPair":
    """The `CamPair` explaining an 8-view estimate, from each view's signed map
    (8, h, w) in `dihedral_stack` order (before the ReLU: positive where the evidence
    raises the logit). Each direction's maps are upsampled to `size` (height, width),
    turned back onto the original orientation and averaged; the stronger direction is
    scaled to 1, the other shares its scale.

    `BaseCAM.explain_estimate` gives it the channel-weighted activations of a layer;
    `ModelRunner.views_and_logit_maps` gives the same for the layer the classifier pools,
    from the prediction's own pass (no gradients: see `Predictor.predict_and_explain`).
    """
    signed_maps = np.asarray(signed_maps, dtype=np.float32)
    if signed_maps.ndim != 3 or len(signed_maps) != DIHEDRAL_VIEWS:
        raise ValueError(f"expected {DIHEDRAL_VIEWS} maps (8, h, w), got shape {signed_maps.shape}")
    malignant = undo_dihedral(_resize(np.maximum(signed_maps, 0.0), *size)).mean(axis=0)
    benign = undo_dihedral(_resize(np.maximum(-signed_maps, 0.0), *size)).mean(axis=0)
    scale = float(max(malignant.max(), benign.max()))
    if scale <= 0:
        return CamPair(np.zeros_like(malignant), np.zeros_like(benign), 0.0)
    return CamPair(
        np.clip(malignant / scale, 0, 1).astype(np.float32),
        np.clip(benign / scale, 0, 1).astype(np.float32),
        scale,
    )


class GradCAM(BaseCAM):
    """Grad-CAM: a channel's weight is the spatial mean of the logit's gradient over it."""

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return gradients.mean(axis=(1, 2))


class CamPair:
    """Malignant and benign maps (s, s) in [0, 1] on one shared scale, and that scale
    (the raw map value shown as 1; 0 when there is no evidence either way)."""

    def __init__(self, malignant: np.ndarray, benign: np.ndarray, scale: float):
        self.malignant, self.benign, self.scale = malignant, benign, scale

    def __getitem__(self, direction: str) -> np.ndarray:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        return self.malignant if direction == "malignant" else self.benign


def dihedral_stack(image: np.ndarray) -> np.ndarray:
    """(s, s, c) → (8, s, s, c) in the order of `inference.dihedral_views`: the image and
    its mirror image, each turned 0-3 quarter turns anticlockwise."""
    return np.stack([np.rot90(mirrored, k) for mirrored in (image, image[:, ::-1]) for k in range(4)])


def undo_dihedral(maps: np.ndarray) -> np.ndarray:
    """(8, s, s) maps of the `dihedral_stack` views, each turned back onto the original
    image's orientation."""
    return np.stack(
        [np.rot90(m, -(i % 4))[:, ::-1] if i >= 4 else np.rot90(m, -(i % 4)) for i, m in enumerate(maps)]
    )


# ------------------------------------------------------------------------- drawing


# ----------------------------------------------------------------- activation maps


def activation_maps(model: keras.Model, layer_name: str, image: np.ndarray, max_maps: int = 16) -> np.ndarray:
    """What `layer_name` sees: its first k = min(max_maps, channels) channels for one
    image (s, s, 3) — or a batch of one — in RGB 0–255 at the model's input size.

    Returns float32 (k, h, w) at the layer's own resolution, each map min–max scaled
    to [0, 1] (a constant map becomes 0). Use `layer_channels` for the channel count.
    """
    if max_maps < 1:
        raise ValueError(f"max_maps must be at least 1, got {max_maps}")
    extractor = activations_and_logit(model, layer_name)
    batch, _ = _as_batch(image, extractor.input_size)
    if len(batch) != 1:
        raise ValueError(f"activation_maps takes one image, got a batch of {len(batch)}")
    activations, _ = extractor.forward(tf.constant(batch))
    maps = np.moveaxis(activations.numpy()[0, :, :, :max_maps], -1, 0)
    return _scale_to_unit(maps, subtract_min=True)
