"""How a `Prediction` is put into words, shared by the app, the case report, the batch
table and the service, so that all of them say the same thing.

The verdicts themselves come from the decision policy (`medal_core.decision`); this
module only words them.
"""

from __future__ import annotations

from medal_core import decision
from medal_core.prediction import Prediction

NOT_LESION_MESSAGE = ("This does not look like a dermoscopic image of a skin lesion, so no "
                      "melanoma estimate is given. Upload a close-up dermoscopy photo of the "
                      "lesion; if you are worried about a mole, have a clinician look at it.")
NOT_DERMOSCOPIC_MESSAGE = (
    "This looks like an ordinary (clinical) photo of the skin, not a dermoscopic image. The "
    "model was only validated on dermoscopic images, so no melanoma estimate is given. Take "
    "the photo through a dermatoscope (a phone attachment works), or have a clinician look "
    "at the mole.")
INDETERMINATE_MESSAGE = (
    "Borderline: the estimate lies just above the decision threshold, within the margin by "
    "which the threshold itself is uncertain (re-choosing it on resampled validation data "
    "moves it this far). It is sent onwards like a referral: have a dermatologist look.")

# The verdict in a few words, for the result box, tables and CSV files.
VERDICTS = {
    decision.REFER: "Refer to a dermatologist",
    decision.INDETERMINATE: "Borderline — see a dermatologist",
    decision.LOW: "Low suspicion",
    decision.NO_ESTIMATE: "No estimate — have a clinician look",
}
NO_ESTIMATE_VERDICTS = {
    decision.NOT_LESION: "Not recognised as a dermoscopic lesion image — no melanoma "
                         "estimate given; have a clinician look",
    decision.NOT_DERMOSCOPIC: "Not a dermoscopic image — no melanoma estimate given; use a "
                              "dermatoscope or have a clinician look",
}
NO_ESTIMATE_MESSAGES = {decision.NOT_LESION: NOT_LESION_MESSAGE,
                        decision.NOT_DERMOSCOPIC: NOT_DERMOSCOPIC_MESSAGE}


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
    pairs = []
    if not prediction.looks_like_lesion:
        pairs.append((decision.NOT_LESION, NOT_LESION_MESSAGE))
    elif not prediction.looks_dermoscopic:
        pairs.append((decision.NOT_DERMOSCOPIC, NOT_DERMOSCOPIC_MESSAGE))
    pairs.extend((w.code, w.message) for w in prediction.quality.warnings)
    return pairs
