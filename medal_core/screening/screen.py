"""The screen every bundle shares: which images get a melanoma estimate at all.

Two questions, answered on the same features for every model (the pooled activations of a
frozen ImageNet MobileNet, `medal_core.modeling.architectures.build_screening_features`)
and the image statistics of `ood.image_statistics`:

* **"Is this a dermoscopic lesion image?"** (`LesionCheck`): for each dermoscopic source
  the models were trained on, the larger of two Mahalanobis distances (features, image
  statistics) from that source's training images, each over its limit. An image looks
  like a lesion when it is within the limits of *at least one* source: every dermatoscope
  photographs the skin differently, and one distribution of all of them would be as wide
  as the most varied source.
* **"Is it a dermoscopic image, not a plain phone photo?"** (`ModalityCheck`).

Each limit keeps a set share of *each* source's calibration images, so no source the app
was validated on is refused wholesale. A model's own features answer neither question well
(the from-scratch CNN's let half of the phone photos and some cats through), and a screen
shared by every bundle means the Compare page never shows one model refusing an image that
another one judges.

`python -m medal_core fit-screening` (`medal_core.stages.fit_screening`) fits it and
`medal_core.bundles.screening` loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medal_core.screening.modality import ModalityCheck
from medal_core.screening.ood import (
    KEEP_EACH,
    FeatureDistribution,
    OODDetector,
    image_statistics,
    threshold_keeping,
)

LESION_FILE = "lesion.npz"


@dataclass(frozen=True)
class LesionCheck:
    """One `OODDetector` per dermoscopic source; the score is the smallest of theirs:
    ≤ 1 looks like the lesion images of some source, > 1 like none."""

    sources: tuple[str, ...]
    detectors: tuple[OODDetector, ...]

    def score(self, features: np.ndarray, statistics: np.ndarray) -> np.ndarray:
        """(n,) scores from screening features (n, d) and image statistics (n, 9)."""
        return np.min([d.score_statistics(features, statistics) for d in self.detectors], axis=0)

    @classmethod
    def fit(
        cls,
        train: tuple[np.ndarray, np.ndarray, np.ndarray],
        calibration: tuple[np.ndarray, np.ndarray, np.ndarray],
        keep_each: float = KEEP_EACH,
    ) -> "LesionCheck":
        """Fit on (features, statistics, sources) of training images; each source's limits
        keep `keep_each` of that source's calibration images (every training source needs
        calibration images of its own)."""
        features, statistics, sources = train
        cal_features, cal_statistics, cal_sources = calibration
        names = tuple(sorted(set(np.asarray(sources).tolist())))
        detectors = []
        for name in names:
            mine, held = np.asarray(sources) == name, np.asarray(cal_sources) == name
            if not held.any():
                raise ValueError(f"source '{name}' has training images but no calibration images")
            feature_dist = FeatureDistribution.fit(features[mine])
            statistics_dist = FeatureDistribution.fit(statistics[mine])
            detectors.append(
                OODDetector(
                    feature_dist,
                    statistics_dist,
                    threshold_keeping(feature_dist.distance(cal_features[held]), keep_each),
                    threshold_keeping(statistics_dist.distance(cal_statistics[held]), keep_each),
                )
            )
        return cls(names, tuple(detectors))

    def save(self, path: Path) -> None:
        arrays = {"sources": np.array(self.sources)}
        for i, detector in enumerate(self.detectors):
            arrays |= {f"{i}_{key}": value for key, value in detector.arrays().items()}
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stubs: names are free

    @classmethod
    def load(cls, path: Path) -> "LesionCheck":
        with np.load(path) as stored:
            sources = tuple(str(s) for s in stored["sources"])
            detectors = tuple(
                OODDetector.from_arrays(
                    {key.split("_", 1)[1]: stored[key] for key in stored if key.startswith(f"{i}_")}
                )
                for i in range(len(sources))
            )
        return cls(sources, detectors)


@dataclass(frozen=True)
class ScreenScores:
    """What the screen says about n images."""

    ood: np.ndarray  # (n,) > 1: not like any validated source's lesion images
    clinical: np.ndarray  # (n,) P(plain clinical photo)
    clinical_limit: float  # above it: not a dermoscopic image

    @property
    def no_estimate(self) -> np.ndarray:
        """(n,) bool: the images that get no melanoma estimate."""
        return (self.ood > 1.0) | (self.clinical > self.clinical_limit)


@dataclass(frozen=True)
class ImageScreen:
    """Both checks, on the screening features of model-free images."""

    lesion: LesionCheck
    modality: ModalityCheck

    def scores(self, features: np.ndarray, images: np.ndarray) -> ScreenScores:
        """Scores from screening features (n, d) and the uint8 images (n, s, s, 3) at the
        screen's input size they came from."""
        return self.scores_statistics(features, image_statistics(images))

    def scores_statistics(self, features: np.ndarray, statistics: np.ndarray) -> ScreenScores:
        """The same from screening features (n, d) and `image_statistics` (n, 9)."""
        return ScreenScores(
            self.lesion.score(features, statistics),
            self.modality.score_statistics(features, statistics),
            self.modality.limit,
        )
