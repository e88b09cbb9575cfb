"""The HTTP API of MedAL Triage: FastAPI routes over a prediction backend.

    GET  /v1/health    200 {"status": "ok", "bundle", "replicas", "threshold", "version"}
    POST /v1/predict   body: the image file's bytes; ?threshold= overrides the bundle's
                       200 {"probability", "verdict", "threshold", "sensitivity_at_threshold",
                            "bundle", "warnings", "spread", ...}
    POST /v1/explain   same body; ?direction=malignant|benign ?output=overlay|heatmap
                       ?layer= (a convolutional layer; default the bundle's Grad-CAM
                       layer) -> PNG (the Grad-CAM overlay, or the bare 8-bit map)

Bad input is always a 4xx with `{"error": message}`, the intake's own words: 413 over
the size limit, 422 for a file that is not a usable image or a bad parameter, 401 for
a missing or wrong bearer token (required when `MEDAL_API_TOKEN` is set). Image bytes are
held in memory for the request only: never logged, never written to disk.

The routes decode, check and word the answer; the model work is the backend's, so the
same routes run in-process (`LocalBackend`, for tests and one machine) and behind Ray
Serve (`medal_core.serving.ray_serve`, many replicas with dynamic batching).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import os
from typing import Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image

from medal_core import __version__
from medal_core.bundles.bundle import Bundle
from medal_core.data.intake import MAX_BYTES, IntakeError, read_upload
from medal_core.evaluation import metrics
from medal_core.evaluation.decision import onward_scores
from medal_core.serving.client import TOKEN_ENV
from medal_core.serving.prediction import DISCLAIMER, Prediction

DIRECTIONS = ("malignant", "benign")
OUTPUTS = ("overlay", "heatmap")
OVERLAY_SIDE = 1024  # the explain overlay is drawn on a copy at most this big
OVERLAY_OPACITY = 0.45  # as the app's default


class Backend(Protocol):
    """What the routes need from the model side."""

    bundle: Bundle  # loaded without its model is enough: figures and metadata

    def replicas(self) -> int: ...

    async def predict(self, rgb: np.ndarray) -> Prediction:
        """The prediction at the bundle's own threshold for one uint8 RGB image."""

    async def explain(self, rgb: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(malignant, benign) Grad-CAM maps (s, s) in [0, 1] on one shared scale."""


class LocalBackend:
    """A `Predictor` (and its Grad-CAM) in this process. The model calls run one at a
    time on a worker thread, so the event loop keeps answering health checks."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.bundle = predictor.bundle
        self._lock = asyncio.Lock()
        self._cams: dict[str, object] = {}

    def replicas(self) -> int:
        return 1

    async def predict(self, rgb: np.ndarray) -> Prediction:
        async with self._lock:
            return await asyncio.to_thread(self.predictor.predict, rgb)

    async def explain(self, rgb: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
        async with self._lock:
            return await asyncio.to_thread(explain_maps, self.predictor, self._cams, rgb, layer)


def explain_maps(predictor, cams: dict, rgb: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps at `layer` that explain the estimate (averaged over the 8 views):
    at the bundle's own layer from the prediction pass where it can
    (`Predictor.explain_estimate`), else with one GradCAM per layer kept in `cams`."""
    from medal_core.data.datasets import resize_for_model
    from medal_core.explain.gradcam import GradCAM

    resized = resize_for_model(rgb, predictor.input_size)
    if layer == predictor.bundle.manifest["gradcam_layer"] and predictor.explains_with_its_pass:
        pair = predictor.explain_estimate(resized)
        return pair.malignant, pair.benign
    if layer not in cams:
        cams[layer] = GradCAM(predictor.bundle.model, layer)
    pair = cams[layer].explain_estimate(resized)
    return pair.malignant, pair.benign


class ServiceError(Exception):
    """A request the service refuses: an HTTP status and a message for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def check_threshold(raw: str | None) -> float | None:
    """The `?threshold=` override: None when absent, else a number in [0, 1]."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ServiceError(422, f"threshold must be a number in [0, 1], got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ServiceError(422, f"threshold must be a number in [0, 1], got {raw!r}")
    return value


def check_choice(name: str, raw: str | None, choices: tuple[str, ...]) -> str:
    value = raw or choices[0]
    if value not in choices:
        raise ServiceError(422, f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


async def read_body(request: Request, limit: int = MAX_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (the
    declared length is checked first, so a huge upload is not read at all)."""
    too_big = ServiceError(
        413,
        f"The file is above the {limit / 2**20:.0f} MB limit. Please send "
        "a smaller photo (for example a JPEG export).",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


def decode(body: bytes) -> np.ndarray:
    """The image of a request body (the app's intake), or 422 with its message."""
    try:
        return read_upload(body).rgb
    except IntakeError as error:
        raise ServiceError(422, str(error)) from None


def sensitivity_at(bundle: Bundle, threshold: float) -> dict:
    """The app's sensitivity at `threshold` on the bundle's report set (the calibration
    set for bundles without one), images with no estimate counted as sent onwards."""
    stored = bundle.report_predictions or bundle.predictions
    onward = onward_scores(stored.probabilities, stored.no_estimate)
    # Only the sensitivity: `threshold_metrics` would also bootstrap F1 (~1 s a request).
    confusion = metrics.confusion_at(stored.labels, onward, threshold)
    estimate = metrics.Estimate.of(confusion.tp, confusion.tp + confusion.fn)
    return {
        "value": estimate.value,
        "low": estimate.low,
        "high": estimate.high,
        "melanomas": estimate.total,
        "set": "report" if bundle.report_predictions is not None else "calibration",
    }


def prediction_body(prediction: Prediction, bundle: Bundle) -> dict:
    """The JSON answer for one image."""
    estimate = prediction.has_estimate
    return {
        "probability": prediction.probability if estimate else None,
        "verdict": prediction.verdict_code,
        "no_estimate_reason": prediction.no_estimate_reason or None,
        "onward": prediction.onward,
        "threshold": prediction.threshold,
        "default_threshold": bundle.threshold,
        "sensitivity_at_threshold": sensitivity_at(bundle, prediction.threshold),
        "spread": list(prediction.spread) if estimate else None,
        "warnings": prediction.warnings(),
        "bundle": bundle.name,
        "disclaimer": DISCLAIMER,
        "detail": prediction.to_dict(),
    }


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def explain_picture(rgb: np.ndarray, heat: np.ndarray, output: str) -> bytes:
    """PNG of the overlay on a copy of the image at most OVERLAY_SIDE pixels a side, or
    of the bare map (8-bit grey, 255 = the strongest evidence in the image)."""
    if output == "heatmap":
        return png_bytes(np.rint(np.clip(heat, 0, 1) * 255).astype(np.uint8))
    from medal_core.explain.overlay import overlay_heatmap

    scale = OVERLAY_SIDE / max(rgb.shape[:2])
    if scale < 1:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    return png_bytes(overlay_heatmap(rgb, heat, OVERLAY_OPACITY))


def create_app(backend: Backend, token: str | None = None, max_bytes: int = MAX_BYTES) -> FastAPI:
    """The FastAPI app over `backend`. With `token`, every route but health needs
    `Authorization: Bearer <token>`."""
    app = FastAPI(
        title="MedAL Triage",
        version=__version__,
        description="Melanoma triage aid for dermoscopic images. " + DISCLAIMER,
    )

    @app.exception_handler(ServiceError)
    async def refused(_: Request, error: ServiceError):
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError):
        return JSONResponse({"error": f"invalid request: {error.errors()}"}, status_code=422)

    def authorise(request: Request) -> None:
        if token is None:
            return
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise ServiceError(401, "missing or wrong bearer token (header 'Authorization: Bearer <token>')")

    @app.get("/v1/health")
    async def health():
        return {
            "status": "ok",
            "bundle": backend.bundle.name,
            "model_sha256": backend.bundle.manifest["model_sha256"],
            "replicas": backend.replicas(),
            "threshold": backend.bundle.threshold,
            "version": __version__,
        }

    @app.post("/v1/predict")
    async def predict(request: Request):
        authorise(request)
        threshold = check_threshold(request.query_params.get("threshold"))
        rgb = decode(await read_body(request, max_bytes))
        prediction = await backend.predict(rgb)
        if threshold is not None:
            prediction = prediction.at_threshold(threshold)
        return prediction_body(prediction, backend.bundle)

    @app.post("/v1/explain")
    async def explain(request: Request):
        authorise(request)
        direction = check_choice("direction", request.query_params.get("direction"), DIRECTIONS)
        output = check_choice("output", request.query_params.get("output"), OUTPUTS)
        layer = request.query_params.get("layer") or backend.bundle.manifest["gradcam_layer"]
        rgb = decode(await read_body(request, max_bytes))
        try:
            malignant, benign = await backend.explain(rgb, layer)
        except ValueError as error:  # e.g. no such convolutional layer
            raise ServiceError(422, str(error)) from None
        heat = malignant if direction == "malignant" else benign
        return Response(
            explain_picture(rgb, heat, output), media_type="image/png", headers={"Cache-Control": "no-store"}
        )

    return app


def token_from_env() -> str | None:
    """MEDAL_API_TOKEN, or None when unset or empty."""
    return os.environ.get(TOKEN_ENV) or None
