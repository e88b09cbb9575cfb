"""Model builders: structure, one training step, the logit model, freezing, save/reload."""

from pathlib import Path

import keras
import numpy as np
import pytest

from medal_core.modeling import architectures as models

SIZE = 64
ARCHS = sorted(models.ARCHITECTURES)
pytestmark = pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")

SHARED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"
WEIGHTS_FILE = SHARED_WEIGHTS / "mobilenet_0.75_224_no_top_imagenet.weights.h5"
DENSENET_WEIGHTS = SHARED_WEIGHTS / "densenet121_no_top_imagenet.weights.h5"


@pytest.fixture
def built(untrained_architectures) -> dict[str, keras.Model]:
    """One model per architecture at SIZE, shared by the session (conftest)."""
    return untrained_architectures


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("arch", ARCHS)
def test_model_is_flat_with_logit_probability_and_gradcam_layers(built, arch):
    model = built[arch]
    spec = models.ARCHITECTURES[arch]
    assert model.input_shape == (None, SIZE, SIZE, 3)
    assert model.output_shape == (None, 1)
    assert not [layer.name for layer in model.layers if isinstance(layer, keras.Model)]

    logit = model.get_layer(models.LOGIT_LAYER)
    assert isinstance(logit, keras.layers.Dense) and logit.units == 1
    assert logit.get_config()["activation"] == "linear"
    probability = model.get_layer(models.PROBABILITY_LAYER)
    assert probability.get_config()["activation"] == "sigmoid"
    assert model.layers[-1] is probability

    assert len(model.get_layer(spec.gradcam_layer).output.shape) == 4


@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_are_probabilities_and_match_the_logit_model(built, arch):
    model = built[arch]
    images = random_images(3)
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    assert probabilities.shape == (3, 1)
    assert np.all((probabilities > 0) & (probabilities < 1))

    logits = keras.ops.convert_to_numpy(models.logit_model(model)(images, training=False))
    assert logits.shape == (3, 1)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), probabilities, rtol=1e-5, atol=1e-6)


def scramble_batch_norm_statistics(model: keras.Model, seed: int = 0) -> None:
    """Give every moving mean and variance a non-default value, so that a reload that
    forgot non-trainable state would be caught."""
    rng = np.random.default_rng(seed)
    for variable in model.non_trainable_variables:
        shape = tuple(variable.shape)
        if "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.1, shape).astype("float32"))
        elif "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_reload_in_safe_mode_gives_identical_predictions(built, arch, tmp_path):
    model = built[arch]
    scramble_batch_norm_statistics(model)
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False, safe_mode=True)

    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]
    images = random_images(4, seed=1)
    before = keras.ops.convert_to_numpy(model(images, training=False))
    after = keras.ops.convert_to_numpy(reloaded(images, training=False))
    np.testing.assert_allclose(after, before, atol=1e-6)
    logits_before = keras.ops.convert_to_numpy(models.logit_model(model)(images))
    logits_after = keras.ops.convert_to_numpy(models.logit_model(reloaded)(images))
    np.testing.assert_allclose(logits_after, logits_before, rtol=1e-5, atol=1e-5)
    for original, restored in zip(model.variables, reloaded.variables):
        if "seed_generator" in original.path:  # dropout's RNG state is not a weight
            continue
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(restored), keras.ops.convert_to_numpy(original), err_msg=original.path
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_one_training_step_changes_the_weights(built, arch):
    model = built[arch]
    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernel_before = keras.ops.convert_to_numpy(first_conv.kernel).copy()
    logit_before = keras.ops.convert_to_numpy(model.get_layer("logit").kernel).copy()

    # Eager: tracing the backward graph of EfficientNet would cost ~20 s on two cores.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", run_eagerly=True)
    history = model.fit(
        random_images(4, seed=2),
        np.array([[0], [1], [0], [1]], np.float32),
        batch_size=4,
        epochs=1,
        verbose=0,
    )

    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(keras.ops.convert_to_numpy(first_conv.kernel), kernel_before)
    assert not np.allclose(keras.ops.convert_to_numpy(model.get_layer("logit").kernel), logit_before)


