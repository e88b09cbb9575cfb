"""How a `Prediction` is put into words, shared by the app, the case report and the
batch table, so that all three say the same thing."""

from __future__ import annotations

import dataclasses

from medal_core.predictor import Prediction

NOT_LESION_MESSAGE = ("This does not look like a dermoscopic image of a skin lesion, so no "
                      "melanoma estimate is given. Upload a close-up dermoscopy photo of the "
                      "lesion.")
INDETERMINATE_MESSAGE = ("The rotated and mirrored views of the image fall on both sides of "
                         "the threshold: the answer depends on how the picture was taken.")

# Short decision labels for tables and CSV files.
DECISIONS = {
    "refer": "Refer to a dermatologist",
    "low": "Low suspicion",
    "indeterminate": "Indeterminate — see a dermatologist",
    "not_lesion": "Not a lesion image",
}


def with_threshold(prediction: Prediction, threshold: float) -> Prediction:
    """The same prediction judged at another threshold (no model call)."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return dataclasses.replace(prediction, threshold=float(threshold))


def decision(prediction: Prediction) -> str:
    """The short decision label for `prediction.verdict_code`."""
    return DECISIONS[prediction.verdict_code]


def prediction_warnings(prediction: Prediction) -> list[tuple[str, str]]:
    """(code, message) pairs to show before the result: "not_lesion" first, then the
    photo-quality warnings in the order the checks ran."""
    pairs = []
    if not prediction.looks_like_lesion:
        pairs.append(("not_lesion", NOT_LESION_MESSAGE))
    pairs.extend((w.code, w.message) for w in prediction.quality.warnings)
    return pairs
