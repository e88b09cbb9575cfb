"""Metrics against scikit-learn on random data, and against hand-worked cases."""

import math

import numpy as np
import pytest
from sklearn import metrics as sk

from medal_core.evaluation import metrics

SEEDS = [0, 1, 2, 3, 4]


def random_case(seed: int, n: int = 200, ties: bool = False):
    """Labels with ~30% positives and scores that are informative but overlap; with
    `ties`, scores are rounded to one decimal so that many cases share a score."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    y[:2] = [0, 1]
    scores = metrics.sigmoid(rng.normal(0, 1, n) + 1.2 * y)
    return y, (np.round(scores, 1) if ties else scores)


CASES = [
    pytest.param(seed, ties, id=f"seed{seed}{'-ties' if ties else ''}")
    for seed in SEEDS
    for ties in (False, True)
]


# ---------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("seed, ties", CASES)
def test_ranking_metrics_agree_with_sklearn(seed, ties):
    y, s = random_case(seed, ties=ties)
    assert metrics.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert metrics.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)

    fpr, tpr, thresholds = metrics.roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thresholds = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert thresholds[0] == np.inf and (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])
    assert np.all(np.diff(thresholds) < 0)


@pytest.mark.parametrize("seed, ties", CASES)
def test_precision_recall_curve_agrees_with_sklearn(seed, ties):
    y, s = random_case(seed, ties=ties)
    precision, recall, thresholds = metrics.precision_recall_curve(y, s)
    sk_precision, sk_recall, sk_thresholds = sk.precision_recall_curve(y, s, drop_intermediate=False)
    # sklearn orders by increasing threshold and appends the (precision 1, recall 0) point.
    np.testing.assert_allclose(precision, sk_precision[:-1][::-1])
    np.testing.assert_allclose(recall, sk_recall[:-1][::-1])
    np.testing.assert_allclose(thresholds, sk_thresholds[::-1])


@pytest.mark.parametrize("seed, ties", CASES)
def test_confusion_at_agrees_with_sklearn(seed, ties):
    y, s = random_case(seed, ties=ties)
    for threshold in (0.0, 0.3, 0.5, float(np.median(s)), 0.7, 1.01):
        expected = sk.confusion_matrix(y, (s >= threshold).astype(int), labels=[0, 1])
        np.testing.assert_array_equal(metrics.confusion_at(y, s, threshold).as_matrix(), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_per_class_report_matches_classification_report(seed):
    y, s = random_case(seed)
    rows = metrics.per_class_report(y, s, 0.5)
    expected = sk.classification_report(
        y,
        (s >= 0.5).astype(int),
        labels=[0, 1],
        target_names=["benign", "malignant"],
        output_dict=True,
        zero_division=0,
    )
    assert [row["class"] for row in rows] == ["benign", "malignant"]
    for row in rows:
        theirs = expected[row["class"]]
        for key in ("precision", "recall", "f1"):
            assert row[key] == pytest.approx(theirs[key if key != "f1" else "f1-score"], abs=1e-12)
        assert row["support"] == theirs["support"]


def test_per_class_report_when_nothing_is_called_malignant():
    rows = metrics.per_class_report([0, 0, 1], [0.1, 0.2, 0.3], 0.9)
    assert rows[1] == {"class": "malignant", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rows[0]["recall"] == 1.0 and rows[0]["precision"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_brier_and_log_loss_agree_with_sklearn(seed):
    y, s = random_case(seed)
    assert metrics.brier_score(y, s) == pytest.approx(sk.brier_score_loss(y, s), abs=1e-12)
    assert metrics.log_loss(y, s) == pytest.approx(sk.log_loss(y, s), abs=1e-10)


def test_f1_at_agrees_with_sklearn():
    y, s = random_case(9)
    assert metrics.f1_at(y, s, 0.6) == pytest.approx(sk.f1_score(y, s >= 0.6))
    assert metrics.f1_at([0, 0, 1], [0.1, 0.2, 0.3], 0.9) == 0.0


# ---------------------------------------------------------------- hand-worked cases


@pytest.mark.parametrize(
    "successes, total, expected",
    [
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (5, 10, (0.2366, 0.7634)),
        (81, 100, (0.7222, 0.8749)),
    ],
)
def test_wilson_interval_known_values(successes, total, expected):
    low, high = metrics.wilson_interval(successes, total)
    assert (low, high) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_edge_cases():
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))
    with pytest.raises(ValueError, match=r"successes must be in \[0, 10\], got 11"):
        metrics.wilson_interval(11, 10)
    narrow, wide = metrics.wilson_interval(5, 10, level=0.8), metrics.wilson_interval(5, 10, level=0.99)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]


HAND_Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
HAND_S = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1, 0.1, 0.05])


def test_threshold_metrics_on_a_hand_made_example():
    # At 0.5: positives 0.9, 0.8, 0.7 called (tp 3), 0.3 missed (fn 1); negative 0.6
    # called (fp 1), five others not (tn 5).
    assert metrics.confusion_at(HAND_Y, HAND_S, 0.5) == metrics.Confusion(tp=3, fp=1, tn=5, fn=1)
    result = metrics.threshold_metrics(HAND_Y, HAND_S, 0.5)
    expected = {
        "sensitivity": (3, 4),
        "specificity": (5, 6),
        "ppv": (3, 4),
        "npv": (5, 6),
        "accuracy": (8, 10),
    }
    for name, (successes, total) in expected.items():
        estimate = result[name]
        assert (estimate.successes, estimate.total) == (successes, total), name
        assert estimate.value == pytest.approx(successes / total)
        assert (estimate.low, estimate.high) == pytest.approx(metrics.wilson_interval(successes, total))
    f1 = result["f1"]
    assert f1.value == pytest.approx(0.75)  # 2·3 / (2·3 + 1 + 1)
    assert 0 <= f1.low <= f1.value <= f1.high <= 1


def test_threshold_is_inclusive():
    c = metrics.confusion_at(HAND_Y, HAND_S, 0.3)
    assert (c.tp, c.fn) == (4, 0)


def test_predictive_values_and_natural_frequencies_hand_worked():
    # Per 1000 people at 10% prevalence: 100 melanomas, 90 caught; 900 benign, 180 referred.
    ppv, npv = metrics.predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.18)) and ppv == pytest.approx(1 / 3)
    assert npv == pytest.approx(0.72 / (0.72 + 0.01))
    freq = metrics.natural_frequencies(0.9, 0.8, 0.1, patients=1000)
    assert freq.as_dict() == pytest.approx(
        {
            "patients": 1000,
            "with_melanoma": 100,
            "referred": 270,
            "melanomas_caught": 90,
            "melanomas_missed": 10,
            "benign_referred": 180,
            "benign_reassured": 720,
        }
    )
    assert freq.melanomas_caught / freq.referred == pytest.approx(ppv)
    with pytest.raises(ValueError, match="prevalence must be in"):
        metrics.predictive_values(0.9, 0.8, 1.5)


@pytest.mark.parametrize(
    "sensitivity, specificity, prevalence",
    [
        (0.95, 0.40, 0.01),
        (0.5, 0.5, 0.191),
        (0.953, 0.368, 0.191),
        (0.99, 0.9, 0.003),
        (1.0, 0.0, 0.5),
        (0.0, 1.0, 0.05),
    ],
)
def test_natural_frequencies_are_whole_people_whose_parts_add_up(sensitivity, specificity, prevalence):
    f = metrics.natural_frequencies(sensitivity, specificity, prevalence)
    values = f.as_dict()
    assert all(isinstance(v, int) for v in values.values())
    assert f.melanomas_caught + f.melanomas_missed == f.with_melanoma
    assert f.benign_referred + f.benign_reassured == f.patients - f.with_melanoma
    assert f.referred == f.melanomas_caught + f.benign_referred


def test_natural_frequencies_grow_the_group_rather_than_round_half_a_person_away():
    # 10 melanomas per 1,000 at 95% sensitivity: 9.5 caught, 0.5 missed.
    f = metrics.natural_frequencies(0.95, 0.4, 0.01)
    assert (f.patients, f.with_melanoma, f.melanomas_caught, f.melanomas_missed) == (10_000, 100, 95, 5)
    assert metrics.natural_frequencies(0.9, 0.8, 0.1).patients == 1000


# ---------------------------------------------------------------- operating points


@pytest.mark.parametrize("seed, ties", CASES)
@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
def test_threshold_for_sensitivity_is_the_highest_meeting_the_target(seed, ties, target):
    y, s = random_case(seed, ties=ties)
    threshold = metrics.threshold_for_sensitivity(y, s, target)

    def sensitivity(t):
        return np.mean(s[y == 1] >= t)

    assert sensitivity(threshold) >= target
    next_score_up = s[s >= threshold].min()
    assert sensitivity(np.nextafter(next_score_up, np.inf)) < target
    assert not np.any(s == threshold) or threshold == s.min()  # on a score only at the bottom


def test_midway_below_keeps_the_decisions_and_leaves_a_margin():
    scores = np.array([0.1, 0.3, 0.3, 0.7, 0.9])
    assert metrics.midway_below(0.7, scores) == pytest.approx(0.5)
    assert metrics.midway_below(0.3, scores) == pytest.approx(0.2)
    assert metrics.midway_below(0.1, scores) == 0.1  # nothing below: unchanged
    for threshold in (0.3, 0.7, 0.9):
        moved = metrics.midway_below(threshold, scores)
        assert np.array_equal(scores >= moved, scores >= threshold)


def test_threshold_for_sensitivity_target_must_be_a_rate():
    with pytest.raises(ValueError, match=r"target sensitivity must be in \(0, 1\], got 0"):
        metrics.threshold_for_sensitivity(HAND_Y, HAND_S, 0)


@pytest.mark.parametrize("seed, ties", CASES)
def test_youden_threshold_maximises_tpr_minus_fpr(seed, ties):
    y, s = random_case(seed, ties=ties)
    threshold = metrics.youden_threshold(y, s)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    c = metrics.confusion_at(y, s, threshold)
    j = c.tp / (c.tp + c.fn) - c.fp / (c.fp + c.tn)
    assert j == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    assert np.isfinite(threshold)
    assert not np.any(s == threshold) or threshold == s.min()


# ---------------------------------------------------------------- calibration


def calibrated_case(seed=0, n=5000):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, n)
    y = (rng.uniform(size=n) < metrics.sigmoid(logits)).astype(int)
    return y, logits


def test_temperature_scaling_undoes_over_confidence():
    y, logits = calibrated_case()
    overconfident = 5 * logits
    temperature = metrics.fit_temperature(y, overconfident)
    assert temperature == pytest.approx(5, rel=0.15)
    before = metrics.log_loss(y, metrics.sigmoid(overconfident))
    after = metrics.log_loss(y, metrics.sigmoid(overconfident / temperature))
    assert after < before - 0.1
    assert metrics.roc_auc(y, metrics.sigmoid(overconfident / temperature)) == pytest.approx(
        metrics.roc_auc(y, overconfident), abs=1e-12
    )


def test_temperature_of_calibrated_logits_is_about_one():
    y, logits = calibrated_case(seed=1)
    assert metrics.fit_temperature(y, logits) == pytest.approx(1, rel=0.15)


def test_expected_calibration_error_small_when_calibrated_large_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 20000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert metrics.expected_calibration_error(y, p) < 0.02
    overconfident = metrics.sigmoid(5 * np.log(p / (1 - p)))
    assert metrics.expected_calibration_error(y, overconfident) > 0.1


def test_expected_calibration_error_hand_worked():
    # Bin [0.2, 0.3): mean 0.25, observed 0.5 → 0.25; bin [0.9, 1]: mean 1, observed 1 → 0.
    assert metrics.expected_calibration_error([0, 1, 1], [0.25, 0.25, 1.0]) == pytest.approx(2 / 3 * 0.25)


def test_sigmoid_is_stable_at_extremes():
    values = metrics.sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(values, [0.0, 0.5, 1.0])


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_the_auc_and_is_deterministic():
    y, s = random_case(0)
    auc = metrics.roc_auc(y, s)
    low, high = metrics.bootstrap_ci(y, s, n_resamples=300, seed=3)
    assert low < auc < high and high - low < 0.3
    assert metrics.bootstrap_ci(y, s, n_resamples=300, seed=3) == (low, high)
    assert metrics.bootstrap_ci(y, s, n_resamples=300, seed=4) != (low, high)


# ---------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "y, s, message",
    [
        ([0, 1, 1], [0.1, 0.2], "y_true has 3 entries but y_score has 2"),
        ([0, 1, 2], [0.1, 0.2, 0.3], r"y_true must contain only 0 and 1; found \[0 1 2\]"),
        ([0, 1, 1], [0.1, float("nan"), 0.3], "y_score contains NaN or infinite values"),
        ([0, 1, 1], [0.1, float("inf"), 0.3], "y_score contains NaN or infinite values"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "y_true must contain both classes for this metric"),
        ([], [], "no samples given"),
        ([[0, 1]], [[0.1, 0.2]], "must be 1-D"),
    ],
)
def test_invalid_inputs_are_refused_precisely(y, s, message):
    with pytest.raises(ValueError, match=message):
        metrics.roc_auc(y, s)


def test_threshold_counts_work_with_one_class_but_ranking_does_not():
    assert metrics.confusion_at([1, 1], [0.2, 0.8], 0.5) == metrics.Confusion(tp=1, fp=0, tn=0, fn=1)
    assert metrics.brier_score([0, 0], [0.0, 0.5]) == pytest.approx(0.125)
    for function in (metrics.average_precision, metrics.roc_curve, metrics.fit_temperature):
        with pytest.raises(ValueError, match="both classes"):
            function([0, 0], [0.2, 0.8])
