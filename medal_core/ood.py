""""Is this a skin-lesion image at all?" — an out-of-distribution score.

The score is the Mahalanobis distance of an image's pooled features (the model's own
`avg_pool` layer) from the training images' features, with a Ledoit–Wolf shrunk
covariance (hundreds of feature dimensions from a couple of thousand images: the plain
sample covariance would be singular). The threshold keeps a chosen share (97.5%) of the
validation lesions; anything farther is flagged, and the app does not pretend to give a
melanoma probability for it.

    python -m medal_core.ood --bundle models/mobilenet --data ../shared/data/isic2017

(re)fits the statistics of an existing bundle and reports how many non-lesion images
(photographs, flat colours, noise, text, screenshots) it rejects.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

OOD_FILE = "ood.npz"
KEEP_SHARE = 0.975


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

    def save(self, path: Path) -> None:
        np.savez_compressed(path, mean=self.mean, precision=self.precision)

    @classmethod
    def load(cls, path: Path) -> "FeatureDistribution":
        with np.load(path) as stored:
            return cls(stored["mean"], stored["precision"])


def threshold_keeping(distances: np.ndarray, share: float = KEEP_SHARE) -> float:
    """The smallest distance limit that keeps at least `share` of these in-distribution
    distances."""
    return float(np.quantile(distances, share, method="inverted_cdf"))


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
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((size, size), Image.NEAREST))
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


# ---------------------------------------------------------------- fitting a bundle


def fit_bundle_ood(runner, train_images: np.ndarray, val_images: np.ndarray) -> tuple[FeatureDistribution, dict]:
    """Fit the feature distribution on training images and choose the threshold on the
    validation images. Returns the distribution and the manifest's `ood` entry."""
    _, train_features = runner.batched(train_images)
    _, val_features = runner.batched(val_images)
    distribution = FeatureDistribution.fit(train_features)
    val_distances = distribution.distance(val_features)
    threshold = threshold_keeping(val_distances)
    return distribution, {
        "file": OOD_FILE,
        "method": "Mahalanobis distance of avg_pool features, Ledoit-Wolf shrinkage, fitted on training images",
        "threshold": threshold,
        "validation_kept": float(np.mean(val_distances <= threshold)),
        "train_images": int(len(train_images)),
    }


def rejection_report(runner, distribution: FeatureDistribution, threshold: float,
                     images: dict[str, np.ndarray]) -> dict:
    """Share of `images` (all non-lesions) whose distance exceeds the threshold."""
    from medal_core.data import resize_for_model

    batch = np.stack([resize_for_model(im, runner.input_size) for im in images.values()])
    distances = distribution.distance(runner.batched(batch)[1])
    rejected = distances > threshold
    return {"images": len(images), "rejected": int(rejected.sum()),
            "share_rejected": float(rejected.mean()),
            "missed": [name for name, r in zip(images, rejected) if not r]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Fit a bundle's out-of-distribution check.")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, help="the dataset the bundle was trained on")
    args = parser.parse_args(argv)

    from medal_core import bundle as bundles, data
    from medal_core.inference import ModelRunner

    loaded = bundles.load_bundle(args.bundle)
    rule = loaded.manifest["data"]["validation_rule"]
    train_set, val_set = data.make_validation_split(data.load_dataset(args.data),
                                                    rule["extra_fraction"], rule["seed"])
    runner = ModelRunner(loaded.model)
    size = runner.input_size
    distribution, entry = fit_bundle_ood(runner, data.load_images(train_set.paths, size),
                                         data.load_images(val_set.paths, size))
    non_lesions = {**synthetic_non_lesion_images(size), **sample_photographs(size)}
    entry["non_lesion_check"] = rejection_report(runner, distribution, entry["threshold"], non_lesions)
    bundles.attach_ood(loaded.folder, distribution, entry)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
