"""A client of the inference service (`medal_core.serving.service`), with the same
interface as an in-process `Predictor`, so the app's pages do not care which they use.

    predictor = RemotePredictor(ServiceClient("http://127.0.0.1:8000"), bundle)
    predictor.predict_file(upload)    # a Prediction, as Predictor.predict gives
    predictor.predict(rgb)            # the same for a decoded image (sent as PNG)

The bundle (loaded without its model) supplies the figures and metadata; the service
does the model work. An upload is sent as its own file, so the answer is the in-process
one; a decoded image (`predict`, `predict_batch`: the Batch page) is sent losslessly as
PNG, downscaled to at most `SEND_SIDE` pixels a side (the model sees 160-224 px and the
quality checks work at 256 px, so the answer is the full image's up to resampling).
Standard library only: no image is written to disk or logged.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from medal_core.bundles.files import BundleError
from medal_core.evaluation import decision
from medal_core.serving.prediction import Prediction

SERVICE_URL_ENV = "MEDAL_SERVICE_URL"
TOKEN_ENV = "MEDAL_API_TOKEN"  # the bearer token, when the service requires one
SEND_SIDE = 2048
TIMEOUT_S = 60.0
PARALLEL_REQUESTS = 4  # a batch's images in flight at once


class ServiceServesAnotherModel(BundleError):
    """The service answers with another model than the bundle chosen in the app, whose
    threshold, figures and Grad-CAM layer would then be applied to the wrong model."""


def check_serves(health: dict, bundle) -> None:
    """Raise `ServiceServesAnotherModel` unless the service's `/v1/health` answer names
    the model of `bundle` (by the sha256 of its model file)."""
    if health.get("model_sha256") != bundle.manifest["model_sha256"]:
        served = health.get("bundle", "an unknown model")
        raise ServiceServesAnotherModel(
            f"The analysis service answers with model '{served}', not '{bundle.name}' chosen "
            f"here: choose {served} in the sidebar, or ask the administrator to serve "
            f"models/{bundle.name} (`python -m medal_core serve --bundle models/{bundle.name}`)."
        )


class ServiceUnavailable(RuntimeError):
    """The service could not be reached or failed; the message says so in plain words."""


class ServiceRefused(ValueError):
    """The service refused the request (a 4xx): `status` and its `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ServiceClient:
    """Calls to one service at `url` (e.g. "http://127.0.0.1:8000"), with an optional
    bearer token."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(
        self, method: str, route: str, body: bytes | None = None, query: dict | None = None
    ) -> tuple[bytes, str]:
        address = self.url + route
        if query:
            address += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        request = urllib.request.Request(address, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/octet-stream")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            message = _error_message(error)
            if 400 <= error.code < 500:
                raise ServiceRefused(error.code, message) from None
            raise ServiceUnavailable(
                f"The analysis service at {self.url} failed "
                f"(HTTP {error.code}: {message}). Please try again in a "
                "moment; if it keeps failing, tell the administrator."
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServiceUnavailable(
                f"The analysis service at {self.url} cannot be reached "
                f"({reason}). Please try again in a moment; if it keeps "
                "failing, tell the administrator."
            ) from None

    def health(self) -> dict:
        body, _ = self._call("GET", "/v1/health")
        return json.loads(body)

    def predict(self, image_file: bytes, threshold: float | None = None) -> dict:
        """The service's JSON answer for one image file's bytes."""
        body, _ = self._call("POST", "/v1/predict", image_file, {"threshold": threshold})
        return json.loads(body)

    def explain(
        self,
        image_file: bytes,
        direction: str = "malignant",
        output: str = "overlay",
        layer: str | None = None,
    ) -> bytes:
        """PNG bytes: the overlay, or with output="heatmap" the bare 8-bit map."""
        body, _ = self._call(
            "POST", "/v1/explain", image_file, {"direction": direction, "output": output, "layer": layer}
        )
        return body


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("error", error.reason))
    except (ValueError, AttributeError, OSError):
        return str(error.reason)


def png_for_sending(rgb: np.ndarray, side: int = SEND_SIDE) -> bytes:
    """Lossless PNG of a uint8 RGB image, downscaled to at most `side` pixels a side."""
    image = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
    scale = side / max(image.size)
    if scale < 1:
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class RemotePredictor:
    """`Predictor`'s interface over the service, for a bundle whose files are local."""

    def __init__(self, client: ServiceClient, bundle):
        self.client = client
        self.bundle = bundle
        self.input_size = int(bundle.manifest["input_size"])

    @property
    def default_threshold(self) -> float:
        return self.bundle.threshold

    @property
    def band_ratio(self) -> float:
        return float(self.bundle.manifest.get("decision", {}).get("band_ratio", decision.DEFAULT_BAND_RATIO))

    def predict(self, rgb: np.ndarray, threshold: float | None = None) -> Prediction:
        return self.predict_batch([rgb], threshold)[0]

    def predict_file(self, image_file: bytes, threshold: float | None = None) -> Prediction:
        """The prediction for an image file's own bytes (what an upload is): the service
        decodes exactly what the app would."""
        answer = self.client.predict(image_file)
        return Prediction.from_dict(answer["detail"]).at_threshold(
            self.default_threshold if threshold is None else float(threshold)
        )

    def predict_batch(
        self, images: list[np.ndarray], threshold: float | None = None, batch_size: int = 16
    ) -> list[Prediction]:
        """One request per image, a few in flight at once; the service batches them."""
        threshold = self.default_threshold if threshold is None else float(threshold)
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")

        def one(rgb: np.ndarray) -> Prediction:
            answer = self.client.predict(png_for_sending(rgb))
            return Prediction.from_dict(answer["detail"]).at_threshold(threshold)

        if len(images) <= 1:
            return [one(rgb) for rgb in images]
        with ThreadPoolExecutor(min(PARALLEL_REQUESTS, len(images))) as pool:
            return list(pool.map(one, images))


class RemoteGradCAM:
    """Grad-CAM through the service, at one layer."""

    def __init__(self, client: ServiceClient, layer: str):
        self.client, self.layer = client, layer

    def explain_file(self, image_file: bytes):
        """(malignant, benign) maps (s, s) in [0, 1] for an image file's own bytes, as
        `GradCAM.explain_estimate` gives for the decoded image at the model's size."""
        from medal_core.explain.gradcam import CamPair

        maps = {}
        for direction in ("malignant", "benign"):
            png = self.client.explain(image_file, direction, "heatmap", self.layer)
            maps[direction] = np.asarray(Image.open(io.BytesIO(png)), np.float32) / 255.0
        return CamPair(maps["malignant"], maps["benign"], scale=float("nan"))
