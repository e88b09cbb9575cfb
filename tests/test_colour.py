"""Shades-of-grey colour constancy (`medal_core.modeling.colour`): the published formula,
what it leaves alone, its guards, and that a model holding it loads in safe mode."""

from pathlib import Path

import keras
import numpy as np
import pytest

from medal_core.bundles.files import load_keras_model
from medal_core.modeling import architectures as models
from medal_core.modeling.colour import COLOUR_CONSTANCY_LAYER, ShadesOfGrey


def reference_shades_of_grey(images: np.ndarray, power: float = 6.0) -> np.ndarray:
    """Finlayson & Trezzi's estimate and correction, written out in NumPy (no gain clip)."""
    x = images.astype(np.float64)
    illuminant = np.mean(x**power, axis=(1, 2)) ** (1 / power)  # (n, 3)
    unit = illuminant / np.linalg.norm(illuminant, axis=1, keepdims=True)
    return np.clip(x / (np.sqrt(3) * unit[:, None, None, :]), 0, 255)


def corrected(images: np.ndarray, **kwargs) -> np.ndarray:
    return keras.ops.convert_to_numpy(ShadesOfGrey(**kwargs)(images.astype(np.float32)))


def test_it_computes_the_published_formula():
    images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3))
    images[1] *= np.array([1.0, 0.8, 0.6])  # a warm illuminant, gains well inside the clip
    np.testing.assert_allclose(corrected(images), reference_shades_of_grey(images), atol=1e-3)


def test_a_grey_lit_image_is_left_unchanged():
    grey = np.random.default_rng(1).uniform(0, 200, (1, 12, 12, 1)).repeat(3, axis=-1)
    np.testing.assert_allclose(corrected(grey), grey, atol=1e-3)


def test_a_tinted_copy_comes_out_with_the_colours_of_the_original():
    # A per-channel tint is what a different light or camera does: after correction the
    # two differ by one overall brightness factor only, the same for every channel.
    image = np.random.default_rng(2).uniform(20, 120, (1, 16, 16, 3))
    tinted = image * np.array([1.0, 0.7, 0.5])
    ratio = corrected(tinted) / corrected(image)
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)


def test_black_and_single_channel_images_stay_finite_and_in_range():
    black = np.zeros((1, 8, 8, 3))
    red = np.zeros((1, 8, 8, 3))
    red[..., 0], red[..., 1] = 200.0, 1.0  # an almost empty green channel, no blue
    out_black, out_red = corrected(black), corrected(red, max_gain=4.0)
    assert np.all(out_black == 0)
    assert np.all(np.isfinite(out_red)) and out_red.min() >= 0 and out_red.max() <= 255
    # The green channel's gain is clipped at 4, not blown up to its unclipped ~200.
    assert out_red[..., 1].max() == pytest.approx(4.0, rel=1e-4)


@pytest.mark.parametrize("argument", [{"power": 0.5}, {"max_gain": 0.9}])
def test_invalid_settings_are_refused(argument):
    with pytest.raises(ValueError, match="must be at least 1"):
        ShadesOfGrey(**argument)


def test_a_model_with_colour_constancy_reloads_in_safe_mode(tmp_path: Path, untrained_architectures):
    model = untrained_architectures["mobilenetv2_cc"]
    layer = model.get_layer(COLOUR_CONSTANCY_LAYER)
    assert isinstance(layer, ShadesOfGrey) and not layer.weights
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = load_keras_model(path)  # safe mode: the layer is found by its registered name
    images = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(images)), keras.ops.convert_to_numpy(model(images)), atol=1e-6
    )
    assert reloaded.get_layer(COLOUR_CONSTANCY_LAYER).get_config()["power"] == 6.0
    assert not models.is_backbone_layer(layer)
