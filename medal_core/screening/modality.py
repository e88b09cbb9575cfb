""" "Is this a dermoscopic image?" — the check that keeps plain phone photos of a mole
from getting a melanoma estimate the models were never validated for.

A dermoscope magnifies the lesion under polarised or immersion light: the skin texture,
the framing (the lesion fills the frame, often inside a dark circular field) and the
colours differ from a clinical photo taken with a phone. The lesion-vs-non-lesion check
(`medal_core.screening.screen.LesionCheck`) cannot see that difference, since a phone photo
of a mole *is* a lesion image. This check is a logistic regression on the screening
features and the image statistics of `ood.image_statistics`, trained on dermoscopic images
against PAD-UFES-20's smartphone photos (split by patient), with its limit set to keep
`KEEP_DERMOSCOPIC` of each dermoscopic source's calibration images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medal_core.screening.ood import image_statistics

MODALITY_FILE = "modality.npz"
KEEP_DERMOSCOPIC = 0.99  # of each source's calibration images, kept for an estimate
CLINICAL_SET = "pad_ufes20_clinical"


@dataclass(frozen=True)
class ModalityCheck:
    """Logistic regression on standardised [pooled features, image statistics]:
    `score` is P(clinical photo); above `limit` the image gets no melanoma estimate."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    coef: np.ndarray  # (d,)
    intercept: float
    limit: float

    def score(self, features: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(n,) P(clinical) from pooled features (n, f) and the uint8 images they came from."""
        return self.score_statistics(features, image_statistics(images))

    def score_statistics(self, features: np.ndarray, statistics: np.ndarray) -> np.ndarray:
        """The same from pooled features (n, f) and `image_statistics` (n, 9)."""
        x = np.hstack([np.asarray(features, np.float64), np.asarray(statistics, np.float64)])
        return 1 / (1 + np.exp(-(((x - self.mean) / self.scale) @ self.coef + self.intercept)))

    def looks_dermoscopic(self, features: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(n,) bool: True where the image may get an estimate."""
        return self.score(features, images) <= self.limit

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            mean=self.mean,
            scale=self.scale,
            coef=self.coef,
            intercept_limit=np.array([self.intercept, self.limit]),
        )

    @classmethod
    def load(cls, path: Path) -> "ModalityCheck":
        with np.load(path) as stored:
            intercept, limit = map(float, stored["intercept_limit"])
            return cls(stored["mean"], stored["scale"], stored["coef"], intercept, limit)


def fit_modality_check(
    dermoscopic: tuple[np.ndarray, np.ndarray],
    clinical: tuple[np.ndarray, np.ndarray],
    keep: tuple[np.ndarray, np.ndarray, np.ndarray],
    keep_share: float = KEEP_DERMOSCOPIC,
    c: float = 0.003,
) -> ModalityCheck:
    """Fit on (features, statistics) of dermoscopic and clinical training images; the
    limit keeps at least `keep_share` of each source's images of the dermoscopic
    `keep` = (features, statistics, sources) set."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([np.hstack(dermoscopic), np.hstack(clinical)]).astype(np.float64)
    y = np.r_[np.zeros(len(dermoscopic[0])), np.ones(len(clinical[0]))]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    model.fit((x - mean) / scale, y)
    check = ModalityCheck(mean, scale, model.coef_[0], float(model.intercept_[0]), 1.0)
    keep_features, keep_statistics, keep_sources = keep
    kept_scores = check.score_statistics(keep_features, keep_statistics)
    keep_sources = np.asarray(keep_sources)
    limit = max(
        float(np.quantile(kept_scores[keep_sources == source], keep_share, method="inverted_cdf"))
        for source in sorted(set(keep_sources.tolist()))
    )
    return ModalityCheck(mean, scale, model.coef_[0], float(model.intercept_[0]), limit)
