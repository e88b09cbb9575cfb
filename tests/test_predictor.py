"""Predictor on a bundle written by training, and the Prediction result object's logic."""

import shutil

import cv2
import numpy as np
import pytest
from app_helpers import make_screen, record_screen

from medal_core.bundles.bundle import load_bundle
from medal_core.data.datasets import resize_for_model
from medal_core.evaluation.metrics import sigmoid
from medal_core.modeling.architectures import logit_model
from medal_core.modeling.runner import DIHEDRAL_VIEWS
from medal_core.screening.quality import assess_quality
from medal_core.serving.predictor import Prediction, Predictor
from medal_views.results import VERDICTS, verdict_text

ATOL = 1e-5


@pytest.fixture(scope="module")
def predictor(trained_tiny_bundle, tmp_path_factory) -> Predictor:
    """The trained tiny bundle with the tiny test screen beside it (at another input size
    than the model's, so the screen gets its own resized copy)."""
    folder = tmp_path_factory.mktemp("predictor_models") / "tiny"
    shutil.copytree(trained_tiny_bundle, folder)
    record_screen(folder, make_screen(folder.parent / "screening"))
    return Predictor.from_folder(folder)


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A lesion-ish uint8 RGB picture: a dark blob on skin tones, with seeded texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    blob = ((y - height * 0.45) / (height * 0.3)) ** 2 + ((x - width * 0.55) / (width * 0.25)) ** 2 < 1
    rgb = np.empty((height, width, 3), np.float32)
    rgb[...] = (205, 160, 135)
    rgb[blob] = (110, 70, 50)
    rgb += rng.normal(0, 12, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def independent_probability(predictor: Predictor, rgb: np.ndarray):
    """(probability, mean view logit, 8 view probabilities) computed from the Keras model
    directly, with NumPy views — no ModelRunner involved."""
    bundle = predictor.bundle
    size = bundle.manifest["input_size"]
    resized = resize_for_model(rgb, size)[None]
    image = resized.astype(np.float32)
    mirrored = image[:, :, ::-1]
    views = [np.rot90(image, k, axes=(1, 2)) for k in range(4)] + [
        np.rot90(mirrored, k, axes=(1, 2)) for k in range(4)
    ]
    raw = logit_model(bundle.model)
    logits = np.array([raw([np.ascontiguousarray(v)]).numpy()[0, 0] for v in views])
    temperature = bundle.manifest["temperature"]
    logits = logits - bundle.manifest.get("logit_offset", 0.0)  # the class-weighting shift
    return (
        float(sigmoid(logits.mean() / temperature)),
        float(logits.mean() + bundle.logit_offset),
        sigmoid(logits / temperature),
    )


# ---------------------------------------------------------------- Prediction logic


def made(
    probability=0.5, threshold=0.4, views=(0.3, 0.6), ood_score=None, band_ratio=1.5, clinical_score=None
):
    """A hand-made Prediction; `views` are the view probabilities (only min/max matter)."""
    return Prediction(
        probability=probability,
        logit=0.0,
        threshold=threshold,
        view_probabilities=np.array(views, dtype=float),
        ood_score=ood_score,
        quality=assess_quality(photo(256, 256)),
        band_ratio=band_ratio,
        clinical_score=clinical_score,
        clinical_limit=0.5,
    )


# threshold 0.4 (odds 2/3); band ratio 1.5 -> band up to odds 1, i.e. probability 0.5.
@pytest.mark.parametrize(
    "probability, views, onward, code",
    [
        (0.10, (0.05, 0.20), False, "low"),
        (0.399, (0.20, 0.60), False, "low"),  # views straddle: the estimate decides
        (0.40, (0.40, 0.40), True, "indeterminate"),  # on the threshold: onward, borderline
        (0.49, (0.30, 0.60), True, "indeterminate"),
        (0.50, (0.45, 0.55), True, "refer"),  # top of the band
        (0.80, (0.60, 0.90), True, "refer"),
    ],
)
def test_the_verdict_is_the_decision_policys(probability, views, onward, code):
    p = made(probability, 0.4, views)
    assert p.spread == (min(views), max(views))
    assert p.onward is onward
    assert p.has_estimate
    assert p.verdict_code == code
    assert verdict_text(p) == VERDICTS[code]


@pytest.mark.parametrize(
    "score, lesion", [(None, True), (0.0, True), (0.5, True), (1.0, True), (1.005, False), (40.0, False)]
)
def test_no_estimate_when_the_ood_score_exceeds_one(score, lesion):
    for probability, views in ((0.9, (0.8, 0.95)), (0.45, (0.2, 0.5)), (0.1, (0.05, 0.2))):
        p = made(probability, 0.4, views, ood_score=score)
        assert p.looks_like_lesion is lesion
        if not lesion:  # overrides every other verdict
            assert (p.verdict_code, p.no_estimate_reason) == ("no_estimate", "not_lesion")
            assert p.onward and not p.has_estimate
            assert "Not recognised as a dermoscopic lesion image" in verdict_text(p)
        else:
            assert p.verdict_code != "no_estimate"


def test_no_estimate_for_a_clinical_photo():
    p = made(0.05, 0.4, (0.01, 0.1), clinical_score=0.9)
    assert (p.verdict_code, p.no_estimate_reason) == ("no_estimate", "not_dermoscopic")
    assert "dermatoscope" in verdict_text(p) and p.onward
    assert made(0.05, 0.4, (0.01, 0.1), clinical_score=0.4).verdict_code == "low"


# ---------------------------------------------------------------- Predictor


def test_predictor_refuses_a_bundle_without_its_model(trained_tiny_bundle):
    with pytest.raises(ValueError, match="without its model"):
        Predictor(load_bundle(trained_tiny_bundle, load_model=False))


def test_predictor_is_traced_once_at_construction(predictor):
    assert predictor.runner.tracing_count == 1
    assert predictor.input_size == 32
    assert predictor.default_threshold == predictor.bundle.threshold


@pytest.mark.parametrize("height, width", [(32, 32), (300, 200), (40, 120), (257, 511), (17, 9)])
def test_probability_is_the_calibrated_mean_over_the_eight_views(predictor, height, width):
    assert predictor.bundle.manifest["test_time_views"] == DIHEDRAL_VIEWS
    rgb = photo(height, width, seed=height)
    result = predictor.predict(rgb)
    expected, mean_logit, view_probabilities = independent_probability(predictor, rgb)
    assert isinstance(result, Prediction)
    assert result.probability == pytest.approx(expected, abs=ATOL)
    assert result.logit == pytest.approx(mean_logit, abs=ATOL)
    assert sigmoid(
        (result.logit - predictor.bundle.logit_offset) / predictor.bundle.temperature
    ) == pytest.approx(result.probability)
    assert result.view_probabilities.shape == (DIHEDRAL_VIEWS,)
    np.testing.assert_allclose(result.view_probabilities, view_probabilities, atol=ATOL)
    assert np.all((result.view_probabilities >= 0) & (result.view_probabilities <= 1))
    low, high = result.spread
    assert low - 1e-9 <= result.probability <= high + 1e-9
    assert result.threshold == predictor.default_threshold
    # The screen's scores, from its (batch-norm-folded) Keras model called directly on a copy at its size.
    screen = predictor.bundle.screen
    screen_image = resize_for_model(rgb, screen.input_size)[None]
    expected_scores = screen.screen.scores(
        screen.runner.model(screen_image.astype(np.float32)).numpy(), screen_image
    )
    assert isinstance(result.ood_score, float) and np.isfinite(result.ood_score)
    assert result.ood_score >= 0
    assert result.ood_score == pytest.approx(float(expected_scores.ood[0]), rel=1e-4, abs=1e-4)
    assert result.clinical_score == pytest.approx(float(expected_scores.clinical[0]), rel=1e-4, abs=1e-4)
    assert result.clinical_limit == screen.screen.modality.limit
    assert result.looks_like_lesion is (result.ood_score <= 1.0)
    assert result.has_estimate is not bool(expected_scores.no_estimate[0])


def test_the_verdict_follows_the_estimate_and_the_band_not_the_views(predictor):
    rgb = photo(64, 64, seed=5)
    result = predictor.predict(rgb)
    p, ratio = result.probability, predictor.band_ratio
    odds_below_band = p / (1 - p) / (ratio * 1.01)  # a threshold whose band ends below p
    cases = [
        (min(1.0, p + 1e-3), "low"),
        (p, "indeterminate"),
        (odds_below_band / (1 + odds_below_band), "refer"),
    ]
    for threshold, expected in cases:
        judged = predictor.predict(rgb, threshold)
        assert judged.spread == result.spread and judged.probability == result.probability
        if judged.has_estimate:
            assert judged.verdict_code == expected, threshold


def test_a_custom_threshold_changes_the_decision_not_the_probability(predictor):
    rgb = photo(100, 80, seed=7)
    default = predictor.predict(rgb)
    below = predictor.predict(rgb, threshold=max(0.0, default.probability - 0.01))
    above = predictor.predict(rgb, threshold=min(1.0, default.probability + 0.01))
    assert below.probability == above.probability == default.probability
    np.testing.assert_array_equal(below.view_probabilities, default.view_probabilities)
    assert below.onward
    assert above.verdict_code == ("low" if default.has_estimate else "no_estimate")
    assert predictor.predict(rgb, threshold=0.0).onward
    assert predictor.predict(rgb, threshold=1).onward is (
        default.probability >= 1 or not default.has_estimate
    )


@pytest.mark.parametrize("threshold", [-0.01, 1.01, 5, float("nan")])
def test_threshold_outside_zero_one_is_refused(predictor, threshold):
    with pytest.raises(ValueError, match="threshold must be in"):
        predictor.predict(photo(32, 32), threshold)
    with pytest.raises(ValueError, match="threshold must be in"):
        predictor.predict_batch([photo(32, 32)], threshold)


def test_custom_cnn_gets_its_grad_cam_from_a_gradient_pass_not_the_prediction(predictor):
    # Its Grad-CAM layer (block5_gelu) sits before its last max pooling, where the
    # logit's gradient is not the head's kernel: the page asks GradCAM instead.
    image = photo(60, 80)
    prediction, pair = predictor.predict_and_explain(image)
    assert not predictor.explains_with_its_pass and pair is None
    assert prediction.probability == predictor.predict(image).probability
    assert predictor.runner.tracing_count == 1  # the one pass serves both


def test_predict_batch_equals_predict_one_by_one(predictor):
    images = [
        photo(h, w, seed=i) for i, (h, w) in enumerate([(32, 32), (64, 48), (20, 90), (256, 256), (33, 31)])
    ]
    batch = predictor.predict_batch(images, threshold=0.3, batch_size=2)
    assert len(batch) == len(images)
    for rgb, together in zip(images, batch):
        alone = predictor.predict(rgb, threshold=0.3)
        assert together.probability == pytest.approx(alone.probability, abs=ATOL)
        assert together.logit == pytest.approx(alone.logit, abs=ATOL)
        np.testing.assert_allclose(together.view_probabilities, alone.view_probabilities, atol=ATOL)
        assert together.ood_score == pytest.approx(alone.ood_score, rel=1e-4, abs=1e-4)
        assert together.quality == alone.quality
        assert together.threshold == alone.threshold == 0.3
    assert predictor.predict_batch([]) == []
    assert predictor.runner.tracing_count == 1  # no retracing for new batch sizes


def test_the_quality_report_is_attached(predictor):
    sharp = photo(300, 300, seed=11)
    blurred = cv2.GaussianBlur(sharp, (0, 0), sigmaX=6)
    assert predictor.predict(sharp).quality == assess_quality(sharp)
    assert "blurred" not in predictor.predict(sharp).quality.codes
    result = predictor.predict(blurred)
    assert "blurred" in result.quality.codes
    assert result.quality == assess_quality(blurred)
    assert "low_resolution" in predictor.predict(photo(100, 300)).quality.codes


def test_single_view_bundle_without_a_screen_uses_the_unmodified_view(tiny_bundle):
    """The shared `tiny_bundle` validated with 1 view and records no screen."""
    predictor = Predictor.from_folder(tiny_bundle)
    rgb = photo(50, 70, seed=3)
    result = predictor.predict(rgb)
    view_logits, _ = predictor.runner(resize_for_model(rgb, 32)[None], DIHEDRAL_VIEWS)
    assert result.logit == pytest.approx(float(view_logits[0, 0]), abs=ATOL)
    assert result.probability == pytest.approx(float(sigmoid(view_logits[0, 0] / 1.5)), abs=ATOL)
    assert result.ood_score is None
    assert result.has_estimate and result.verdict_code != "no_estimate"
