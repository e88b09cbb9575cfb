"""One upload through the model, memoised per session (see `session.memo`): decoding,
prediction and Grad-CAM heatmaps each run once per image, bundle, layer and direction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from medal_core.bundles.bundle import BundleError
from medal_core.data.datasets import resize_for_model
from medal_core.data.intake import IntakeError, read_upload
from medal_core.serving.client import RemoteGradCAM, RemotePredictor
from medal_core.serving.prediction import Prediction
from medal_ui import caches, session
from medal_views.images import downscale

if TYPE_CHECKING:  # TensorFlow is imported later, once the first page is drawn
    from medal_core.explain.gradcam import CamPair

DISPLAY_SIDE = 1024  # the on-screen copy (and the report's source) is at most this big


@dataclass(frozen=True)
class Analysis:
    """An accepted upload and its prediction at the bundle's own threshold (use
    `results.with_threshold` for the shared one)."""

    display_rgb: np.ndarray  # downscaled copy for display and the report
    model_rgb: np.ndarray  # resized to the model's input size, for Grad-CAM
    notes: tuple[str, ...]  # what intake did to the image
    prediction: Prediction
    # Grad-CAM at the bundle's own layer, from the prediction's pass; None when it
    # needs a gradient pass of its own (custom_cnn) or the service answered.
    cam: CamPair | None = None


def analyse(context: session.AppContext, upload: session.Upload) -> Analysis:
    """Decode and predict (once per image and bundle). Raises IntakeError with the
    user-facing message for a refused file."""

    def compute():
        try:
            image = read_upload(upload.data)
        except IntakeError as error:
            return error
        predictor = context.predictor()
        model_rgb = resize_for_model(image.rgb, predictor.input_size)  # once: also for Grad-CAM
        cam = None
        if isinstance(predictor, RemotePredictor):  # the service decodes the file itself
            prediction = _or_stop(lambda: predictor.predict_file(upload.data))
        else:
            prediction, cam = predictor.predict_and_explain(image.rgb, resized=model_rgb)
        return Analysis(downscale(image.rgb, DISPLAY_SIDE), model_rgb, image.notes, prediction, cam)

    result = session.memo(upload.digest, ("analysis", context.folder, context.sha), compute)
    if isinstance(result, IntakeError):
        raise result
    return result


def _or_stop(call):
    """`call()`, or the inference service's failure on the page (and the page stops);
    such a failure is not memoised, so the next rerun tries again."""
    try:
        return call()
    except session.SERVICE_ERRORS as error:
        session.service_error_and_stop(error)
    except BundleError as error:  # e.g. the service serves another model
        st.error(str(error))
        st.stop()


def analyse_or_stop(context: session.AppContext, upload: session.Upload) -> Analysis:
    """`analyse`, or the intake's message on the page (and the page stops)."""
    try:
        return analyse(context, upload)
    except IntakeError as error:
        st.error(str(error), icon=":material/block:")
        st.stop()


def heatmap(
    context: session.AppContext, upload: session.Upload, analysis: Analysis, layer: str, direction: str
) -> np.ndarray:
    """Grad-CAM heatmap (s, s) in [0, 1] at `layer` that explains the estimate shown:
    averaged over the 8 rotated/mirrored copies, malignant and benign on one scale
    (computed once per image, bundle and layer; both directions at once). At the
    bundle's own layer it usually came with the prediction (`Analysis.cam`)."""
    if analysis.cam is not None and layer == context.bundle.manifest["gradcam_layer"]:
        return analysis.cam[direction]
    pair = session.memo(
        upload.digest,
        ("cam", context.folder, context.sha, layer),
        lambda: _or_stop(lambda: _explain(caches.gradcam_for(context.bundle, layer), upload, analysis)),
    )
    return pair[direction]


def _explain(cam, upload: session.Upload, analysis: Analysis):
    if isinstance(cam, RemoteGradCAM):  # the service decodes the file itself
        return cam.explain_file(upload.data)
    return cam.explain_estimate(analysis.model_rgb)


def activations(
    context: session.AppContext, upload: session.Upload, analysis: Analysis, layer: str, max_maps: int
) -> np.ndarray:
    """The first `max_maps` activation maps (k, h, w) of `layer` for this image."""
    from medal_core.explain.gradcam import activation_maps

    model = context.model()
    return session.memo(
        upload.digest,
        ("maps", context.folder, context.sha, layer, max_maps),
        lambda: activation_maps(model, layer, analysis.model_rgb, max_maps),
    )
