"""Batch-norm folding: the folded copy computes the same function, faster, and only
pairs that can be merged exactly are merged."""

import keras
import numpy as np
import pytest
from keras import layers

from medal_core.modeling import architectures as models
from medal_core.modeling.folding import FOLDABLE_CONVOLUTIONS, fold_batch_norm, foldable_pairs
from medal_core.modeling.runner import ModelRunner

SIZE = 64
ARCHS = sorted(models.ARCHITECTURES)
pytestmark = pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")


def random_images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def randomise_batch_norms(model: keras.Model, seed: int = 0) -> None:
    """Give every batch norm non-trivial statistics and affine parameters: fresh ones
    (mean 0, variance 1, γ 1, β 0) would let a wrong folding pass unnoticed."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, w.shape).astype("float32")
                    if "variance" in w.path or "gamma" in w.path
                    else rng.normal(0, 0.2, w.shape).astype("float32")
                    for w in layer.weights
                ]
            )


def outputs(model: keras.Model, images: np.ndarray, layer_name: str | None = None) -> np.ndarray:
    if layer_name is not None:
        model = keras.Model(model.inputs, model.get_layer(layer_name).output)
    return keras.ops.convert_to_numpy(model(images, training=False))


def assert_same_function(original, folded, images, rtol=1e-4, atol=1e-4):
    np.testing.assert_allclose(outputs(folded, images), outputs(original, images), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def built(untrained_architectures) -> dict[str, keras.Model]:
    """The session's models (conftest), with non-trivial batch-norm statistics."""
    for seed, model in enumerate(untrained_architectures.values()):
        randomise_batch_norms(model, seed)
    return untrained_architectures


# ---------------------------------------------------------------- the three architectures


@pytest.mark.parametrize("arch", ARCHS)
def test_every_batch_norm_that_reads_a_convolution_is_folded(built, arch):
    model = built[arch]
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    after_convolution = sorted(
        norm.name for norm in norms if isinstance(norm.input._keras_history.operation, FOLDABLE_CONVOLUTIONS)
    )
    folds = sorted(norm.name for norm in foldable_pairs(model).values())
    assert after_convolution and folds == after_convolution

    folded = fold_batch_norm(model)
    left = [layer.name for layer in folded.layers if isinstance(layer, layers.BatchNormalization)]
    assert len(left) == len(norms) - len(after_convolution)
    if arch == "densenet121":
        # DenseNet normalises each concatenation before its ReLU and convolution: nothing
        # to fold those into. The one after each block's 1x1 convolution folds.
        assert len(after_convolution) == 59 and len(left) == 62
    else:
        assert not left


@pytest.mark.parametrize("arch", ARCHS)
def test_folded_model_computes_the_same_function(built, arch):
    model = built[arch]
    folded = fold_batch_norm(model)
    images = random_images(3)
    for name in (models.LOGIT_LAYER, models.FEATURE_LAYER, models.ARCHITECTURES[arch].gradcam_layer):
        np.testing.assert_allclose(
            outputs(folded, images, name), outputs(model, images, name), rtol=1e-4, atol=1e-4, err_msg=name
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_folding_leaves_the_original_model_alone(built, arch):
    model = built[arch]
    before = [w.copy() for w in model.get_weights()]
    fold_batch_norm(model)
    assert len(model.get_weights()) == len(before)
    for now, then in zip(model.get_weights(), before):
        np.testing.assert_array_equal(now, then)
    assert foldable_pairs(model)  # folding twice finds the same pairs again


@pytest.mark.parametrize("arch", ARCHS)
def test_runner_folded_agrees_with_runner_as_saved(built, arch):
    model = built[arch]
    images = random_images(2)
    folded_logits, folded_features = ModelRunner(model)(images, views=8)
    logits, features = ModelRunner(model, fold=False)(images, views=8)
    np.testing.assert_allclose(folded_logits, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(folded_features, features, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- what may and may not be folded


def small_model(build) -> keras.Model:
    """A functional model around `build(x) -> y` on 16×16×3 inputs, batch norms randomised."""
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, build(inputs))
    randomise_batch_norms(model, seed=3)
    return model


@pytest.mark.parametrize(
    "norm",
    [
        dict(),
        dict(center=False),
        dict(scale=False),
        dict(center=False, scale=False),
        dict(epsilon=0.1),
    ],
    ids=["default", "no-beta", "no-gamma", "neither", "epsilon-0.1"],
)
@pytest.mark.parametrize(
    "conv",
    [
        lambda: layers.Conv2D(4, 3, padding="same", use_bias=False),
        lambda: layers.Conv2D(4, 3, strides=2, use_bias=True),
        lambda: layers.DepthwiseConv2D(3, padding="same", use_bias=False),
        lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=True),
    ],
    ids=["conv", "conv-strided-bias", "depthwise", "depthwise-x2-bias"],
)
def test_each_convolution_and_batch_norm_variant_folds_exactly(conv, norm):
    model = small_model(lambda x: layers.ReLU()(layers.BatchNormalization(**norm)(conv()(x))))
    folded = fold_batch_norm(model)
    assert len(foldable_pairs(model)) == 1
    assert not [layer for layer in folded.layers if isinstance(layer, layers.BatchNormalization)]
    assert_same_function(model, folded, random_images(2, 16))


def branching(x):
    conv = layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    return layers.Add()([layers.BatchNormalization()(conv), conv])  # conv output read twice


@pytest.mark.parametrize(
    "build, why",
    [
        (
            lambda x: layers.BatchNormalization()(layers.Conv2D(4, 3, activation="relu")(x)),
            "the convolution has an activation before the norm",
        ),
        (branching, "the convolution's output is also read elsewhere"),
        (lambda x: layers.BatchNormalization()(layers.Dense(4)(x)), "not a convolution"),
        (
            lambda x: layers.BatchNormalization(axis=1)(layers.Conv2D(4, 3)(x)),
            "normalises rows, not channels",
        ),
        (
            lambda x: layers.BatchNormalization()(layers.MaxPooling2D()(layers.Conv2D(4, 3)(x))),
            "a pooling layer sits between",
        ),
    ],
    ids=["activation", "branch", "dense", "axis-1", "pooling"],
)
def test_pairs_that_cannot_be_merged_exactly_are_left_alone(build, why):
    model = small_model(build)
    assert foldable_pairs(model) == {}, why
    folded = fold_batch_norm(model)
    assert [type(layer) for layer in folded.layers] == [type(layer) for layer in model.layers]
    assert_same_function(model, folded, random_images(2, 16))
