"""App state shared by every page: the model catalog, the chosen bundle and the shared
decision threshold (both in `st.session_state`), and the caches.

Caches:
* `get_catalog` — `st.cache_data`, keyed on a fingerprint of the models folder, so a
  bundle that appears or is retrained is picked up without a restart;
* `get_predictor`, `get_gradcam` — `st.cache_resource`: one Keras model per bundle
  (and one Grad-CAM extractor per layer) per process;
* per-upload results (prediction, heatmaps, display copy) — in the session's own
  `st.session_state`, keyed by the upload's sha256, so widget changes such as the
  overlay opacity never rerun the model, and nothing from one user's image outlives
  their session or reaches another session.
"""

from __future__ import annotations

import gc
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from medal_core.bundle import Bundle, BundleError
from medal_views import catalog as catalogs

APP_DIR = Path(__file__).resolve().parents[1]
# The chosen bundle and threshold live under their own keys, not under the sidebar
# widgets' keys: a widget's state is dropped on a page where it is not drawn the same
# way, and the shared operating point must survive every page change.
BUNDLE_KEY = "bundle"
THRESHOLD_KEY = "threshold"
BUNDLE_WIDGET = "sidebar_bundle"
THRESHOLD_WIDGET = "sidebar_threshold"
UPLOAD_KEY = "current_upload"
MEMO_KEY = "_upload_memo"


# ---------------------------------------------------------------- models


def models_dir() -> Path:
    return catalogs.models_dir_from_env(APP_DIR / "models")


@st.cache_data(show_spinner=False, max_entries=4)
def _scan(fingerprint: tuple) -> catalogs.Catalog:
    return catalogs.scan(fingerprint[0])


def get_catalog() -> catalogs.Catalog:
    """The bundles of the models folder (rescanned when any bundle file changes)."""
    return _scan(catalogs.fingerprint(models_dir()))


@st.cache_resource(show_spinner="Loading the model…", max_entries=6)
def get_predictor(folder: str, signature: str):
    """The loaded model of a bundle; `signature` (`catalog.signature`) keys the cache
    so a retrained or re-calibrated bundle is loaded afresh."""
    from medal_core.predictor import Predictor  # deferred: TensorFlow is slow to import

    predictor = Predictor.from_folder(folder)
    # TensorFlow and the model are ~0.5 M objects that live as long as the process.
    # Streamlit runs full garbage collections after every script run, which walked them
    # all (~0.25 s each, twice per rerun); frozen, they are no longer walked.
    gc.freeze()
    return predictor


@st.cache_resource(show_spinner=False, max_entries=32)
def get_gradcam(folder: str, signature: str, layer: str):
    from medal_core.explain import GradCAM

    return GradCAM(get_predictor(folder, signature).bundle.model, layer)


@st.cache_data(show_spinner="Measuring latency…", max_entries=16)
def get_latency_ms(folder: str, signature: str) -> float:
    from medal_views.compare import measure_latency

    return measure_latency(get_predictor(folder, signature))


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
        """The loaded model, or an error on the page (and the page stops) when the
        bundle cannot be loaded."""
        return load_predictor(self.name, self.bundle)


def load_predictor(name: str, bundle: Bundle):
    try:
        return get_predictor(str(bundle.folder), catalogs.signature(bundle))
    except BundleError as error:
        st.error(f"The model bundle **{name}** could not be loaded: {error}")
        st.stop()


def _choose_bundle() -> None:
    """Callback of the bundle chooser: a new bundle starts at its own default."""
    st.session_state[BUNDLE_KEY] = st.session_state[BUNDLE_WIDGET]
    bundle = get_catalog().bundles.get(st.session_state[BUNDLE_KEY])
    if bundle is not None:
        set_threshold(bundle.threshold)


def _choose_threshold(widget_key: str) -> None:
    value = st.session_state.get(widget_key)
    if value is not None:                # a cleared field keeps the last threshold
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
    catalog = get_catalog()
    if catalog.empty:
        return None
    _ensure_state(catalog)
    name = st.session_state[BUNDLE_KEY]
    return AppContext(catalog, name, catalog.bundles[name], float(st.session_state[THRESHOLD_KEY]))


def render_sidebar() -> AppContext | None:
    """The shared sidebar: model chooser, threshold slider, broken bundles."""
    from medal_ui import widgets

    catalog = get_catalog()
    with st.sidebar:
        if catalog.empty:
            st.error("No model available.", icon=":material/error:")
            widgets.broken_bundles(catalog, expanded=True)
            return None
        _ensure_state(catalog)
        # The chooser's state is restored only when Streamlit dropped it (a page change
        # makes it a new widget); the threshold field is keyed by its value instead.
        if st.session_state.get(BUNDLE_WIDGET) != st.session_state[BUNDLE_KEY]:
            st.session_state[BUNDLE_WIDGET] = st.session_state[BUNDLE_KEY]
        st.selectbox("Model", catalog.names, key=BUNDLE_WIDGET, on_change=_choose_bundle,
                     help="Model bundles found in the models folder.")
        bundle = catalog.bundles[st.session_state[BUNDLE_KEY]]
        threshold = st.session_state[THRESHOLD_KEY]
        widget_key = threshold_widget_key(threshold)
        st.number_input("Decision threshold", 0.0, 1.0, value=threshold, key=widget_key,
                        step=0.0005, format="%.4f", on_change=_choose_threshold,
                        args=(widget_key,),
                        help="Images with a melanoma probability at or above this are sent "
                             "onwards. Type a value or step with − and +; shared by every "
                             "page; the threshold explorer shows what it means.")
        st.caption("Validated default" if st.session_state[THRESHOLD_KEY] == bundle.threshold
                   else f"Changed (validated default {bundle.threshold:.4f})")
        st.button(f"Reset to the model's default ({bundle.threshold:.4f})",
                  on_click=set_threshold, args=(bundle.threshold,), type="tertiary",
                  icon=":material/restart_alt:")
        widgets.broken_bundles(catalog)
    warm_up_in_background(bundle)
    return current_context()


_warm_ups: set[str] = set()
_warm_ups_lock = threading.Lock()


def warm_up_in_background(bundle: Bundle) -> None:
    """Load a bundle's model and trace its Grad-CAM in a background thread, once per
    process: the first page is drawn and the user picks a file meanwhile, instead of
    waiting for both after the upload. A page that needs them first simply waits for
    this thread (the caches hold one lock per entry), and errors are left for the page
    to report when it loads the bundle itself."""
    folder, signature = str(bundle.folder), catalogs.signature(bundle)
    with _warm_ups_lock:
        if signature in _warm_ups:
            return
        _warm_ups.add(signature)

    def warm_up():
        try:
            get_gradcam(folder, signature, bundle.manifest["gradcam_layer"]).warm_up()
        except Exception:  # noqa: BLE001 — reported by the page that loads the bundle
            pass

    threading.Thread(target=warm_up, name=f"warm-up {bundle.name}", daemon=True).start()


def require_context() -> AppContext:
    """The context, or the explanation of what is missing (and the page stops)."""
    from medal_ui import widgets

    context = current_context()
    if context is None:
        widgets.no_model_message(get_catalog())
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
