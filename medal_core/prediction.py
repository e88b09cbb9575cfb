"""One image's result, as a small value object that imports no TensorFlow.

`Predictor` (medal_core.predictor) makes these; the app, the batch table, the case
report and the service read them. The verdict is the decision policy's
(`medal_core.decision.decide`), never a rule of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from medal_core import decision
from medal_core.quality import QualityReport


@dataclass(frozen=True)
class Prediction:
    """One image's result. Probabilities are calibrated (see `Bundle.calibrate`)."""

    probability: float                 # P(melanoma), the bundle's estimate
    logit: float                       # raw logit behind `probability`
    threshold: float                   # decision threshold used
    view_probabilities: np.ndarray     # (8,) P(melanoma) of each rotated/mirrored copy
    ood_score: float | None            # > 1: not like the training lesions (None: no check)
    quality: QualityReport
    band_ratio: float = decision.DEFAULT_BAND_RATIO   # borderline band above the threshold
    clinical_score: float | None = None   # P(plain clinical photo) (None: no check)
    clinical_limit: float = 1.0           # above it: not a dermoscopic image

    @property
    def spread(self) -> tuple[float, float]:
        """(lowest, highest) probability over the 8 rotated/mirrored copies of the photo."""
        return float(self.view_probabilities.min()), float(self.view_probabilities.max())

    @property
    def looks_like_lesion(self) -> bool:
        return self.ood_score is None or self.ood_score <= 1.0

    @property
    def looks_dermoscopic(self) -> bool:
        return self.clinical_score is None or self.clinical_score <= self.clinical_limit

    @property
    def has_estimate(self) -> bool:
        """False when the app gives no melanoma estimate for this image."""
        return self.looks_like_lesion and self.looks_dermoscopic

    @property
    def decision(self) -> decision.Verdict:
        return decision.decide(self.probability, self.threshold, self.band_ratio,
                               looks_like_lesion=self.looks_like_lesion,
                               looks_dermoscopic=self.looks_dermoscopic)

    @property
    def verdict_code(self) -> str:
        """One of decision.VERDICT_CODES."""
        return self.decision.code

    @property
    def no_estimate_reason(self) -> str:
        """decision.NOT_LESION or NOT_DERMOSCOPIC for a no-estimate result, else ""."""
        return self.decision.reason

    @property
    def onward(self) -> bool:
        """True when a clinician should look: every verdict but "low suspicion"."""
        return self.decision.onward

    def at_threshold(self, threshold: float) -> "Prediction":
        """The same prediction judged at another threshold (no model call)."""
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        return dataclasses.replace(self, threshold=float(threshold))
