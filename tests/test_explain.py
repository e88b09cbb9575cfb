"""Grad-CAM, overlays and activation maps on tiny models with hand-set weights."""

import gc
import weakref

import cv2
import keras
import numpy as np
import pytest

from medal_core.explain import gradcam, overlay
from medal_core.modeling import architectures as models

SIZE = 32
SQUARE = (slice(4, 12), slice(20, 28))  # rows, columns: the top-right quadrant


@pytest.fixture(scope="module")
def brightness_model() -> keras.Model:
    """A flat functional model whose logit is the mean brightness after a ReLU:
    logit = mean_xy relu(R + G + B). No training needed."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(1, 1, use_bias=False, name="conv")(inputs)
    x = keras.layers.Activation("relu", name="conv_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    outputs = keras.layers.Activation("sigmoid", name="probability")(logit)
    model = keras.Model(inputs, outputs, name="brightness")
    model.get_layer("conv").set_weights([np.ones((1, 1, 3, 1), np.float32)])
    model.get_layer("logit").set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    return model


@pytest.fixture(scope="module")
def small_cnn() -> keras.Model:
    return models.build_custom_cnn(input_size=SIZE, filters=(8, 16))


def square_image() -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[SQUARE] = 255
    return image


def assert_heatmaps(heatmaps, shape):
    assert heatmaps.shape == shape
    assert heatmaps.dtype == np.float32
    assert not np.isnan(heatmaps).any()
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0


def test_gradcam_shapes_for_batch_and_single_image(brightness_model):
    cam = gradcam.GradCAM(brightness_model, "conv_relu")
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    assert_heatmaps(cam(batch), (3, SIZE, SIZE))
    assert_heatmaps(cam(batch[0]), (SIZE, SIZE))
    assert_heatmaps(cam(batch.astype(np.uint8)), (3, SIZE, SIZE))


def test_gradcam_points_at_the_bright_square(brightness_model):
    # The logit is ~48 here, where the sigmoid's gradient is 0 in float32: a map built
    # from the probability would be blank.
    heatmap = gradcam.GradCAM(brightness_model, "conv_relu")(square_image())
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert row in range(4, 12) and col in range(20, 28)
    rows, cols = np.indices(heatmap.shape)
    centre = (rows * heatmap).sum() / heatmap.sum(), (cols * heatmap).sum() / heatmap.sum()
    assert 4 <= centre[0] < 12 and 20 <= centre[1] < 28
    assert heatmap[SQUARE].min() == pytest.approx(1.0)
    assert heatmap.max() == pytest.approx(1.0)


def test_benign_direction_and_blank_images_give_zero_maps(brightness_model):
    cam = gradcam.GradCAM(brightness_model, "conv_relu")
    benign = cam(square_image(), direction="benign")
    assert_heatmaps(benign, (SIZE, SIZE))
    assert np.all(benign == 0)
    blank = cam(np.zeros((SIZE, SIZE, 3), np.float32))  # all-zero map: no 0/0
    assert_heatmaps(blank, (SIZE, SIZE))
    assert np.all(blank == 0)
    with pytest.raises(ValueError, match="direction"):
        cam(square_image(), direction="sideways")


def test_repeated_calls_do_not_retrace(brightness_model):
    cam = gradcam.GradCAM(brightness_model, "conv_relu")
    rng = np.random.default_rng(1)
    for n in (1, 4, 2, 3):
        cam(rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32))
    cam(square_image())
    assert cam.tracing_count == 1


def test_warm_up_traces_once_so_the_first_image_does_not(small_cnn):
    cam = gradcam.GradCAM(small_cnn, "block2_gelu")
    cam.warm_up()
    assert cam.tracing_count == 1
    heatmap = cam(square_image())
    assert cam.tracing_count == 1 and heatmap.shape == (SIZE, SIZE)


def test_sub_models_are_cached_per_model_and_layer(brightness_model):
    first = gradcam.GradCAM(brightness_model, "conv_relu")
    second = gradcam.GradCAM(brightness_model, "conv_relu")
    assert first._extractor is second._extractor
    assert gradcam.activations_and_logit(brightness_model, "conv") is not first._extractor


def test_cache_does_not_keep_models_alive():
    model = models.build_custom_cnn(input_size=16, filters=(4,))
    gradcam.activations_and_logit(model, "block1_gelu")
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_gradcam_on_every_architecture(untrained_architectures, arch):
    size = 64
    model = untrained_architectures[arch]
    cam = gradcam.GradCAM(model)
    assert cam.layer_name == models.ARCHITECTURES[arch].gradcam_layer
    images = np.random.default_rng(2).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    assert_heatmaps(cam(images), (2, size, size))


def test_unknown_or_flat_layer_is_a_clear_error(brightness_model):
    with pytest.raises(ValueError, match=r"no layer named 'nope'.*conv_relu"):
        gradcam.GradCAM(brightness_model, "nope")
    with pytest.raises(ValueError, match=r"4-D.*'logit'.*\['conv', 'conv_relu'\]"):
        gradcam.GradCAM(brightness_model, "logit")


def test_wrong_image_size_is_a_clear_error(brightness_model):
    cam = gradcam.GradCAM(brightness_model, "conv_relu")
    with pytest.raises(ValueError, match="resize"):
        cam(np.zeros((SIZE + 1, SIZE, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(n, h, w, 3\)"):
        cam(np.zeros((SIZE, SIZE), np.uint8))


def test_conv_layer_names_skip_input_and_preprocessing(brightness_model, small_cnn):
    assert gradcam.conv_layer_names(brightness_model) == ["conv", "conv_relu"]
    names = gradcam.conv_layer_names(small_cnn)
    assert names[:4] == ["block1_conv", "block1_bn", "block1_gelu", "block1_pool"]
    assert "image" not in names and "to_unit_interval" not in names
    # No block5_gelu in this two-block CNN: fall back to the last feature layer.
    assert gradcam.default_gradcam_layer(small_cnn) == names[-1]


def test_overlay_keeps_the_original_size():
    rgb = np.random.default_rng(3).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    heatmap = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    out = overlay.overlay_heatmap(rgb, heatmap)
    assert out.shape == (50, 80, 3) and out.dtype == np.uint8
    assert np.array_equal(overlay.overlay_heatmap(rgb, heatmap, opacity=0.0), rgb)


def test_overlay_colours_are_rgb():
    rgb = np.zeros((8, 8, 3), np.uint8)
    hot = overlay.overlay_heatmap(rgb, np.ones((4, 4), np.float32), opacity=1.0)
    cold = overlay.overlay_heatmap(rgb, np.zeros((4, 4), np.float32), opacity=1.0)
    # JET: 1 is dark red (128, 0, 0), 0 dark blue (0, 0, 128); red must land in
    # channel 0 of an RGB image, not channel 2 as OpenCV's BGR would put it.
    assert hot[0, 0].tolist() == [128, 0, 0]
    assert cold[0, 0].tolist() == [0, 0, 128]
    viridis = overlay.overlay_heatmap(rgb, np.ones((4, 4)), opacity=1.0, colormap=cv2.COLORMAP_VIRIDIS)
    assert viridis[0, 0, 0] > viridis[0, 0, 2]  # viridis ends yellow


@pytest.mark.parametrize("opacity", [-0.1, 1.5, float("nan"), "0.5"])
def test_overlay_rejects_bad_opacity(opacity):
    with pytest.raises(ValueError, match="opacity"):
        overlay.overlay_heatmap(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4)), opacity)


def test_overlay_rejects_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"\(h, w, 3\)"):
        overlay.overlay_heatmap(np.zeros((8, 8), np.uint8), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="heatmap"):
        overlay.overlay_heatmap(np.zeros((8, 8, 3), np.uint8), np.zeros((1, 4, 4)))
    with pytest.raises(TypeError, match="uint8"):
        overlay.overlay_heatmap(np.zeros((8, 8, 3), np.float32), np.zeros((4, 4)))


def test_activation_maps_count_and_range(small_cnn):
    image = np.random.default_rng(4).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    assert gradcam.layer_channels(small_cnn, "block1_conv") == 8
    every = gradcam.activation_maps(small_cnn, "block1_conv", image, max_maps=64)
    assert every.shape == (8, SIZE, SIZE) and every.dtype == np.float32
    assert every.min() >= 0 and every.max() <= 1 and not np.isnan(every).any()
    assert gradcam.activation_maps(small_cnn, "block2_pool", image, max_maps=5).shape == (5, 8, 8)
    with pytest.raises(ValueError, match="max_maps"):
        gradcam.activation_maps(small_cnn, "block1_conv", image, max_maps=0)


def test_activation_grid_layout():
    maps = np.random.default_rng(5).uniform(0, 1, (5, 8, 8)).astype(np.float32)
    grid = overlay.activation_grid(maps, columns=4, pad=2)
    assert grid.shape == (2 * 8 + 2, 4 * 8 + 3 * 2) and grid.dtype == np.uint8
    assert np.all(grid[8:10] == 255)  # the gap between the rows
    coloured = overlay.activation_grid(maps, columns=4, pad=2, colormap=cv2.COLORMAP_VIRIDIS)
    assert coloured.shape == (18, 38, 3) and coloured.dtype == np.uint8
    assert overlay.activation_grid(maps[:2], columns=4, pad=0).shape == (8, 16)


# ------------------------------------------------------- explaining the averaged estimate


def test_the_views_are_the_predictors_views_and_undo_returns_them_upright():
    import tensorflow as tf

    from medal_core.modeling.runner import dihedral_views

    image = np.random.default_rng(0).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    views = gradcam.dihedral_stack(image)
    np.testing.assert_array_equal(views, dihedral_views(tf.constant(image[None])).numpy())
    for upright in gradcam.undo_dihedral(views[..., 0]):
        np.testing.assert_array_equal(upright, image[..., 0])


def test_the_estimate_map_points_at_the_square_in_the_original_orientation(brightness_model):
    pair = gradcam.GradCAM(brightness_model, "conv_relu").explain_estimate(square_image())
    assert_heatmaps(pair.malignant, (SIZE, SIZE))
    row, col = np.unravel_index(np.argmax(pair["malignant"]), (SIZE, SIZE))
    assert row in range(4, 12) and col in range(20, 28)
    assert pair.benign.max() == 0.0 and pair.scale > 0


def test_the_estimate_map_turns_with_the_image(small_cnn):
    """Averaged over all 8 views, the explanation of a turned image is the turned
    explanation (each view's map was mapped back before averaging)."""
    cam = gradcam.GradCAM(small_cnn, gradcam.default_gradcam_layer(small_cnn))
    image = np.random.default_rng(1).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    upright = cam.explain_estimate(image)
    turned = cam.explain_estimate(np.rot90(image).copy())
    np.testing.assert_allclose(turned.malignant, np.rot90(upright.malignant), atol=1e-4)
    np.testing.assert_allclose(turned.benign, np.rot90(upright.benign), atol=1e-4)


def test_malignant_and_benign_share_one_scale(small_cnn):
    cam = gradcam.GradCAM(small_cnn, gradcam.default_gradcam_layer(small_cnn))
    image = np.random.default_rng(2).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)
    pair = cam.explain_estimate(image)
    assert max(pair.malignant.max(), pair.benign.max()) == pytest.approx(1.0)
    assert min(pair.malignant.max(), pair.benign.max()) < 1.0  # the weaker one stays weaker


