"""One image's result, as a small value object that imports no TensorFlow.

`Predictor` (medal_core.serving.predictor) makes these; the app, the batch table, the case
report and the service read them. The verdict is the decision policy's
(`medal_core.evaluation.decision.decide`), never a rule of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from medal_core.evaluation import decision
from medal_core.screening.quality import QualityReport, QualityWarning

DISCLAIMER = (
    "MedAL Triage is a triage aid, not a diagnosis. It can miss melanomas and "
    "flag harmless moles. Any lesion that worries you, changes, itches or bleeds "
    "should be seen by a doctor, whatever this tool says."
)


@dataclass(frozen=True)
class Prediction:
    """One image's result. Probabilities are calibrated (see `Bundle.calibrate`)."""

    probability: float  # P(melanoma), the bundle's estimate
    logit: float  # raw logit behind `probability`
    threshold: float  # decision threshold used
    view_probabilities: np.ndarray  # (8,) P(melanoma) of each rotated/mirrored copy
    ood_score: float | None  # > 1: not like any validated source (shared screen; None: none)
    quality: QualityReport
    band_ratio: float = decision.DEFAULT_BAND_RATIO  # borderline band above the threshold
    clinical_score: float | None = None  # P(plain clinical photo) (None: no check)
    clinical_limit: float = 1.0  # above it: not a dermoscopic image

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
        return decision.decide(
            self.probability,
            self.threshold,
            self.band_ratio,
            looks_like_lesion=self.looks_like_lesion,
            looks_dermoscopic=self.looks_dermoscopic,
        )

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

    def warnings(self) -> list[dict[str, str]]:
        """[{"code", "message"}]: why there is no estimate first (with what to do next),
        then the photo-quality warnings in the order the checks ran."""
        found = []
        if self.no_estimate_reason:
            found.append(
                {
                    "code": self.no_estimate_reason,
                    "message": decision.NO_ESTIMATE_ADVICE[self.no_estimate_reason],
                }
            )
        found.extend({"code": w.code, "message": w.message} for w in self.quality.warnings)
        return found

    def to_dict(self) -> dict:
        """Everything needed to rebuild this result (`from_dict`), JSON-ready."""
        quality = self.quality
        return {
            "probability": self.probability,
            "logit": self.logit,
            "threshold": self.threshold,
            "view_probabilities": [float(p) for p in self.view_probabilities],
            "ood_score": self.ood_score,
            "band_ratio": self.band_ratio,
            "clinical_score": self.clinical_score,
            "clinical_limit": self.clinical_limit,
            "quality": {
                "sharpness": quality.sharpness,
                "brightness": quality.brightness,
                "dark_fraction": quality.dark_fraction,
                "clipped_fraction": quality.clipped_fraction,
                "warnings": [[w.code, w.message] for w in quality.warnings],
            },
        }

    @classmethod
    def from_dict(cls, stored: dict) -> "Prediction":
        """The result `to_dict` describes (KeyError or ValueError when it is not one)."""
        quality = dict(stored["quality"])
        quality["warnings"] = tuple(QualityWarning(str(c), str(m)) for c, m in quality["warnings"])
        return cls(
            probability=float(stored["probability"]),
            logit=float(stored["logit"]),
            threshold=float(stored["threshold"]),
            view_probabilities=np.asarray(stored["view_probabilities"], np.float64),
            ood_score=None if stored["ood_score"] is None else float(stored["ood_score"]),
            quality=QualityReport(**quality),
            band_ratio=float(stored["band_ratio"]),
            clinical_score=(None if stored["clinical_score"] is None else float(stored["clinical_score"])),
            clinical_limit=float(stored["clinical_limit"]),
        )
