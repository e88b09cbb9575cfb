"""The decision policy: the one rule that turns an estimate and a threshold into what
the app tells a person, and the figures that describe exactly that rule.

Verdicts (codes are stable: the batch CSV, the service and the tests use them):

* ``refer`` — P(melanoma) at or above the borderline band: see a dermatologist.
* ``indeterminate`` — P(melanoma) at or above the threshold but inside the borderline
  band, where the threshold itself is uncertain: re-choosing it on resampled
  calibration data moves it this far (`threshold_band_ratio`). Sent onwards like a
  referral, worded as borderline.
* ``low`` — P(melanoma) below the threshold: low suspicion (the only reassuring verdict).
* ``no_estimate`` — no melanoma estimate at all, with a reason (not a lesion image, not
  a dermoscopic image). Always tells the person to have a clinician look.

So the threshold alone decides who is reassured: the sensitivity the explorer shows
for "probability >= threshold" is the share of melanomas the app sends onwards
(refer + indeterminate + no estimate), and its specificity is the share of benign
lesions told "low suspicion", once the no-estimate cases are counted (`rule_counts`).

Pure functions on floats and NumPy arrays; no TensorFlow, no UI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REFER, INDETERMINATE, LOW, NO_ESTIMATE = "refer", "indeterminate", "low", "no_estimate"
VERDICT_CODES = (NO_ESTIMATE, REFER, INDETERMINATE, LOW)  # most urgent first
ONWARD = (NO_ESTIMATE, REFER, INDETERMINATE)  # a clinician should look

# Why no estimate was given.
NOT_LESION, NOT_DERMOSCOPIC = "not_lesion", "not_dermoscopic"
# What a person should do next when no estimate is given (the app and the service say it).
NO_ESTIMATE_ADVICE = {
    NOT_LESION: (
        "This does not look like a dermoscopic image of a skin lesion, so no "
        "melanoma estimate is given. Upload a close-up dermoscopy photo of the "
        "lesion; if you are worried about a mole, have a clinician look at it."
    ),
    NOT_DERMOSCOPIC: (
        "This looks like an ordinary (clinical) photo of the skin, not a dermoscopic image. The "
        "model was only validated on dermoscopic images, so no melanoma estimate is given. Take "
        "the photo through a dermatoscope (a phone attachment works), or have a clinician look "
        "at the mole."
    ),
}

# The short label of each verdict, for tables and CSV files.
VERDICT_LABELS = {
    REFER: "Refer to a dermatologist",
    INDETERMINATE: "Borderline — see a dermatologist",
    LOW: "Low suspicion",
    NO_ESTIMATE: "No estimate — have a clinician look",
}

# Default borderline band (odds ratio) for bundles that do not record their own.
DEFAULT_BAND_RATIO = 1.5


@dataclass(frozen=True)
class Verdict:
    """What the app says about one image: a code from VERDICT_CODES and, for
    no_estimate, the reason (NOT_LESION or NOT_DERMOSCOPIC)."""

    code: str
    reason: str = ""

    @property
    def onward(self) -> bool:
        """True when a clinician should look (everything but "low")."""
        return self.code in ONWARD


def band_upper(threshold: float, band_ratio: float) -> float:
    """The top of the borderline band: the probability whose odds are `band_ratio`
    times the threshold's odds (1.0 for a threshold of 1)."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if band_ratio < 1:
        raise ValueError(f"band_ratio must be >= 1, got {band_ratio}")
    if threshold >= 1:
        return 1.0
    odds = threshold / (1 - threshold) * band_ratio
    return odds / (1 + odds)


def decide(
    probability: float | None,
    threshold: float,
    band_ratio: float = DEFAULT_BAND_RATIO,
    *,
    looks_like_lesion: bool = True,
    looks_dermoscopic: bool = True,
) -> Verdict:
    """The verdict for one image. `probability` may be None only with a no-estimate reason."""
    if not looks_like_lesion:
        return Verdict(NO_ESTIMATE, NOT_LESION)
    if not looks_dermoscopic:
        return Verdict(NO_ESTIMATE, NOT_DERMOSCOPIC)
    if probability is None or not math.isfinite(probability):
        raise ValueError("an image with an estimate needs a finite probability")
    if probability < threshold:
        return Verdict(LOW)
    return Verdict(INDETERMINATE if probability < band_upper(threshold, band_ratio) else REFER)


def decide_many(
    probabilities: np.ndarray,
    threshold: float,
    band_ratio: float = DEFAULT_BAND_RATIO,
    no_estimate: np.ndarray | None = None,
) -> np.ndarray:
    """(n,) verdict codes for (n,) probabilities; `no_estimate` (n,) bool marks images
    that get no estimate (their probability is ignored)."""
    p = np.asarray(probabilities, dtype=float)
    codes = np.where(
        p < threshold, LOW, np.where(p < band_upper(threshold, band_ratio), INDETERMINATE, REFER)
    )
    if no_estimate is not None:
        codes = np.where(np.asarray(no_estimate, bool), NO_ESTIMATE, codes)
    return codes.astype(object)


# ---------------------------------------------------------------- the rule's figures


def onward_scores(probabilities: np.ndarray, no_estimate: np.ndarray | None) -> np.ndarray:
    """Scores whose "score >= threshold" is the app's "sent onwards" at every threshold:
    an image with no estimate is always sent onwards, so it scores 1 (the highest)."""
    p = np.asarray(probabilities, dtype=float)
    return p if no_estimate is None else np.where(np.asarray(no_estimate, bool), 1.0, p)


