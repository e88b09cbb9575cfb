"""How a `Prediction` is put into words, shared by the app, the case report, the batch
table and the service, so that all of them say the same thing.

The verdicts themselves come from the decision policy (`medal_core.evaluation.decision`); this
module only words them.
"""

from __future__ import annotations

from medal_core.evaluation import decision
from medal_core.serving.prediction import Prediction

NOT_LESION_MESSAGE = decision.NO_ESTIMATE_ADVICE[decision.NOT_LESION]
NOT_DERMOSCOPIC_MESSAGE = decision.NO_ESTIMATE_ADVICE[decision.NOT_DERMOSCOPIC]
INDETERMINATE_MESSAGE = (
    "Borderline: the estimate lies just above the decision threshold, within the margin by "
    "which the threshold itself is uncertain (re-choosing it on resampled validation data "
    "moves it this far). It is sent onwards like a referral: have a dermatologist look."
)

# The verdict in a few words, for the result box, tables and CSV files.
VERDICTS = decision.VERDICT_LABELS
NO_ESTIMATE_VERDICTS = {
    decision.NOT_LESION: "Not recognised as a dermoscopic lesion image — no melanoma "
    "estimate given; have a clinician look",
    decision.NOT_DERMOSCOPIC: "Not a dermoscopic image — no melanoma estimate given; use a "
    "dermatoscope or have a clinician look",
}
NO_ESTIMATE_MESSAGES = {
    decision.NOT_LESION: NOT_LESION_MESSAGE,
    decision.NOT_DERMOSCOPIC: NOT_DERMOSCOPIC_MESSAGE,
}


def percent(probability: float) -> str:
    """A probability as a percentage with one decimal; below 0.1% (or above 99.9%) it
    reads "< 0.1%" ("> 99.9%") instead of a misleading "0.0%" ("100.0%")."""
    if probability < 0.001:
        return "< 0.1%"
    if probability > 0.999:
        return "> 99.9%"
    return f"{probability:.1%}"


def with_threshold(prediction: Prediction, threshold: float) -> Prediction:
    """The same prediction judged at another threshold (no model call)."""
    return prediction.at_threshold(threshold)


def verdict_text(prediction: Prediction) -> str:
    """The verdict in plain words (the no-estimate reason included)."""
    if prediction.verdict_code == decision.NO_ESTIMATE:
        return NO_ESTIMATE_VERDICTS[prediction.no_estimate_reason]
    return VERDICTS[prediction.verdict_code]


def decision_label(prediction: Prediction) -> str:
    """The short label for tables and CSV files."""
    return VERDICTS[prediction.verdict_code]


def prediction_warnings(prediction: Prediction) -> list[tuple[str, str]]:
    """(code, message) pairs to show before the result: why there is no estimate first,
    then the photo-quality warnings in the order the checks ran."""
    return [(warning["code"], warning["message"]) for warning in prediction.warnings()]
