""""Is this a skin-lesion image at all?" — an out-of-distribution score.

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

    python -m medal_core.ood --bundle models/mobilenet --data ../shared/data/isic2017

(re)fits the detector of an existing bundle and reports how many non-lesion images
(photographs, flat colours, noise, text, screenshots) it rejects.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

OOD_FILE = "ood.npz"
KEEP_SHARE = 0.975                 # of validation lesions, both checks together
KEEP_EACH = 1 - (1 - KEEP_SHARE) / 2   # per check: the two losses add up at most


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


# ---------------------------------------------------------------- non-lesion images


def synthetic_non_lesion_images(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Flat colours, noise, text and screenshot-like images, uint8 RGB (size, size, 3)."""
    rng = np.random.default_rng(seed)
    images = {}
    for name, colour in {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128),
                         "red": (220, 30, 30), "green": (40, 180, 60), "blue": (30, 60, 200),
                         "skin": (224, 172, 140)}.items():
        images[f"flat_{name}"] = np.full((size, size, 3), colour, dtype=np.uint8)
    images["noise_uniform"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    images["noise_gaussian"] = np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    images["noise_coarse"] = np.asarray(Image.fromarray(
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((size, size), Image.Resampling.NEAREST))
    for i in range(3):
        page = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(page)
        for line in range(0, size, 14):
            words = " ".join("".join(chr(rng.integers(97, 123)) for _ in range(rng.integers(2, 9)))
                             for _ in range(6))
            draw.text((4, line), words, fill=(0, 0, 0))
        images[f"text_{i}"] = np.asarray(page)
    for i in range(3):
        images[f"screenshot_{i}"] = _screenshot(size, rng)
    return images


def _screenshot(size: int, rng: np.random.Generator) -> np.ndarray:
    """A desktop-like picture: title bar, panels, buttons and lines of text."""
    shot = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(shot)
    draw.rectangle([0, 0, size, 20], fill=tuple(int(c) for c in rng.integers(0, 120, 3)))
    for _ in range(6):
        x, y = rng.integers(0, size - 60, 2)
        draw.rectangle([x, y, x + rng.integers(30, 120), y + rng.integers(12, 60)],
                       fill=tuple(int(c) for c in rng.integers(0, 256, 3)), outline=(0, 0, 0))
    for y in range(30, size, 18):
        draw.text((8, y), "File  Edit  View  Settings  " * 2, fill=(20, 20, 20))
    return np.asarray(shot)


def sample_photographs(size: int = 256) -> dict[str, np.ndarray]:
    """scikit-image's sample photographs (a dev dependency), as uint8 RGB (size, size, 3)."""
    from skimage import data as samples  # only the benchmark and tests need it

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page",
             "text", "brick", "grass", "gravel", "checkerboard", "hubble_deep_field",
             "horse", "clock", "logo", "colorwheel", "cat", "immunohistochemistry"]
    photos = {}
    for name in names:
        loader = getattr(samples, name, None)
        if loader is None:
            continue
        image = np.asarray(loader())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos[name] = np.asarray(Image.fromarray(image[..., :3].astype(np.uint8)).resize((size, size)))
    return photos


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
        colourfulness = (np.hypot(red_green.std(), yellow_blue.std())
                         + 0.3 * np.hypot(red_green.mean(), yellow_blue.mean()))
        rows.append(np.r_[pixels.mean(axis=(0, 1)) / 255, np.log1p(pixels.std(axis=(0, 1))),
                          np.log1p(cv2.Laplacian(grey, cv2.CV_32F).var()),
                          np.log1p(gradient.mean()), np.log1p(colourfulness)])
    return np.array(rows, dtype=np.float32)


@dataclass(frozen=True)
class OODDetector:
    """Scores images against the training lesions: ≤ 1 looks like one, > 1 does not."""

    features: FeatureDistribution      # of the model's pooled features
    statistics: FeatureDistribution    # of `image_statistics`
    feature_limit: float
    statistics_limit: float

    def score(self, features: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(n,) scores from pooled features (n, d) and the model-size uint8 images
        (n, s, s, 3) they came from: the larger of the two distance/limit ratios."""
        return np.maximum(self.features.distance(features) / self.feature_limit,
                          self.statistics.distance(image_statistics(images)) / self.statistics_limit)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, feature_mean=self.features.mean, feature_precision=self.features.precision,
                            statistics_mean=self.statistics.mean,
                            statistics_precision=self.statistics.precision,
                            limits=np.array([self.feature_limit, self.statistics_limit]))

    @classmethod
    def load(cls, path: Path) -> "OODDetector":
        with np.load(path) as stored:
            return cls(FeatureDistribution(stored["feature_mean"], stored["feature_precision"]),
                       FeatureDistribution(stored["statistics_mean"], stored["statistics_precision"]),
                       *map(float, stored["limits"]))


def fit_bundle_ood(runner, train_images: np.ndarray, val_images: np.ndarray) -> tuple[OODDetector, dict]:
    """Fit both distributions on training images (uint8, model size) and each limit on
    the validation images. Returns the detector and the manifest's `ood` entry."""
    train_features, val_features = runner.batched(train_images)[1], runner.batched(val_images)[1]
    features = FeatureDistribution.fit(train_features)
    statistics = FeatureDistribution.fit(image_statistics(train_images))
    detector = OODDetector(
        features, statistics,
        threshold_keeping(features.distance(val_features), KEEP_EACH),
        threshold_keeping(statistics.distance(image_statistics(val_images)), KEEP_EACH))
    return detector, {
        "file": OOD_FILE,
        "method": ("larger of two Mahalanobis distances (Ledoit-Wolf) from the training images, "
                   "each over its limit: avg_pool features, and colour/texture statistics"),
        "threshold": 1.0,
        "keep_each": KEEP_EACH,
        "validation_kept": float(np.mean(detector.score(val_features, val_images) <= 1.0)),
        "train_images": int(len(train_images)),
    }


def rejection_report(runner, detector: OODDetector, images: dict[str, np.ndarray]) -> dict:
    """Share of `images` (all non-lesions, any size) scored above 1."""
    from medal_core.data import resize_for_model

    batch = np.stack([resize_for_model(im, runner.input_size) for im in images.values()])
    rejected = detector.score(runner.batched(batch)[1], batch) > 1.0
    return {"images": len(images), "rejected": int(rejected.sum()),
            "share_rejected": float(rejected.mean()),
            "missed": [name for name, r in zip(images, rejected) if not r]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Fit a bundle's out-of-distribution check.")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data-root", required=True,
                        help="the folder holding the datasets the bundle was trained on")
    args = parser.parse_args(argv)

    from medal_core import bundle as bundles
    from medal_core import data, roles
    from medal_core.inference import ModelRunner

    loaded = bundles.load_bundle(args.bundle, load_ood=False)  # the one being replaced
    assignment = roles.bundle_roles(loaded.manifest, args.data_root)
    train_set, val_set = assignment.role("train"), assignment.role("calibration")
    runner = ModelRunner(loaded.model)
    size = runner.input_size
    detector, entry = fit_bundle_ood(runner, data.load_images(train_set.paths, size),
                                     data.load_images(val_set.paths, size))
    # Drawn at 256 px whatever the model's size: the screenshots need room.
    non_lesions = {**synthetic_non_lesion_images(256), **sample_photographs(256)}
    entry["non_lesion_check"] = rejection_report(runner, detector, non_lesions)
    bundles.attach_ood(loaded.folder, detector, entry)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
