"""Everything the app asks of a model about one image (or many), as a small result object.

    predictor = Predictor.from_folder("models/mobilenet")
    result = predictor.predict(read_upload(data).rgb)
    result.probability, result.verdict, result.indeterminate, result.looks_like_lesion

The bundle is loaded and the graph traced once; each call is then one compiled forward
pass over the image's 8 dihedral views (flips × quarter turns), which gives the
test-time-augmentation spread at the cost of one batch of 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medal_core.bundle import Bundle, load_bundle
from medal_core.data import resize_for_model
from medal_core.inference import DIHEDRAL_VIEWS, ModelRunner
from medal_core.quality import QualityReport, assess_quality

DISCLAIMER = ("MedAL Triage is a triage aid, not a diagnosis. It can miss melanomas and "
              "flag harmless moles. Any lesion that worries you, changes, itches or bleeds "
              "should be seen by a doctor, whatever this tool says.")

VERDICTS = {
    "not_lesion": "Not recognised as a dermoscopic lesion image — no melanoma estimate given",
    "indeterminate": "Indeterminate — see a dermatologist",
    "refer": "Refer to a dermatologist",
    "low": "Low suspicion",
}


@dataclass(frozen=True)
class Prediction:
    """One image's result. Probabilities are calibrated (see `Bundle.calibrate`)."""

    probability: float                 # P(melanoma), the bundle's estimate
    logit: float                       # raw logit behind `probability`
    threshold: float                   # decision threshold used
    view_probabilities: np.ndarray     # (8,) P(melanoma) of each dihedral view
    ood_score: float | None            # > 1: not like the training lesions (None: no check)
    quality: QualityReport

    @property
    def refer(self) -> bool:
        """The decision at the threshold: refer when P(melanoma) >= threshold."""
        return self.probability >= self.threshold

    @property
    def spread(self) -> tuple[float, float]:
        """(lowest, highest) probability over the test-time views."""
        return float(self.view_probabilities.min()), float(self.view_probabilities.max())

    @property
    def indeterminate(self) -> bool:
        """True when some views fall on each side of the threshold: the model's answer
        depends on how the picture was taken."""
        low, high = self.spread
        return low < self.threshold <= high

    @property
    def looks_like_lesion(self) -> bool:
        return self.ood_score is None or self.ood_score <= 1.0

    @property
    def verdict_code(self) -> str:
        if not self.looks_like_lesion:
            return "not_lesion"
        if self.indeterminate:
            return "indeterminate"
        return "refer" if self.refer else "low"

    @property
    def verdict(self) -> str:
        return VERDICTS[self.verdict_code]


class Predictor:
    """A loaded bundle, ready to answer `predict(rgb)`."""

    def __init__(self, bundle: Bundle):
        if bundle.model is None:
            raise ValueError("the bundle was loaded without its model (load_model=False)")
        self.bundle = bundle
        self.runner = ModelRunner(bundle.model)
        self.input_size = self.runner.input_size
        # Trace now, so the first person to upload does not wait for it.
        self.runner(np.zeros((1, self.input_size, self.input_size, 3), np.float32), DIHEDRAL_VIEWS)

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Predictor":
        return cls(load_bundle(folder))

    @property
    def default_threshold(self) -> float:
        return self.bundle.threshold

    def predict(self, rgb: np.ndarray, threshold: float | None = None) -> Prediction:
        """Predict for one uint8 RGB image (h, w, 3) of any size."""
        return self.predict_batch([rgb], threshold)[0]

    def predict_batch(self, images: list[np.ndarray], threshold: float | None = None,
                      batch_size: int = 16) -> list[Prediction]:
        """Predict for many uint8 RGB images of any sizes, `batch_size` at a time."""
        if len(images) == 0:
            return []
        threshold = self.default_threshold if threshold is None else float(threshold)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        batch = np.stack([resize_for_model(rgb, self.input_size) for rgb in images])
        view_logits, features = self.runner.batched(batch, DIHEDRAL_VIEWS, batch_size)
        logits = self.estimate_logits(view_logits)
        ood_scores = self.bundle.ood.score(features, batch) if self.bundle.ood is not None else None
        return [
            Prediction(
                probability=float(self.bundle.calibrate(logits[i])),
                logit=float(logits[i]),
                threshold=threshold,
                view_probabilities=self.bundle.calibrate(view_logits[i]),
                ood_score=None if ood_scores is None else float(ood_scores[i]),
                quality=assess_quality(images[i]),
            )
            for i in range(len(images))
        ]

    def estimate_logits(self, view_logits: np.ndarray) -> np.ndarray:
        """The bundle's point estimate from (n, 8) view logits: the mean over the views
        when it was validated that way, else the unmodified view."""
        if self.bundle.manifest["test_time_views"] == DIHEDRAL_VIEWS:
            return view_logits.mean(axis=1)
        return view_logits[:, 0]
