"""Everything the app asks of a model about one image (or many), as a small result object.

    predictor = Predictor.from_folder("models/mobilenet")
    result = predictor.predict(read_upload(data).rgb)
    result.probability, result.verdict_code, result.has_estimate, result.spread

The bundle is loaded and the graph traced once; each call is then one compiled forward
pass over 8 rotated/mirrored copies of the image (flips × quarter turns): the estimate
is their average, and their spread shows how much it depends on the orientation. The
shared screen (`medal_core.screening.screen`) decides whether the image gets one at all.
The verdict is the decision policy's (`medal_core.evaluation.decision`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medal_core.bundles.bundle import Bundle, load_bundle
from medal_core.data.datasets import resize_for_model
from medal_core.evaluation import decision
from medal_core.explain.gradcam import CamPair, averaged_cam_pair
from medal_core.modeling.runner import DIHEDRAL_VIEWS, ModelRunner
from medal_core.screening.quality import assess_quality
from medal_core.screening.screen import ScreenScores
from medal_core.serving.prediction import DISCLAIMER, Prediction

__all__ = ["DISCLAIMER", "Prediction", "Predictor"]


class Predictor:
    """A loaded bundle, ready to answer `predict(rgb)`."""

    def __init__(self, bundle: Bundle):
        if bundle.model is None:
            raise ValueError("the bundle was loaded without its model (load_model=False)")
        self.bundle = bundle
        self.runner = ModelRunner(bundle.model)
        self.input_size = self.runner.input_size
        # Trace now, so the first person to upload does not wait for it.
        self.runner.views_and_logit_maps(np.zeros((1, self.input_size, self.input_size, 3), np.float32))
        if bundle.screen is not None:
            bundle.screen.scores(
                np.zeros((1, bundle.screen.input_size, bundle.screen.input_size, 3), np.uint8)
            )

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Predictor":
        return cls(load_bundle(folder))

    @property
    def default_threshold(self) -> float:
        return self.bundle.threshold

    @property
    def band_ratio(self) -> float:
        """The borderline band of the bundle's decision policy (odds ratio above the
        threshold), as validated on its calibration set."""
        return float(self.bundle.manifest.get("decision", {}).get("band_ratio", decision.DEFAULT_BAND_RATIO))

    def predict(
        self, rgb: np.ndarray, threshold: float | None = None, resized: np.ndarray | None = None
    ) -> Prediction:
        """Predict for one uint8 RGB image (h, w, 3) of any size. `resized`: the same
        image already at the model's input size (`resize_for_model`), when the caller
        has it, so that it is not resized twice."""
        return self.predict_batch([rgb], threshold, resized=None if resized is None else [resized])[0]

    def predict_and_explain(
        self, rgb: np.ndarray, threshold: float | None = None, resized: np.ndarray | None = None
    ) -> tuple[Prediction, CamPair | None]:
        """`predict`, and the Grad-CAM maps that explain its estimate at the bundle's
        Grad-CAM layer, from the same pass: where that layer is the one the classifier
        pools (the transfer models and ensembles), the logit's gradient there is the
        head's kernel / (h·w) at every position, so Grad-CAM needs no gradient pass and
        no model of its own (`ModelRunner.views_and_logit_maps`; equal to
        `GradCAM.explain_estimate` up to float rounding). The maps are None for a bundle
        whose layer is another (`custom_cnn`'s, before its last pooling): use `GradCAM`."""
        copies = None if resized is None else [resized]
        predictions, logit_maps = self._predict_with_maps([rgb], threshold, 1, copies)
        if not self.explains_with_its_pass:
            return predictions[0], None
        return predictions[0], averaged_cam_pair(logit_maps[0], (self.input_size, self.input_size))

    def explain_estimate(self, resized: np.ndarray) -> CamPair:
        """Only the maps of `predict_and_explain`, for one image already at the model's
        size (s, s, 3): the model's pass alone, without the screen and quality checks a
        prediction adds. Needs `explains_with_its_pass`."""
        if not self.explains_with_its_pass:
            raise ValueError("this bundle's Grad-CAM layer needs a gradient pass: use GradCAM")
        _, logit_maps = self.runner.views_and_logit_maps(np.asarray(resized)[None])
        return averaged_cam_pair(logit_maps[0], (self.input_size, self.input_size))

    @property
    def explains_with_its_pass(self) -> bool:
        """Whether `predict_and_explain` gives the Grad-CAM maps: the bundle's Grad-CAM
        layer is the one its classifier pools."""
        return self.bundle.manifest["gradcam_layer"] == self.runner.pooled_maps_layer

    def predict_batch(
        self,
        images: list[np.ndarray],
        threshold: float | None = None,
        batch_size: int = 16,
        resized: list[np.ndarray] | None = None,
    ) -> list[Prediction]:
        """Predict for many uint8 RGB images of any sizes, `batch_size` at a time (the
        quality checks read the images themselves, the model their resized copies)."""
        if len(images) == 0:
            return []
        return self._predict_with_maps(images, threshold, batch_size, resized)[0]

    def _predict_with_maps(
        self,
        images: list[np.ndarray],
        threshold: float | None,
        batch_size: int,
        resized: list[np.ndarray] | None,
    ) -> tuple[list[Prediction], np.ndarray]:
        """`predict_batch`'s predictions and the (n, 8, h, w) logit maps of its pass."""
        threshold = self.default_threshold if threshold is None else float(threshold)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if resized is None:
            resized = [resize_for_model(rgb, self.input_size) for rgb in images]
        elif len(resized) != len(images) or any(
            r.shape != (self.input_size, self.input_size, 3) for r in resized
        ):
            raise ValueError(
                f"resized must hold one ({self.input_size}, {self.input_size}, 3) copy per image"
            )
        batch = np.stack(resized)
        view_logits, logit_maps = self._views(batch, batch_size)
        logits = self.estimate_logits(view_logits)
        screened = self.screen(images, batch)
        return [
            Prediction(
                probability=float(self.bundle.calibrate(logits[i])),
                logit=float(logits[i]),
                threshold=threshold,
                view_probabilities=self.bundle.calibrate(view_logits[i]),
                ood_score=None if screened is None else float(screened.ood[i]),
                quality=assess_quality(images[i]),
                band_ratio=self.band_ratio,
                clinical_score=None if screened is None else float(screened.clinical[i]),
                clinical_limit=1.0 if screened is None else screened.clinical_limit,
            )
            for i in range(len(images))
        ], logit_maps

    def _views(self, batch: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 8) view logits and (n, 8, h, w) logit maps, `batch_size` images at a time,
        from the one traced pass (`ModelRunner.views_and_logit_maps`)."""
        parts = [
            self.runner.views_and_logit_maps(batch[i : i + batch_size])
            for i in range(0, len(batch), batch_size)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def screen(self, images: list[np.ndarray], model_sized: np.ndarray) -> ScreenScores | None:
        """The shared screen's scores (None for a bundle calibrated without one), on
        copies at the screen's size: the model's own when the sizes agree."""
        screen = self.bundle.screen
        if screen is None:
            return None
        if screen.input_size == self.input_size:
            return screen.scores(model_sized)
        return screen.scores(np.stack([resize_for_model(rgb, screen.input_size) for rgb in images]))

    def estimate_logits(self, view_logits: np.ndarray) -> np.ndarray:
        """The bundle's point estimate from (n, 8) view logits: the mean over the views
        when it was validated that way, else the unmodified view."""
        if self.bundle.manifest["test_time_views"] == DIHEDRAL_VIEWS:
            return view_logits.mean(axis=1)
        return view_logits[:, 0]
