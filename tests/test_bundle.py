"""Model bundles: a faithful round trip, and every way the loader must refuse a bundle."""

import json
import shutil

import keras
import numpy as np
import pytest
from helpers import TINY_GRADCAM_LAYER, TINY_INPUT, tiny_manifest, tiny_predictions

from medal_core.bundles import bundle
from medal_core.bundles.bundle import BundleError


def edit_manifest(folder, change):
    path = folder / bundle.MANIFEST_FILE
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_round_trip_keeps_model_manifest_and_predictions(tiny_bundle, tiny_keras_model):
    loaded = bundle.load_bundle(tiny_bundle)

    images = np.random.default_rng(0).uniform(0, 255, (3, TINY_INPUT, TINY_INPUT, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.model(images)), keras.ops.convert_to_numpy(tiny_keras_model(images))
    )
    assert len(loaded.model.get_layer(TINY_GRADCAM_LAYER).output.shape) == 4  # a feature map

    manifest = loaded.manifest
    assert {k: manifest[k] for k in tiny_manifest()} == tiny_manifest()
    assert manifest["format_version"] == bundle.FORMAT_VERSION
    assert manifest["model_sha256"] == bundle.sha256_file(tiny_bundle / bundle.MODEL_FILE)
    assert (loaded.name, loaded.threshold, loaded.temperature) == ("tiny", 0.4, 1.5)

    expected = tiny_predictions()
    np.testing.assert_array_equal(loaded.predictions.image_ids, expected.image_ids)
    np.testing.assert_array_equal(loaded.predictions.labels, expected.labels)
    np.testing.assert_array_equal(loaded.predictions.logits, expected.logits)
    np.testing.assert_array_equal(loaded.predictions.probabilities, expected.probabilities)
    assert (tiny_bundle / bundle.HISTORY_FILE).read_text().startswith("epoch,loss,val_auc")


def test_stored_predictions_keep_full_precision(tmp_path):
    """The manifest's threshold is one of the validation probabilities; rounding the stored
    copy (e.g. to 6 decimals) could drop that case below the threshold and change the
    sensitivity recomputed from the file."""
    probabilities = np.array([0.1234564321, 0.98765449999, 1e-9, 0.5])
    logits = np.log(probabilities / (1 - probabilities))
    stored = bundle.Predictions(np.array(list("abcd")), np.array([0, 1, 1, 0]), logits, probabilities)
    bundle.write_predictions(tmp_path / "p.csv", stored)
    read = bundle.read_predictions(tmp_path / "p.csv")
    np.testing.assert_array_equal(read.probabilities, probabilities)
    np.testing.assert_array_equal(read.logits, logits)
    threshold = probabilities[1]
    assert np.sum(read.probabilities[read.labels == 1] >= threshold) == 1


def test_load_without_model_reads_manifest_and_predictions_only(tiny_bundle):
    loaded = bundle.load_bundle(tiny_bundle, load_model=False)
    assert loaded.model is None and loaded.name == "tiny"
    assert len(loaded.predictions.labels) == 6


