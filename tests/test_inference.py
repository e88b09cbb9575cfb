"""ModelRunner (one compiled pass per view count) and the 8 dihedral test-time views."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from medal_core.evaluation.metrics import sigmoid
from medal_core.modeling.architectures import FEATURE_LAYER, logit_model
from medal_core.modeling.runner import DIHEDRAL_VIEWS, ModelRunner, dihedral_views

ATOL = 1e-5


def numpy_views(images: np.ndarray) -> list[np.ndarray]:
    """The 8 views as `dihedral_views` documents them, written independently with NumPy:
    k counter-clockwise quarter turns of the image (views 0–3), then of its horizontal
    mirror (views 4–7)."""
    mirrored = images[:, :, ::-1]
    return [np.rot90(images, k, axes=(1, 2)) for k in range(4)] + [
        np.rot90(mirrored, k, axes=(1, 2)) for k in range(4)
    ]


def asymmetric_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Seeded noise: no two dihedral views of it are alike."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def runner(tiny_keras_model):
    return ModelRunner(tiny_keras_model)


# ---------------------------------------------------------------- dihedral views


def test_dihedral_views_are_the_eight_symmetries_of_the_square_view_major():
    images = asymmetric_images(3, size=8)
    views = dihedral_views(tf.constant(images)).numpy()
    assert views.shape == (DIHEDRAL_VIEWS * 3, 8, 8, 3)
    expected = numpy_views(images)
    for k in range(DIHEDRAL_VIEWS):
        np.testing.assert_array_equal(views[k * 3 : (k + 1) * 3], expected[k], err_msg=f"view {k}")
    np.testing.assert_array_equal(views[:3], images)  # view 0: identity
    np.testing.assert_array_equal(views[4 * 3 : 5 * 3], images[:, :, ::-1])  # view 4: mirror


def test_dihedral_views_are_pairwise_distinct_and_closed_under_the_group():
    image = asymmetric_images(1, size=6, seed=3)
    views = dihedral_views(tf.constant(image)).numpy()
    for a, b in itertools.combinations(range(DIHEDRAL_VIEWS), 2):
        assert not np.array_equal(views[a], views[b]), f"views {a} and {b} coincide"
    as_set = {v.tobytes() for v in views}
    assert len(as_set) == DIHEDRAL_VIEWS
    # Closed: the views of any view are the same 8 pictures again (a group, not just 8 maps).
    for k in range(DIHEDRAL_VIEWS):
        again = dihedral_views(tf.constant(views[k : k + 1])).numpy()
        assert {v.tobytes() for v in again} == as_set, f"views of view {k}"


# ---------------------------------------------------------------- ModelRunner


def test_one_view_agrees_with_the_raw_model(runner, tiny_keras_model):
    images = asymmetric_images(4)
    logits, features = runner(images, views=1)
    assert logits.shape == (4,) and logits.dtype == np.float32
    expected_logits = logit_model(tiny_keras_model)([images]).numpy().reshape(-1)
    np.testing.assert_allclose(logits, expected_logits, atol=ATOL)
    probabilities = tiny_keras_model(images).numpy().reshape(-1)
    np.testing.assert_allclose(sigmoid(logits), probabilities, atol=ATOL)
    pooled = keras.Model(tiny_keras_model.inputs, tiny_keras_model.get_layer(FEATURE_LAYER).output)(
        [images]
    ).numpy()
    assert features.shape == pooled.shape == (4, 16)
    np.testing.assert_allclose(features, pooled, atol=ATOL)


def test_uint8_input_gives_the_same_logits(runner):
    images = asymmetric_images(2)
    np.testing.assert_allclose(runner(images.astype(np.uint8))[0], runner(images)[0], atol=ATOL)


def test_eight_views_give_one_logit_per_view(runner, tiny_keras_model):
    images = asymmetric_images(3, seed=1)
    view_logits, features = runner(images, views=DIHEDRAL_VIEWS)
    assert view_logits.shape == (3, DIHEDRAL_VIEWS)
    one_logit, one_features = runner(images, views=1)
    np.testing.assert_allclose(view_logits[:, 0], one_logit, atol=ATOL)
    np.testing.assert_allclose(features, one_features, atol=ATOL)  # features of view 0
    raw = logit_model(tiny_keras_model)
    for k, view in enumerate(numpy_views(images)):
        np.testing.assert_allclose(
            view_logits[:, k], raw([np.ascontiguousarray(view)]).numpy()[:, 0], atol=ATOL, err_msg=f"view {k}"
        )
    # An asymmetric image and a random network: the views really are different inputs.
    assert np.ptp(view_logits, axis=1).min() > 0


def test_batched_matches_one_call(runner):
    images = asymmetric_images(7, seed=2)
    logits, features = runner.batched(images, views=DIHEDRAL_VIEWS, batch_size=3)
    whole_logits, whole_features = runner(images, views=DIHEDRAL_VIEWS)
    np.testing.assert_allclose(logits, whole_logits, atol=ATOL)
    np.testing.assert_allclose(features, whole_features, atol=ATOL)
    with pytest.raises(ValueError, match="no images"):
        runner.batched(images[:0])


@pytest.mark.parametrize(
    "shape", [(1, 33, 33, 3), (1, 32, 32, 1), (1, 32, 32, 4), (32, 32, 3), (1, 32, 16, 3)]
)
def test_wrong_input_shape_is_refused(runner, shape):
    with pytest.raises(ValueError, match="expected images of shape"):
        runner(np.zeros(shape, np.float32))


@pytest.mark.parametrize("views", [0, 2, 4, 16])
def test_unsupported_view_count_is_refused(runner, views):
    with pytest.raises(ValueError, match="views must be"):
        runner(np.zeros((1, 32, 32, 3), np.float32), views=views)


def test_each_pass_is_traced_once_whatever_the_batch_size(tiny_keras_model):
    runner = ModelRunner(tiny_keras_model)
    assert runner.tracing_count == 0
    for n in (1, 3, 5):
        runner(asymmetric_images(n), views=1)
    assert runner.tracing_count == 1
    for n in (1, 3, 5):
        runner(asymmetric_images(n).astype(np.uint8), views=DIHEDRAL_VIEWS)
    assert runner.tracing_count == 2
    runner.batched(asymmetric_images(11), views=1, batch_size=4)
    assert runner.tracing_count == 2


def test_logit_maps_come_from_the_views_pass_and_sum_to_each_views_logit(tiny_keras_model):
    runner = ModelRunner(tiny_keras_model)
    images = asymmetric_images(3)
    view_logits, logit_maps = runner.views_and_logit_maps(images)
    np.testing.assert_allclose(view_logits, runner(images, views=DIHEDRAL_VIEWS)[0], atol=1e-6)
    assert logit_maps.shape[:2] == (3, DIHEDRAL_VIEWS) and logit_maps.ndim == 4
    bias = float(np.asarray(tiny_keras_model.get_layer("logit").bias)[0])
    np.testing.assert_allclose(logit_maps.sum(axis=(2, 3)) + bias, view_logits, atol=1e-5)
    assert runner.tracing_count == 2  # its own pass, then `runner(images, 8)`'s
    runner.views_and_logit_maps(asymmetric_images(5))
    assert runner.tracing_count == 2