def test_colour_scale_runs_from_cold_to_warm():
    strip = overlay.colour_scale(64, 8)
    assert strip.shape == (8, 64, 3) and strip.dtype == np.uint8
    assert strip[0, 0, 2] > strip[0, 0, 0] and strip[0, -1, 0] > strip[0, -1, 2]  # blue → red


@pytest.mark.parametrize("arch", sorted(models.ARCHITECTURES))
def test_the_prediction_pass_gives_grad_cam_where_the_classifier_pools(untrained_architectures, arch):
    # At the maps the classifier pools, the logit's gradient is the head's kernel / (h·w)
    # everywhere, so the prediction pass's logit maps are Grad-CAM's signed maps: the
    # pair built from them must be the gradient pass's own (on every architecture whose
    # Grad-CAM layer that is; custom_cnn's sits before its last pooling).
    from medal_core.modeling.runner import ModelRunner

    model = untrained_architectures[arch]
    runner = ModelRunner(model)
    layer = models.ARCHITECTURES[arch].gradcam_layer
    if runner.pooled_maps_layer != layer:
        assert arch == "custom_cnn" and runner.pooled_maps_layer == "block5_pool"
        return
    image = np.random.default_rng(5).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    _, logit_maps = runner.views_and_logit_maps(image[None])
    from_pass = gradcam.averaged_cam_pair(logit_maps[0], (64, 64))
    from_gradients = gradcam.GradCAM(model, layer).explain_estimate(image)
    assert from_pass.scale == pytest.approx(from_gradients.scale, rel=1e-4, abs=1e-7)
    for direction in gradcam.DIRECTIONS:
        np.testing.assert_allclose(from_pass[direction], from_gradients[direction], atol=2e-4)


def test_averaged_cam_pair_needs_eight_maps():
    with pytest.raises(ValueError, match=r"expected 8 maps"):
        gradcam.averaged_cam_pair(np.zeros((4, 7, 7)), (32, 32))
