"""Out-of-distribution scores: how far an image is from a set of lesion images.

Two Mahalanobis distances, each with a Ledoit–Wolf shrunk covariance (a thousand
dimensions from a thousand or so images: the plain sample covariance would be singular):

* of the image's pooled features: is this what the lesion images look like to a network?
* of a handful of image statistics (colour, contrast, texture, edges): flat colours and
  noise produce bland features that sit *inside* the feature distribution, but their
  pixels are nothing like a dermoscopy photograph's.

Each distance is divided by its own limit, chosen to keep `KEEP_EACH` of held-out lesion
images, and the score is the larger ratio: above 1, the image is not like them. The screen
every bundle shares (`medal_core.screening.screen`) holds one such detector per source.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KEEP_SHARE = 0.975  # of validation lesions, both checks together
KEEP_EACH = 1 - (1 - KEEP_SHARE) / 2  # per check: the two losses add up at most


@dataclass(frozen=True)
class FeatureDistribution:
    """Mean (d,) and precision matrix (d, d) of training features."""

    mean: np.ndarray
    precision: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> "FeatureDistribution":
        """Fit on (n, d) features with Ledoit–Wolf shrinkage."""
        from sklearn.covariance import LedoitWolf

        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"need (n >= 2, d) features, got shape {features.shape}")
        estimate = LedoitWolf().fit(features)
        return cls(estimate.location_.astype(np.float32), estimate.precision_.astype(np.float32))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of (n, d) features: shape (n,), ≥ 0."""
        centred = np.asarray(features, dtype=np.float32) - self.mean
        squared = np.einsum("nd,de,ne->n", centred, self.precision, centred)
        return np.sqrt(np.maximum(squared, 0.0))


def threshold_keeping(distances: np.ndarray, share: float = KEEP_SHARE) -> float:
    """A distance limit that keeps at least `share` of these in-distribution distances,
    placed midway between the last kept distance and the next larger one.

    A limit equal to a kept image's own distance sits on it: float rounding (another
    batch size, another CPU) moved one from a ratio of 0.99999994 to 1.00000012 and out
    of the kept set. The midway rule is the decision threshold's (`metrics.midway_below`).
    """
    distances = np.sort(np.asarray(distances, dtype=np.float64))
    kept = float(np.quantile(distances, share, method="inverted_cdf"))
    above = distances[distances > kept]
    return float((kept + above.min()) / 2) if above.size else kept


def image_statistics(images: np.ndarray) -> np.ndarray:
    """(n, 9) descriptors of uint8 RGB images (n, s, s, 3): mean colour (3, in [0, 1]),
    log contrast per channel (3), log Laplacian variance, log mean gradient, and log
    colourfulness (Hasler & Süsstrunk)."""
    rows = []
    for rgb in np.asarray(images, dtype=np.uint8):
        pixels = rgb.astype(np.float32)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        red_green = pixels[..., 0] - pixels[..., 1]
        yellow_blue = 0.5 * (pixels[..., 0] + pixels[..., 1]) - pixels[..., 2]
        colourfulness = np.hypot(red_green.std(), yellow_blue.std()) + 0.3 * np.hypot(
            red_green.mean(), yellow_blue.mean()
        )
        rows.append(
            np.r_[
                pixels.mean(axis=(0, 1)) / 255,
                np.log1p(pixels.std(axis=(0, 1))),
                np.log1p(cv2.Laplacian(grey, cv2.CV_32F).var()),
                np.log1p(gradient.mean()),
                np.log1p(colourfulness),
            ]
        )
    return np.array(rows, dtype=np.float32)


@dataclass(frozen=True)
class OODDetector:
    """Scores images against one set of lesion images: ≤ 1 looks like them, > 1 does not."""

    features: FeatureDistribution  # of pooled features
    statistics: FeatureDistribution  # of `image_statistics`
    feature_limit: float
    statistics_limit: float

    def score(self, features: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(n,) scores from pooled features (n, d) and the uint8 images (n, s, s, 3) they
        came from: the larger of the two distance/limit ratios."""
        return self.score_statistics(features, image_statistics(images))

    def score_statistics(self, features: np.ndarray, statistics: np.ndarray) -> np.ndarray:
        """The same from pooled features (n, d) and `image_statistics` (n, 9)."""
        return np.maximum(
            self.features.distance(features) / self.feature_limit,
            self.statistics.distance(statistics) / self.statistics_limit,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the detector (`from_arrays`), as named arrays."""
        return {
            "feature_mean": self.features.mean,
            "feature_precision": self.features.precision,
            "statistics_mean": self.statistics.mean,
            "statistics_precision": self.statistics.precision,
            "limits": np.array([self.feature_limit, self.statistics_limit]),
        }

    @classmethod
    def from_arrays(cls, stored) -> "OODDetector":
        """The detector `arrays` describes (KeyError when one is missing)."""
        return cls(
            FeatureDistribution(stored["feature_mean"], stored["feature_precision"]),
            FeatureDistribution(stored["statistics_mean"], stored["statistics_precision"]),
            *map(float, stored["limits"]),
        )