def test_save_refuses_an_incomplete_manifest(tmp_path, tiny_keras_model):
    manifest = tiny_manifest()
    del manifest["threshold"]
    with pytest.raises(ValueError, match="missing field 'threshold'"):
        bundle.save_bundle(tmp_path / "b", tiny_keras_model, manifest, tiny_predictions())


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("tamper", ["flip", "append"])
def test_tampered_model_file_is_refused(tiny_bundle, tamper):
    path = tiny_bundle / bundle.MODEL_FILE
    content = bytearray(path.read_bytes())
    if tamper == "flip":
        content[len(content) // 2] ^= 0x01
    else:
        content += b"\x00"
    path.write_bytes(bytes(content))
    with pytest.raises(BundleError, match="does not match its manifest") as error:
        bundle.load_bundle(tiny_bundle)
    assert "sha256" in str(error.value) and "do not use it" in str(error.value)


@pytest.mark.parametrize(
    "missing, message",
    [
        (bundle.MODEL_FILE, "has no model.keras: the bundle is incomplete"),
        (bundle.MANIFEST_FILE, "has no manifest.json: the bundle is incomplete"),
        (bundle.PREDICTIONS_FILE, "has no val_predictions.csv: the bundle is incomplete"),
    ],
)
def test_missing_file_is_refused(tiny_bundle, missing, message):
    (tiny_bundle / missing).unlink()
    with pytest.raises(BundleError, match=message):
        bundle.load_bundle(tiny_bundle)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(BundleError, match="model bundle not found: .*absent.*medal_core train"):
        bundle.load_bundle(tmp_path / "absent")


def test_malformed_json_manifest_is_refused(tiny_bundle):
    (tiny_bundle / bundle.MANIFEST_FILE).write_text('{"name": "tiny", ')
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        bundle.load_bundle(tiny_bundle)


def test_manifest_that_is_not_an_object_is_refused(tiny_bundle):
    (tiny_bundle / bundle.MANIFEST_FILE).write_text("[1, 2, 3]")
    with pytest.raises(BundleError, match="the manifest is not a JSON object"):
        bundle.load_bundle(tiny_bundle)


def test_manifest_missing_or_mistyped_fields_are_listed(tiny_bundle):
    def change(manifest):
        del manifest["temperature"]
        del manifest["gradcam_layer"]
        manifest["input_size"] = "32"

    edit_manifest(tiny_bundle, change)
    with pytest.raises(BundleError, match="is malformed") as error:
        bundle.load_bundle(tiny_bundle)
    for problem in (
        "missing field 'temperature'",
        "missing field 'gradcam_layer'",
        "field 'input_size' has the wrong type (str)",
    ):
        assert problem in str(error.value)


def test_boolean_is_not_accepted_as_a_number(tiny_bundle):
    edit_manifest(tiny_bundle, lambda m: m.update(temperature=True))
    with pytest.raises(BundleError, match="field 'temperature' has the wrong type"):
        bundle.load_bundle(tiny_bundle, load_model=False)


def test_threshold_without_value_is_refused(tiny_bundle):
    edit_manifest(tiny_bundle, lambda m: m.update(threshold={"method": "?"}))
    with pytest.raises(BundleError, match="field 'threshold' has no 'value'"):
        bundle.load_bundle(tiny_bundle, load_model=False)


def test_gradcam_layer_missing_from_the_model_is_refused(tiny_bundle):
    edit_manifest(tiny_bundle, lambda m: m.update(gradcam_layer="no_such_layer"))
    with pytest.raises(BundleError, match="has no layer 'no_such_layer'"):
        bundle.load_bundle(tiny_bundle)


def test_predictions_with_one_class_are_refused(tiny_bundle):
    path = tiny_bundle / bundle.PREDICTIONS_FILE
    path.write_text("image_id,label,logit,probability\na,1,0.5,0.6\nb,1,1.0,0.7\n")
    with pytest.raises(BundleError, match="must hold predictions for both classes"):
        bundle.load_bundle(tiny_bundle, load_model=False)


def test_malformed_predictions_are_refused(tiny_bundle):
    path = tiny_bundle / bundle.PREDICTIONS_FILE
    path.write_text("image_id,label,logit\na,1,0.5\nb,0,1.0\n")
    with pytest.raises(BundleError, match="val_predictions.csv is malformed"):
        bundle.load_bundle(tiny_bundle, load_model=False)


def test_model_with_a_lambda_layer_is_refused_by_safe_mode(tmp_path):
    inputs = keras.Input((TINY_INPUT, TINY_INPUT, 3), name="image")
    x = keras.layers.Lambda(lambda t: t / 255.0, name="sneaky")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name=TINY_GRADCAM_LAYER)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    model = keras.Model(inputs, keras.layers.Activation("sigmoid", name="probability")(logit))
    folder = bundle.save_bundle(tmp_path / "lambda", model, tiny_manifest("lambda"), tiny_predictions())

    manifest = bundle.read_manifest(folder)
    assert manifest["model_sha256"] == bundle.sha256_file(folder / bundle.MODEL_FILE)
    with pytest.raises(BundleError, match="could not be loaded safely"):
        bundle.load_bundle(folder)


def test_find_bundles_lists_folders_with_a_manifest(tiny_bundle):
    models_dir = tiny_bundle.parent
    shutil.copytree(tiny_bundle, models_dir / "another")
    (models_dir / "half_trained" / "checkpoints").mkdir(parents=True)
    (models_dir / "README.md").write_text("not a bundle")
    assert bundle.find_bundles(models_dir) == [models_dir / "another", models_dir / "tiny"]
    assert bundle.find_bundles(models_dir / "missing") == []


def test_calibration_removes_the_class_weighting_offset_then_applies_the_temperature():
    logits = np.array([-3.0, 0.0, 1.4692, 4.0])
    expected = 1 / (1 + np.exp(-(logits - 1.4692) / 1.2))
    np.testing.assert_allclose(bundle.calibrated_probability(logits, 1.4692, 1.2), expected)
    assert bundle.calibrated_probability(1.4692, 1.4692, 1.2) == pytest.approx(0.5)


def test_a_manifest_without_an_offset_means_no_offset(tiny_bundle):
    loaded = bundle.load_bundle(tiny_bundle, load_model=False)
    assert "logit_offset" not in loaded.manifest and loaded.logit_offset == 0.0
    np.testing.assert_allclose(loaded.calibrate(loaded.predictions.logits), loaded.predictions.probabilities)