def rule_counts(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    band_ratio: float = DEFAULT_BAND_RATIO,
    no_estimate: np.ndarray | None = None,
) -> dict:
    """How a labelled set fares under the app's rule.

    Returns per verdict the melanomas and benign lesions that land there, plus
    "melanomas_onward" (refer + indeterminate + no estimate: the app's sensitivity) and
    "benign_reassured" (told "low suspicion": the app's specificity), each as counts
    and shares.
    """
    labels = np.asarray(labels).astype(int)
    codes = decide_many(probabilities, threshold, band_ratio, no_estimate)
    melanoma, benign = labels == 1, labels == 0
    per_verdict = {
        code: {
            "melanoma": int(np.sum(melanoma & (codes == code))),
            "benign": int(np.sum(benign & (codes == code))),
        }
        for code in VERDICT_CODES
    }
    onward = int(np.sum(melanoma & np.isin(codes, ONWARD)))
    reassured = int(np.sum(benign & (codes == LOW)))
    n_mel, n_ben = int(melanoma.sum()), int(benign.sum())
    return {
        "threshold": float(threshold),
        "band_upper": band_upper(threshold, band_ratio),
        "verdicts": per_verdict,
        "melanomas_onward": {"count": onward, "of": n_mel, "share": onward / n_mel if n_mel else math.nan},
        "benign_reassured": {
            "count": reassured,
            "of": n_ben,
            "share": reassured / n_ben if n_ben else math.nan,
        },
    }


def app_threshold(
    labels: np.ndarray, probabilities: np.ndarray, target: float, no_estimate: np.ndarray | None = None
) -> float:
    """The highest threshold at which the app sends at least `target` of the melanomas
    onwards, counting those that get no estimate as sent onwards; midway between two
    scores so that no case sits on it."""
    labels = np.asarray(labels).astype(int)
    p = np.asarray(probabilities, dtype=float)
    skip = np.zeros(len(p), bool) if no_estimate is None else np.asarray(no_estimate, bool)
    n_mel = int(np.sum(labels == 1))
    if n_mel == 0:
        raise ValueError("need at least one melanoma to choose a threshold")
    needed = math.ceil(target * n_mel - 1e-9) - int(np.sum(skip & (labels == 1)))
    scores = np.sort(p[(labels == 1) & ~skip])[::-1]
    estimated = p[~skip]
    if needed <= 0:
        return float(min(1.0, np.nextafter(estimated.max(), np.inf))) if len(estimated) else 1.0
    return _midway_below(scores[needed - 1], estimated)


def _midway_below(value: float, scores: np.ndarray) -> float:
    below = scores[scores < value]
    return float((value + below.max()) / 2) if below.size else float(value)


def sensitivity_lower_bound(caught: int, melanomas: int, confidence: float = 0.95) -> float:
    """One-sided exact (Clopper–Pearson) lower confidence bound on sensitivity from
    `caught` of `melanomas`."""
    from scipy.stats import beta

    if not 0 <= caught <= melanomas or melanomas == 0:
        raise ValueError(f"need 0 <= caught <= melanomas > 0, got {caught}/{melanomas}")
    if caught == 0:
        return 0.0
    return float(beta.ppf(1 - confidence, caught, melanomas - caught + 1))


def guaranteed_threshold(
    labels: np.ndarray,
    probabilities: np.ndarray,
    target: float,
    confidence: float = 0.95,
    no_estimate: np.ndarray | None = None,
) -> float | None:
    """The highest threshold whose sensitivity on new cases from the same distribution
    is at least `target` with probability `confidence`, or None if the calibration set
    is too small to promise it.

    Sensitivity falls as the threshold rises, so scanning thresholds down from the top
    and stopping at the first whose exact lower bound reaches `target` controls the risk
    (Bates et al. 2021, risk-controlling prediction sets, for a monotone loss).
    """
    labels = np.asarray(labels).astype(int)
    p = np.asarray(probabilities, dtype=float)
    skip = np.zeros(len(p), bool) if no_estimate is None else np.asarray(no_estimate, bool)
    n_mel = int(np.sum(labels == 1))
    always = int(np.sum(skip & (labels == 1)))
    scores = np.sort(p[(labels == 1) & ~skip])[::-1]
    for k in range(1, len(scores) + 1):  # catch the top k melanomas
        if sensitivity_lower_bound(always + k, n_mel, confidence) >= target:
            return _midway_below(scores[k - 1], p[~skip])
    return None


def threshold_band_ratio(
    labels: np.ndarray,
    probabilities: np.ndarray,
    target: float,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> float:
    """How far the threshold moves when it is re-chosen on resampled calibration data:
    the odds ratio between the upper `level` percentile of the bootstrap thresholds and
    the threshold itself (>= 1). The borderline band spans that much above the threshold."""
    labels = np.asarray(labels).astype(int)
    p = np.asarray(probabilities, dtype=float)
    threshold = app_threshold(labels, p, target)
    rng = np.random.default_rng(seed)
    mel, ben = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    resampled = []
    for _ in range(n_resamples):
        idx = np.concatenate([rng.choice(mel, len(mel)), rng.choice(ben, len(ben))])
        resampled.append(app_threshold(labels[idx], p[idx], target))
    upper = float(np.quantile(resampled, level))

    def odds(x: float) -> float:
        x = min(max(x, 1e-12), 1 - 1e-12)
        return x / (1 - x)

    return max(1.0, odds(upper) / odds(threshold))
