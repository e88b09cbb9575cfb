"""The committed model bundles in models/: they load, and their stored predictions
reproduce the figures in their manifests (no images needed); with the datasets beside
the project, the app's compiled pass reproduces those predictions and the bundle's data
roles are rebuilt image for image."""

from pathlib import Path

import numpy as np
import pytest

from medal_core.bundles import bundle
from medal_core.evaluation import decision, metrics

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BUNDLES = bundle.find_bundles(MODELS_DIR)
MAX_BUNDLE_BYTES = 40 * 1024 * 1024

if not BUNDLES:
    pytest.skip(
        f"no trained bundles yet ({MODELS_DIR}/*/manifest.json not found); "
        "they are checked here once written",
        allow_module_level=True,
    )


@pytest.fixture(scope="module", params=BUNDLES, ids=[b.name for b in BUNDLES])
def loaded(request) -> bundle.Bundle:
    """Each bundle loaded once, model included: the sha256 of model.keras is verified and
    the model is read in safe mode."""
    return bundle.load_bundle(request.param)


def onward(predictions: bundle.Predictions, threshold: float) -> tuple[int, int]:
    """(melanomas the app sends onwards, melanomas) at `threshold`."""
    scores = decision.onward_scores(predictions.probabilities, predictions.no_estimate)
    positives = scores[predictions.labels == 1]
    return int(np.sum(positives >= threshold)), len(positives)


def test_bundle_loads_with_its_model_and_checks(loaded):
    size = loaded.manifest["input_size"]
    assert loaded.model.input_shape == (None, size, size, 3)
    assert loaded.manifest["model_sha256"] == bundle.sha256_file(loaded.folder / bundle.MODEL_FILE)
    assert loaded.report_predictions is not None
    # Calibrated with the committed shared screen, which loads with it.
    assert loaded.screen is not None and loaded.screen.folder.name == "screening"
    assert loaded.manifest["screening"]["sha256"] == loaded.screen.manifest_sha256


def test_stored_predictions_match_the_roles_and_the_temperature(loaded):
    roles = loaded.manifest["data"]["roles"]
    for predictions, role in ((loaded.predictions, "calibration"), (loaded.report_predictions, "report")):
        assert len(predictions.labels) == roles[role]["images"]
        assert int(predictions.labels.sum()) == roles[role]["malignant"]
        np.testing.assert_allclose(predictions.probabilities, loaded.calibrate(predictions.logits), atol=1e-6)
    # No image plays two roles.
    assert not set(loaded.predictions.image_ids) & set(loaded.report_predictions.image_ids)


def test_stored_predictions_reproduce_the_manifests_aucs(loaded):
    for predictions, key in (
        (loaded.predictions, "validation_metrics"),
        (loaded.report_predictions, "report_metrics"),
    ):
        recorded = loaded.manifest[key]["roc_auc"]["value"]
        assert metrics.roc_auc(predictions.labels, predictions.probabilities) == pytest.approx(
            recorded, abs=1e-9
        )


def test_the_app_rule_meets_the_target_where_the_threshold_was_chosen(loaded):
    """On the calibration images the threshold was chosen on (all, or those of the
    sources named in the manifest), the app sends >= the target of melanomas onwards."""
    import dataclasses

    target = loaded.manifest["threshold"]["target_sensitivity"]
    sources = loaded.manifest["decision"]["threshold_set"]["sources"]
    p = loaded.predictions
    chosen = np.isin(p.sources, sources) if isinstance(sources, list) else np.ones(len(p.labels), bool)
    subset = dataclasses.replace(
        p, labels=p.labels[chosen], probabilities=p.probabilities[chosen], no_estimate=p.no_estimate[chosen]
    )
    caught, positives = onward(subset, loaded.threshold)
    assert caught / positives >= target
    assert positives == loaded.manifest["decision"]["threshold_set"]["melanomas"]
    recorded = loaded.manifest["decision"]["rule"]["calibration"]["melanomas_onward"]
    assert onward(p, loaded.threshold) == (recorded["count"], recorded["of"])


