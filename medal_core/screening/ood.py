""" "Is this a skin-lesion image at all?" — an out-of-distribution score.

Two Mahalanobis distances from the training images, each with a Ledoit–Wolf shrunk
covariance (hundreds of dimensions from a couple of thousand images: the plain sample
covariance would be singular):

* of the image's pooled features (the model's own `avg_pool` layer): is this what the
  model saw in training?
* of a handful of image statistics (colour, contrast, texture, edges): flat colours and
  noise produce bland features that sit *inside* the feature distribution, but their
  pixels are nothing like a dermoscopy photograph's.

Each distance is divided by its own limit, chosen to keep 98.75% of the validation
lesions, and the score is the larger ratio: above 1, the app warns and gives no
melanoma probability. Together they keep at least 97.5% of validation lesions.

`python -m medal_core fit-ood --bundle models/mobilenet --data-root ../shared/data`
(`medal_core.stages.fit_ood`) refits the detector of an existing bundle and reports how
many non-lesion pictures (`medal_core.stages.non_lesion_pictures`) it rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

OOD_FILE = "ood.npz"
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
    """Scores images against the training lesions: ≤ 1 looks like one, > 1 does not."""

    features: FeatureDistribution  # of the model's pooled features
    statistics: FeatureDistribution  # of `image_statistics`
    feature_limit: float
    statistics_limit: float

    def score(self, features: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(n,) scores from pooled features (n, d) and the model-size uint8 images
        (n, s, s, 3) they came from: the larger of the two distance/limit ratios."""
        return np.maximum(
            self.features.distance(features) / self.feature_limit,
            self.statistics.distance(image_statistics(images)) / self.statistics_limit,
        )

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            feature_mean=self.features.mean,
            feature_precision=self.features.precision,
            statistics_mean=self.statistics.mean,
            statistics_precision=self.statistics.precision,
            limits=np.array([self.feature_limit, self.statistics_limit]),
        )

    @classmethod
    def load(cls, path: Path) -> "OODDetector":
        with np.load(path) as stored:
            return cls(
                FeatureDistribution(stored["feature_mean"], stored["feature_precision"]),
                FeatureDistribution(stored["statistics_mean"], stored["statistics_precision"]),
                *map(float, stored["limits"]),
            )


def fit_bundle_ood(runner, train_images: np.ndarray, val_images: np.ndarray) -> tuple[OODDetector, dict]:
    """Fit both distributions on training images (uint8, model size) and each limit on
    the validation images. Returns the detector and the manifest's `ood` entry."""
    train_features, val_features = runner.batched(train_images)[1], runner.batched(val_images)[1]
    features = FeatureDistribution.fit(train_features)
    statistics = FeatureDistribution.fit(image_statistics(train_images))
    detector = OODDetector(
        features,
        statistics,
        threshold_keeping(features.distance(val_features), KEEP_EACH),
        threshold_keeping(statistics.distance(image_statistics(val_images)), KEEP_EACH),
    )
    return detector, {
        "file": OOD_FILE,
        "method": (
            "larger of two Mahalanobis distances (Ledoit-Wolf) from the training images, "
            "each over its limit: avg_pool features, and colour/texture statistics"
        ),
        "threshold": 1.0,
        "keep_each": KEEP_EACH,
        "validation_kept": float(np.mean(detector.score(val_features, val_images) <= 1.0)),
        "train_images": int(len(train_images)),
    }


def rejection_report(runner, detector: OODDetector, images: dict[str, np.ndarray]) -> dict:
    """Share of `images` (all non-lesions, any size) scored above 1."""
    from medal_core.data.datasets import resize_for_model

    batch = np.stack([resize_for_model(im, runner.input_size) for im in images.values()])
    rejected = detector.score(runner.batched(batch)[1], batch) > 1.0
    return {
        "images": len(images),
        "rejected": int(rejected.sum()),
        "share_rejected": float(rejected.mean()),
        "missed": [name for name, r in zip(images, rejected) if not r],
    }
