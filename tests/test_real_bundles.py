"""The committed model bundles in models/: they load, and their stored validation
predictions reproduce the figures in their manifests (no images needed); with the ISIC
images beside the project, the app's compiled pass reproduces those predictions."""

from pathlib import Path

import numpy as np
import pytest

from medal_core import bundle, metrics

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
ISIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "isic2017"
BUNDLES = bundle.find_bundles(MODELS_DIR)
MAX_BUNDLE_BYTES = 40 * 1024 * 1024

if not BUNDLES:
    pytest.skip(f"no trained bundles yet ({MODELS_DIR}/*/manifest.json not found); "
                "they are checked here once written", allow_module_level=True)


@pytest.fixture(scope="module", params=BUNDLES, ids=[b.name for b in BUNDLES])
def loaded(request) -> bundle.Bundle:
    """Each bundle loaded once, model included: the sha256 of model.keras is verified and
    the model is read in safe mode."""
    return bundle.load_bundle(request.param)


def sensitivity_at(predictions: bundle.Predictions, threshold: float) -> tuple[int, int]:
    positives = predictions.probabilities[predictions.labels == 1]
    return int(np.sum(positives >= threshold)), len(positives)


def test_bundle_loads_with_its_model(loaded):
    size = loaded.manifest["input_size"]
    assert loaded.model.input_shape == (None, size, size, 3)
    assert loaded.model.get_layer(loaded.manifest["gradcam_layer"]) is not None
    assert loaded.manifest["model_sha256"] == bundle.sha256_file(loaded.folder / bundle.MODEL_FILE)


def test_stored_predictions_match_the_manifest_counts_and_temperature(loaded):
    p = loaded.predictions
    validation = loaded.manifest["data"]["validation"]
    assert len(p.labels) == validation["images"]
    assert int(p.labels.sum()) == validation["malignant"]
    np.testing.assert_allclose(
        p.probabilities, metrics.sigmoid((p.logits - loaded.manifest["logit_offset"]) / loaded.temperature),
        atol=1e-6)


def test_stored_predictions_reproduce_the_validation_auc(loaded):
    p = loaded.predictions
    recorded = loaded.manifest["validation_metrics"]["roc_auc"]["value"]
    # Exact for full-precision files; a little slack for files rounded to 6 decimals.
    assert metrics.roc_auc(p.labels, p.probabilities) == pytest.approx(recorded, abs=1e-4)


def test_stored_predictions_reproduce_the_threshold_sensitivity(loaded):
    recorded = loaded.manifest["validation_metrics"]["at_threshold"]["sensitivity"]
    caught, positives = sensitivity_at(loaded.predictions, loaded.threshold)
    assert (caught, positives) == (recorded["successes"], recorded["total"])


def test_threshold_meets_the_target_sensitivity(loaded):
    target = loaded.manifest["threshold"]["target_sensitivity"]
    caught, positives = sensitivity_at(loaded.predictions, loaded.threshold)
    assert caught / positives >= target


@pytest.mark.real_data
def test_the_compiled_pass_reproduces_the_stored_predictions(loaded):
    """The app's folded, compiled pass (`ModelRunner`) against the logits stored at
    training time, on the 12 validation images nearest the threshold (where a difference
    would change a decision) and 12 spread over the rest."""
    if not ISIC.is_dir():
        pytest.skip(f"ISIC 2017 images not found at {ISIC}")
    from medal_core import data
    from medal_core.inference import ModelRunner

    p = loaded.predictions
    nearest = np.argsort(np.abs(p.probabilities - loaded.threshold))[:12]
    chosen = np.union1d(nearest, np.linspace(0, len(p.labels) - 1, 12).round().astype(int))
    paths = {Path(path).stem: path for path in data.load_dataset(ISIC).paths}
    runner = ModelRunner(loaded.model)
    images = data.load_images([paths[image_id] for image_id in p.image_ids[chosen]], runner.input_size)
    logits, _ = runner(images, views=loaded.manifest["test_time_views"])
    logits = logits if logits.ndim == 1 else logits.mean(axis=1)
    np.testing.assert_allclose(logits, p.logits[chosen], atol=1e-4)
    np.testing.assert_array_equal(loaded.calibrate(logits) >= loaded.threshold,
                                  p.probabilities[chosen] >= loaded.threshold)


def test_bundle_folder_is_small_enough_to_commit(loaded):
    # checkpoints/ is git-ignored: only the bundle's own files are committed.
    files = [f for f in loaded.folder.rglob("*")
             if f.is_file() and "checkpoints" not in f.relative_to(loaded.folder).parts]
    names = {f.name for f in files}
    assert {bundle.MODEL_FILE, bundle.MANIFEST_FILE, bundle.PREDICTIONS_FILE} <= names
    total = sum(f.stat().st_size for f in files)
    assert total < MAX_BUNDLE_BYTES, f"{loaded.folder} holds {total / 2**20:.1f} MiB"