def test_the_report_rule_figures_reproduce_from_the_stored_predictions(loaded):
    p = loaded.report_predictions
    entry = loaded.manifest["decision"]
    counts = decision.rule_counts(
        p.labels, p.probabilities, loaded.threshold, entry["band_ratio"], p.no_estimate
    )
    for key in ("verdicts", "melanomas_onward", "benign_reassured"):
        recorded = entry["rule"]["report"][key]
        got = counts[key]
        if key == "verdicts":
            assert got == recorded
        else:
            assert (got["count"], got["of"]) == (recorded["count"], recorded["of"])


def test_no_case_sits_on_the_threshold(loaded):
    assert not np.any(np.isclose(loaded.predictions.probabilities, loaded.threshold, rtol=0, atol=1e-9))


@pytest.mark.real_data
def test_the_compiled_pass_reproduces_the_stored_predictions(loaded):
    """The app's folded, compiled pass (`ModelRunner`) against the logits stored at
    calibration time, on the 12 calibration images nearest the threshold (where a
    difference would change a decision) and 12 spread over the rest."""
    if not (SHARED_DATA / "isic2017").is_dir():
        pytest.skip(f"the datasets are not in {SHARED_DATA}")
    from medal_core.data import datasets as data
    from medal_core.data import roles
    from medal_core.modeling.runner import ModelRunner

    calibration = roles.bundle_roles(loaded.manifest, SHARED_DATA).role("calibration")
    p = loaded.predictions
    assert list(calibration.image_ids) == list(p.image_ids)
    nearest = np.argsort(np.abs(p.probabilities - loaded.threshold))[:12]
    chosen = np.union1d(nearest, np.linspace(0, len(p.labels) - 1, 12).round().astype(int))
    runner = ModelRunner(loaded.model)
    images = data.load_images(calibration.paths[chosen], runner.input_size)
    logits, _ = runner(images, views=loaded.manifest["test_time_views"])
    logits = logits if logits.ndim == 1 else logits.mean(axis=1)
    np.testing.assert_allclose(logits, p.logits[chosen], atol=1e-4)
    np.testing.assert_array_equal(
        loaded.calibrate(logits) >= loaded.threshold, p.probabilities[chosen] >= loaded.threshold
    )


def test_bundle_folder_is_small_enough_to_commit(loaded):
    # checkpoints/ is git-ignored: only the bundle's own files are committed.
    files = [
        f
        for f in loaded.folder.rglob("*")
        if f.is_file() and "checkpoints" not in f.relative_to(loaded.folder).parts
    ]
    names = {f.name for f in files}
    assert {
        bundle.MODEL_FILE,
        bundle.MANIFEST_FILE,
        bundle.PREDICTIONS_FILE,
        bundle.REPORT_PREDICTIONS_FILE,
    } <= names
    total = sum(f.stat().st_size for f in files)
    assert total < MAX_BUNDLE_BYTES, f"{loaded.folder} holds {total / 2**20:.1f} MiB"


def test_the_apps_first_choice_of_bundle_is_committed_and_usable():
    from medal_views import catalog

    found = catalog.scan(MODELS_DIR)
    assert found.broken == []
    assert found.default_name() == catalog.PREFERRED_BUNDLES[0]


def test_the_apps_default_bundle_explains_with_its_prediction_pass():
    """The Triage page's heatmap for the default bundle comes with the prediction
    (`Predictor.predict_and_explain`): it must be the gradient pass's Grad-CAM."""
    from medal_core.data.datasets import resize_for_model
    from medal_core.explain.gradcam import DIRECTIONS, GradCAM
    from medal_core.serving.predictor import Predictor
    from medal_views import catalog

    predictor = Predictor.from_folder(MODELS_DIR / catalog.PREFERRED_BUNDLES[0])
    assert predictor.explains_with_its_pass
    image = np.random.default_rng(7).uniform(60, 220, (300, 400, 3)).astype(np.uint8)
    resized = resize_for_model(image, predictor.input_size)
    prediction, pair = predictor.predict_and_explain(image, resized=resized)
    assert prediction.probability == predictor.predict(image).probability
    cam = GradCAM(predictor.bundle.model, predictor.bundle.manifest["gradcam_layer"])
    reference = cam.explain_estimate(resized)
    assert pair is not None and pair.scale == pytest.approx(reference.scale, rel=1e-4)
    for direction in DIRECTIONS:
        np.testing.assert_allclose(pair[direction], reference[direction], atol=1e-4)
