"""The decision policy: one rule, and figures that describe exactly that rule."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from medal_core.evaluation import decision, metrics
from medal_core.evaluation.decision import (
    INDETERMINATE,
    LOW,
    NO_ESTIMATE,
    NOT_DERMOSCOPIC,
    NOT_LESION,
    REFER,
    Verdict,
    decide,
)


def test_each_verdict_and_its_reason():
    assert decide(0.01, 0.1) == Verdict(LOW)
    assert decide(0.1, 0.1, 1.5) == Verdict(INDETERMINATE)  # on the threshold: onward
    assert decide(0.5, 0.1, 1.5) == Verdict(REFER)
    assert decide(None, 0.1, looks_like_lesion=False) == Verdict(NO_ESTIMATE, NOT_LESION)
    assert decide(0.9, 0.1, looks_dermoscopic=False) == Verdict(NO_ESTIMATE, NOT_DERMOSCOPIC)
    assert [v.onward for v in (decide(0.01, 0.1), decide(0.5, 0.1))] == [False, True]
    with pytest.raises(ValueError, match="finite probability"):
        decide(float("nan"), 0.1)


def test_band_upper_scales_the_odds():
    upper = decision.band_upper(0.2, 2.0)  # odds 0.25 -> 0.5
    assert upper == pytest.approx(1 / 3)
    assert decision.band_upper(0.2, 1.0) == pytest.approx(0.2)  # no band
    assert decision.band_upper(1.0, 3.0) == 1.0
    with pytest.raises(ValueError):
        decision.band_upper(0.2, 0.5)


def test_decide_many_agrees_with_decide():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    skip = rng.uniform(size=500) < 0.1
    codes = decision.decide_many(p, 0.3, 1.7, skip)
    for pi, si, code in zip(p, skip, codes):
        assert decide(pi, 0.3, 1.7, looks_like_lesion=not si).code == code


def test_the_rule_counts_are_the_explorer_figures_when_every_image_gets_an_estimate():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    p = np.clip(rng.normal(0.3 + 0.3 * labels, 0.2), 0, 1)
    counts = decision.rule_counts(labels, p, 0.35, 1.5)
    at = metrics.threshold_metrics(labels, p, 0.35)
    assert counts["melanomas_onward"]["share"] == pytest.approx(at["sensitivity"].value)
    assert counts["benign_reassured"]["share"] == pytest.approx(at["specificity"].value)
    total = sum(v["melanoma"] + v["benign"] for v in counts["verdicts"].values())
    assert total == 400


def test_no_estimate_melanomas_count_as_sent_onwards_and_benign_as_not_reassured():
    labels = np.array([1, 1, 0, 0])
    p = np.array([0.01, 0.9, 0.01, 0.01])
    skip = np.array([True, False, True, False])
    counts = decision.rule_counts(labels, p, 0.5, 1.0, skip)
    assert counts["melanomas_onward"] == {"count": 2, "of": 2, "share": 1.0}
    assert counts["benign_reassured"] == {"count": 1, "of": 2, "share": 0.5}
    assert counts["verdicts"][NO_ESTIMATE] == {"melanoma": 1, "benign": 1}


def test_the_app_threshold_meets_the_target_counting_no_estimates():
    rng = np.random.default_rng(2)
    labels = np.array([1] * 40 + [0] * 160)
    p = np.clip(rng.normal(0.2 + 0.4 * labels, 0.15), 0.001, 0.999)
    skip = rng.uniform(size=200) < 0.05
    for target in (0.8, 0.9, 0.95):
        t = decision.app_threshold(labels, p, target, skip)
        counts = decision.rule_counts(labels, p, t, 1.0, skip)
        assert counts["melanomas_onward"]["share"] >= target
        # The highest such threshold: the next estimated melanoma above it would miss.
        assert not np.any(np.isclose(p[~skip], t))


def test_sensitivity_lower_bound_is_the_exact_clopper_pearson_bound():
    bound = decision.sensitivity_lower_bound(82, 86, 0.95)
    # At the bound, catching 82 or more of 86 has probability exactly 5%.
    assert binom.sf(81, 86, bound) == pytest.approx(0.05, abs=1e-9)
    assert decision.sensitivity_lower_bound(0, 10) == 0.0
    assert decision.sensitivity_lower_bound(10, 10) == pytest.approx(0.05 ** (1 / 10))


def test_the_guaranteed_threshold_is_below_the_point_threshold_and_keeps_its_promise():
    rng = np.random.default_rng(3)
    labels = np.array([1] * 300 + [0] * 700)
    p = np.clip(rng.normal(0.25 + 0.35 * labels, 0.15), 0.001, 0.999)
    point = decision.app_threshold(labels, p, 0.9)
    guaranteed = decision.guaranteed_threshold(labels, p, 0.9, 0.95)
    assert guaranteed is not None and guaranteed < point
    caught = int(np.sum(p[labels == 1] >= guaranteed))
    assert decision.sensitivity_lower_bound(caught, 300, 0.95) >= 0.9
    # Too few melanomas to promise 99% sensitivity with 95% confidence.
    assert decision.guaranteed_threshold(np.ones(50, int), p[:50], 0.99) is None


def test_the_guarantee_holds_on_new_cases_about_as_often_as_promised():
    """Simulated calibration sets from one distribution: the guaranteed threshold's true
    sensitivity is >= the target in at least ~95% of them."""
    rng = np.random.default_rng(4)
    true_scores = rng.beta(5, 2, 200_000)  # melanoma scores of the population
    held = []
    for _ in range(200):
        labels = np.array([1] * 120 + [0] * 10)
        p = np.concatenate([rng.choice(true_scores, 120), rng.uniform(size=10)])
        t = decision.guaranteed_threshold(labels, p, 0.85, 0.95)
        held.append(np.mean(true_scores >= t) >= 0.85)
    assert np.mean(held) >= 0.93


def test_threshold_band_ratio_is_wider_for_fewer_melanomas():
    rng = np.random.default_rng(5)

    def ratio(n_mel):
        labels = np.array([1] * n_mel + [0] * (4 * n_mel))
        p = np.clip(rng.normal(0.25 + 0.35 * labels, 0.15), 0.001, 0.999)
        return decision.threshold_band_ratio(labels, p, 0.95, n_resamples=300)

    small, large = ratio(30), ratio(1000)
    assert small > large >= 1.0
    assert math.isfinite(small)