@pytest.mark.parametrize("arch", [a for a in ARCHS if models.ARCHITECTURES[a].is_transfer])
def test_backbone_freezing_keeps_batch_norm_frozen(built, arch):
    model = built[arch]
    head = {"logit"}
    batch_norm = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    assert batch_norm and convs
    try:
        models.set_backbone_trainable(model, False)
        trainable = {v.path.split("/")[0] for v in model.trainable_variables}
        assert trainable == head
        assert not any(layer.trainable for layer in convs + batch_norm)

        models.set_backbone_trainable(model, True)
        assert all(layer.trainable for layer in convs)
        assert not any(layer.trainable for layer in batch_norm)
        assert model.get_layer("logit").trainable
        assert not any("moving" in v.path or "gamma" in v.path for v in model.trainable_variables)
    finally:
        for layer in model.layers:
            layer.trainable = True


def test_custom_cnn_takes_no_pretrained_weights():
    with pytest.raises(ValueError, match="takes no pretrained weights"):
        models.build_model("custom_cnn", 32, weights="imagenet")
    assert models.build_model("custom_cnn", 32, weights="none").input_shape == (None, 32, 32, 3)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        models.build_model("resnet")


@pytest.mark.skipif(not WEIGHTS_FILE.is_file(), reason=f"no local MobileNet weights at {WEIGHTS_FILE}")
def test_mobilenet_loads_a_local_weights_file():
    model = models.build_model("mobilenet", 128, weights=str(WEIGHTS_FILE))
    reference = keras.applications.MobileNet(
        alpha=0.75, include_top=False, input_shape=(224, 224, 3), weights=str(WEIGHTS_FILE)
    )
    for name in ("conv1", "conv_pw_13"):
        ours = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        theirs = keras.ops.convert_to_numpy(reference.get_layer(name).kernel)
        np.testing.assert_array_equal(ours, theirs)
    random_init = models.build_model("mobilenet", 128, weights=None)
    assert not np.allclose(
        keras.ops.convert_to_numpy(random_init.get_layer("conv1").kernel),
        keras.ops.convert_to_numpy(model.get_layer("conv1").kernel),
    )


def test_densenet_standardises_inputs_as_its_imagenet_weights_expect(built):
    """DenseNet121's weights were trained on "torch" preprocessing; the model does it itself
    from raw 0–255 RGB, exactly as `keras.applications.densenet.preprocess_input`."""
    model = built["densenet121"]
    images = random_images(2, seed=3)
    inside = keras.Model(model.inputs, model.get_layer("imagenet_standardise").output)
    ours = keras.ops.convert_to_numpy(inside(images, training=False))
    theirs = keras.applications.densenet.preprocess_input(images.copy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not DENSENET_WEIGHTS.is_file(), reason=f"no local weights at {DENSENET_WEIGHTS}")
def test_densenet_loads_its_weights_and_gives_keras_maps_from_raw_rgb():
    """Our DenseNet121 on raw 0–255 RGB gives the same last maps as Keras' own DenseNet121
    with the same weights on `preprocess_input`'s output: weights and preprocessing fit."""
    ours = models.build_model("densenet121", SIZE, weights=str(DENSENET_WEIGHTS))
    reference = keras.applications.DenseNet121(
        include_top=False, input_shape=(SIZE, SIZE, 3), weights=str(DENSENET_WEIGHTS)
    )
    images = random_images(2, seed=5)
    maps = keras.Model(ours.inputs, ours.get_layer("relu").output)(images, training=False)
    expected = reference(keras.applications.densenet.preprocess_input(images.copy()), training=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(maps), keras.ops.convert_to_numpy(expected), rtol=1e-4, atol=1e-4
    )
