"""Colour constancy inside the model: shades of grey (Finlayson & Trezzi, 2004).

Dermoscopy images differ in illumination and camera colour response from one clinic (and
dataset) to the next. Shades of grey estimates each image's illuminant as the Minkowski
p-norm mean of each channel (p = 6: between the grey-world mean, p = 1, and the
max-RGB white patch, p = ∞) and rescales the channels so that illuminant becomes neutral
grey. Barata et al. (2015) found it improves dermoscopy classification, and the top ISIC
2018/2019 entries used it. Here it is a layer at the start of the graph, so the model
still takes raw RGB 0–255 and the app, batch triage and the service need no change.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

COLOUR_CONSTANCY_LAYER = "colour_constancy"


@keras.saving.register_keras_serializable(package="medal")
class ShadesOfGrey(layers.Layer):
    """Raw RGB 0–255 (n, h, w, 3) → the same with each image's illuminant made grey.

    Per image, the illuminant is e_c = (mean over pixels of (x_c / 255)^p)^(1/p); each
    channel is multiplied by 1 / (√3 · e_c / ‖e‖), which leaves a grey-lit image unchanged
    and keeps the illuminant's length (so overall brightness is kept). Gains are clipped
    to [1/`max_gain`, `max_gain`], so an image with an almost empty channel (a pure red
    picture) is not amplified into noise, and the output is clipped to 0–255. No weights.
    """

    def __init__(self, power: float = 6.0, max_gain: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        if power < 1:
            raise ValueError(f"power must be at least 1, got {power}")
        if max_gain < 1:
            raise ValueError(f"max_gain must be at least 1, got {max_gain}")
        self.power = float(power)
        self.max_gain = float(max_gain)

    def call(self, images):
        x = ops.clip(ops.cast(images, "float32"), 0.0, 255.0)
        moment = ops.mean(ops.power(x / 255.0, self.power), axis=(1, 2), keepdims=True)
        # The small constant keeps an all-black image finite (its gains are then 1).
        illuminant = ops.power(moment + 1e-12, 1.0 / self.power)  # (n, 1, 1, 3)
        unit = illuminant / ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True))
        gains = ops.clip(1.0 / (math.sqrt(3.0) * unit), 1.0 / self.max_gain, self.max_gain)
        return ops.clip(x * gains, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power, "max_gain": self.max_gain}
