"""The app's caches, shared by every session of this process, and where the model runs.

* `get_catalog` — `st.cache_data`, keyed on a fingerprint of the models folder, so a
  bundle that appears or is retrained is picked up without a restart;
* `get_predictor`, `get_gradcam` — `st.cache_resource`: one Keras model per bundle
  (and one Grad-CAM extractor per layer) per process;
* the inference service: with `MEDAL_SERVICE_URL` set (environment or
  `.streamlit/secrets.toml`), `predictor_for` and `gradcam_for` answer through the
  service (`medal_core.serving.client`) instead of this process. The Compare page's
  latency and parameters and the Explainability page's layer list and activation maps
  still use the model here (`get_predictor`).

Nothing here holds a user's image: per-upload results live in that session's state
(`medal_ui.session.memo`).
"""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import streamlit as st

from medal_core.bundles.bundle import Bundle
from medal_core.serving.client import (
    SERVICE_URL_ENV,
    TOKEN_ENV,
    RemoteGradCAM,
    RemotePredictor,
    ServiceClient,
    check_serves,
)
from medal_views import catalog as catalogs

APP_DIR = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- models


def models_dir() -> Path:
    return catalogs.models_dir_from_env(APP_DIR / "models")


# A resource, not data: the same Catalog object for every run and session (it is never
# changed), instead of an unpickled copy per call, so its bundles' signatures are
# computed once.
@st.cache_resource(show_spinner=False, max_entries=4)
def _scan(fingerprint: tuple) -> catalogs.Catalog:
    return catalogs.scan(fingerprint[0])


def get_catalog() -> catalogs.Catalog:
    """The bundles of the models folder (rescanned when any bundle file changes)."""
    return _scan(catalogs.fingerprint(models_dir()))


@st.cache_resource(show_spinner="Loading the model…", max_entries=6)
def get_predictor(folder: str, signature: str):
    """The loaded model of a bundle; `signature` (`catalog.signature`) keys the cache
    so a retrained or re-calibrated bundle is loaded afresh."""
    from medal_core.serving.predictor import Predictor  # deferred: TensorFlow is slow to import

    predictor = Predictor.from_folder(folder)
    # TensorFlow and the model are ~0.5 M objects that live as long as the process.
    # Streamlit runs full garbage collections after every script run, which walked them
    # all (~0.25 s each, twice per rerun); frozen, they are no longer walked.
    gc.freeze()
    return predictor


@st.cache_resource(show_spinner=False, max_entries=32)
def get_gradcam(folder: str, signature: str, layer: str):
    from medal_core.explain.gradcam import GradCAM

    return GradCAM(get_predictor(folder, signature).bundle.model, layer)


@st.cache_data(show_spinner="Measuring latency…", max_entries=16)
def get_latency_ms(folder: str, signature: str) -> float:
    from medal_views.compare import measure_latency

    return measure_latency(get_predictor(folder, signature))


# ---------------------------------------------------------------- the inference service


def _setting(name: str) -> str | None:
    """An environment variable, else the same key in `.streamlit/secrets.toml`."""
    if os.environ.get(name):
        return os.environ[name]
    try:
        value = st.secrets.get(name)
    except Exception:  # noqa: BLE001 — no secrets file: the setting is simply absent
        return None
    return str(value) if value else None


def service_url() -> str | None:
    """The inference service's URL, or None to run the model in this process."""
    return _setting(SERVICE_URL_ENV)


@st.cache_resource(show_spinner=False, max_entries=4)
def _service_client(url: str, token: str | None) -> ServiceClient:
    return ServiceClient(url, token)


def service_client() -> ServiceClient | None:
    url = service_url()
    return None if url is None else _service_client(url, _setting(TOKEN_ENV))


@st.cache_data(show_spinner=False, ttl=30, max_entries=4)
def _service_health(url: str, token: str | None) -> dict:
    """The service's /v1/health answer, asked at most every 30 s."""
    return ServiceClient(url, token).health()


def _checked_service_client(bundle: Bundle) -> ServiceClient | None:
    """The service client, checked to serve `bundle`'s model (BundleError otherwise:
    its threshold and figures must never be applied to another model's answers)."""
    client = service_client()
    if client is not None:
        check_serves(_service_health(client.url, client.token), bundle)
    return client


def predictor_for(bundle: Bundle):
    """What answers for images: the service when one is configured, else the bundle's
    model in this process (raises BundleError when it cannot be loaded, or when the
    service serves another model)."""
    client = _checked_service_client(bundle)
    if client is not None:
        return RemotePredictor(client, bundle)
    return get_predictor(str(bundle.folder), catalogs.signature(bundle))


def gradcam_for(bundle: Bundle, layer: str):
    """Grad-CAM at `layer`, through the service when one is configured."""
    client = _checked_service_client(bundle)
    if client is not None:
        return RemoteGradCAM(client, layer)
    return get_gradcam(str(bundle.folder), catalogs.signature(bundle), layer)


# ---------------------------------------------------------------- warm-up


_warm_ups: set[str] = set()
_warm_ups_lock = threading.Lock()


def warm_up_in_background(bundle: Bundle) -> None:
    """Load a bundle's model and trace its pass in a background thread, once per
    process: the first page is drawn and the user picks a file meanwhile, instead of
    waiting for both after the upload. The pass also gives the Grad-CAM maps at the
    bundle's layer (`Predictor.predict_and_explain`); only a bundle whose layer needs a
    gradient pass (custom_cnn) has its Grad-CAM traced here too. A page that needs them first simply waits for
    this thread (the caches hold one lock per entry), and errors are left for the page
    to report when it loads the bundle itself."""
    if service_url() is not None:
        return  # the service holds the model
    folder, signature = str(bundle.folder), catalogs.signature(bundle)
    with _warm_ups_lock:
        if signature in _warm_ups:
            return
        _warm_ups.add(signature)

    def warm_up():
        try:
            if not get_predictor(folder, signature).explains_with_its_pass:
                get_gradcam(folder, signature, bundle.manifest["gradcam_layer"]).warm_up()
        except Exception:  # noqa: BLE001 — reported by the page that loads the bundle
            pass

    threading.Thread(target=warm_up, name=f"warm-up {bundle.name}", daemon=True).start()
