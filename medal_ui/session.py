"""Per-session state: the chosen bundle and the shared decision threshold (under their
own keys in `st.session_state`), the current upload, and the memo of its results.

Per-upload results (prediction, heatmaps, display copy) are kept in the session's own
state, keyed by the upload's sha256, so widget changes such as the overlay opacity never
rerun the model, and nothing from one user's image outlives their session or reaches
another session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st

from medal_core.bundles.bundle import Bundle, BundleError
from medal_core.serving.client import ServiceRefused, ServiceUnavailable
from medal_ui import caches
from medal_views import catalog as catalogs

# The chosen bundle and threshold live under their own keys, not under the sidebar
# widgets' keys: a widget's state is dropped on a page where it is not drawn the same
# way, and the shared operating point must survive every page change.
BUNDLE_KEY = "bundle"
THRESHOLD_KEY = "threshold"
BUNDLE_WIDGET = "sidebar_bundle"
THRESHOLD_WIDGET = "sidebar_threshold"
UPLOAD_KEY = "current_upload"
MEMO_KEY = "_upload_memo"
SERVICE_ERRORS = (ServiceUnavailable, ServiceRefused)


@dataclass(frozen=True)
class AppContext:
    """What a page needs: the catalog, the chosen bundle and the shared threshold."""

    catalog: catalogs.Catalog
    name: str
    bundle: Bundle
    threshold: float

    @property
    def folder(self) -> str:
        return str(self.bundle.folder)

    @property
    def sha(self) -> str:
        """The bundle's signature (see `catalog.signature`), for cache keys."""
        return catalogs.signature(self.bundle)

    def predictor(self):
        """What answers for images (the inference service when one is configured, else
        the model here), or an error on the page (and the page stops) when the bundle
        cannot be loaded."""
        return load_or_stop(self.name, lambda: caches.predictor_for(self.bundle))

    def model(self):
        """The bundle's Keras model in this process (for the pages that look inside the
        network), or an error on the page (and the page stops)."""
        return load_or_stop(self.name, lambda: caches.get_predictor(self.folder, self.sha)).bundle.model


def load_or_stop(name: str, load):
    """`load()`, or its error on the page (and the page stops)."""
    try:
        return load()
    except BundleError as error:
        st.error(f"The model bundle **{name}** could not be loaded: {error}")
        st.stop()
    except SERVICE_ERRORS as error:  # the service is asked which model it serves
        service_error_and_stop(error)


def service_error_and_stop(error: Exception) -> None:
    """An unreachable or failing inference service, on the page; the page stops."""
    st.error(str(error), icon=":material/cloud_off:")
    st.stop()


def _choose_bundle() -> None:
    """Callback of the bundle chooser: a new bundle starts at its own default."""
    st.session_state[BUNDLE_KEY] = st.session_state[BUNDLE_WIDGET]
    bundle = caches.get_catalog().bundles.get(st.session_state[BUNDLE_KEY])
    if bundle is not None:
        set_threshold(bundle.threshold)


def _choose_threshold(widget_key: str) -> None:
    value = st.session_state.get(widget_key)
    if value is not None:  # a cleared field keeps the last threshold
        set_threshold(value)


def set_threshold(value: float) -> None:
    """Callback helper: set the shared threshold (before the page is drawn)."""
    st.session_state[THRESHOLD_KEY] = float(min(1.0, max(0.0, value)))


def threshold_widget_key(threshold: float) -> str:
    """The sidebar field's key for a shared threshold. The field is a new widget, made
    from the shared value, whenever that value changes (typed, a preset, another
    bundle, another page): its state is never written over, so what it shows is the
    value the figures use, to the last digit, and no step snaps it to a grid."""
    return f"{THRESHOLD_WIDGET}_{threshold!r}"


def _ensure_state(catalog: catalogs.Catalog) -> None:
    """Choose the default bundle and its threshold on first use, or when the chosen
    bundle went away."""
    if st.session_state.get(BUNDLE_KEY) not in catalog.bundles:
        st.session_state[BUNDLE_KEY] = catalog.default_name()
        st.session_state.pop(THRESHOLD_KEY, None)
    if THRESHOLD_KEY not in st.session_state:
        st.session_state[THRESHOLD_KEY] = catalog.bundles[st.session_state[BUNDLE_KEY]].threshold


def current_context() -> AppContext | None:
    """The context from the catalog and session state; None when no bundle is usable."""
    catalog = caches.get_catalog()
    if catalog.empty:
        return None
    _ensure_state(catalog)
    name = st.session_state[BUNDLE_KEY]
    return AppContext(catalog, name, catalog.bundles[name], float(st.session_state[THRESHOLD_KEY]))


def require_context() -> AppContext:
    """The context, or the explanation of what is missing (and the page stops)."""
    from medal_ui import widgets

    context = current_context()
    if context is None:
        widgets.no_model_message(caches.get_catalog())
        st.stop()
    return context


# ---------------------------------------------------------------- uploads


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    digest: str


def make_upload(name: str, data: bytes) -> Upload:
    return Upload(name, data, hashlib.sha256(data).hexdigest())


def remember_upload(widget_key: str) -> None:
    """on_change callback of an uploader/camera widget: keep its file for this session
    (so the image survives a visit to another page), or forget it when cleared."""
    file = st.session_state.get(widget_key)
    if file is None:
        st.session_state.pop(UPLOAD_KEY, None)
        st.session_state.pop(MEMO_KEY, None)
    else:
        st.session_state[UPLOAD_KEY] = make_upload(file.name, file.getvalue())


def current_upload() -> Upload | None:
    return st.session_state.get(UPLOAD_KEY)


def forget_upload() -> None:
    st.session_state.pop(UPLOAD_KEY, None)
    st.session_state.pop(MEMO_KEY, None)


def memo(digest: str, key: tuple, compute):
    """`compute()` once per (upload digest, key) in this session; results for other
    uploads are dropped, so at most one image's results are held."""
    store = st.session_state.get(MEMO_KEY)
    if store is None or store.get("digest") != digest:
        store = {"digest": digest, "values": {}}
        st.session_state[MEMO_KEY] = store
    if key not in store["values"]:
        store["values"][key] = compute()
    return store["values"][key]
