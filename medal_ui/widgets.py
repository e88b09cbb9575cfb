"""Widgets used on several pages: the disclaimer, messages about missing or broken
bundles, the image input, warnings and the result card."""

from __future__ import annotations

import streamlit as st

from medal_core.serving.prediction import DISCLAIMER, Prediction
from medal_ui import session
from medal_views.catalog import Catalog
from medal_views.results import INDETERMINATE_MESSAGE, percent, prediction_warnings, verdict_text

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]
_VERDICT_ICONS = {
    "refer": ":material/priority_high:",
    "low": ":material/check_circle:",
    "indeterminate": ":material/help:",
    "no_estimate": ":material/image_not_supported:",
}
_WARNING_ICONS = {
    "not_lesion": ":material/image_not_supported:",
    "not_dermoscopic": ":material/photo_camera:",
    "blurred": ":material/blur_on:",
    "too_dark": ":material/brightness_low:",
    "overexposed": ":material/flare:",
    "low_resolution": ":material/photo_size_select_small:",
}


_MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~$:")


def md_escape(text: str) -> str:
    """User text (e.g. a file name) made inert for Streamlit Markdown: no links, images,
    emphasis or HTML."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in str(text))


def disclaimer() -> None:
    st.info(DISCLAIMER, icon=":material/medical_information:")


def broken_bundles(catalog: Catalog, expanded: bool = False) -> None:
    """List the bundles that could not be loaded, with what is wrong and the fix."""
    if not catalog.broken:
        return
    count = len(catalog.broken)
    label = f"{count} model bundle{'s' if count > 1 else ''} could not be loaded"
    with st.expander(label, expanded=expanded, icon=":material/warning:"):
        for name, message in catalog.broken:
            st.markdown(f"**{name}**: {message}")


def no_model_message(catalog: Catalog) -> None:
    """The full explanation when no bundle is usable."""
    st.error("**No model is available, so the app cannot triage images yet.**", icon=":material/error:")
    st.markdown(catalog.help_text())
    broken_bundles(catalog, expanded=True)


def image_input(prefix: str, label: str = "Upload a dermoscopic image") -> session.Upload | None:
    """File uploader, or the camera behind a toggle (so the browser does not ask for
    camera permission on load). The image is kept for the session (pages share it)."""
    use_camera = st.toggle(
        "Use the camera instead",
        key=f"{prefix}_use_camera",
        help="Take a photo with this device's camera (the browser asks for permission).",
    )
    if use_camera:
        st.camera_input(
            "Take a photo of the lesion",
            key=f"{prefix}_camera",
            on_change=session.remember_upload,
            args=(f"{prefix}_camera",),
        )
    else:
        st.file_uploader(
            label,
            type=IMAGE_TYPES,
            key=f"{prefix}_file",
            on_change=session.remember_upload,
            args=(f"{prefix}_file",),
            help="JPEG, PNG, WebP, BMP or TIFF, up to 20 MB. The image is "
            "processed in memory and never stored.",
        )
    upload = session.current_upload()
    widget_empty = st.session_state.get(f"{prefix}_camera" if use_camera else f"{prefix}_file") is None
    if upload is not None and widget_empty:
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.caption(f"Showing the image from earlier in this session: **{md_escape(upload.name)}**")
        right.button("Clear", on_click=session.forget_upload, icon=":material/close:", key=f"{prefix}_clear")
    return upload


def show_warnings(prediction: Prediction, notes=()) -> None:
    """Not-a-lesion and photo-quality warnings (shown before the result), then what
    intake did to the image."""
    for code, message in prediction_warnings(prediction):
        st.warning(message, icon=_WARNING_ICONS.get(code, ":material/warning:"))
    if notes:
        st.caption("Image handling: " + "; ".join(notes) + ".")


def verdict_box(prediction: Prediction) -> None:
    """The decision in plain words, in a box coloured by its urgency."""
    box = {"refer": st.error, "low": st.success, "indeterminate": st.warning, "no_estimate": st.info}[
        prediction.verdict_code
    ]
    box(f"**{verdict_text(prediction)}**", icon=_VERDICT_ICONS[prediction.verdict_code])


def result_card(prediction: Prediction) -> None:
    """Probability, decision in plain words and the test-time spread."""
    code = prediction.verdict_code
    with st.container(border=True):
        if code == "no_estimate":  # no probability claim for it
            verdict_box(prediction)
            return
        low, high = prediction.spread
        left, right = st.columns([1, 2], vertical_alignment="center")
        left.metric(
            "Probability of melanoma",
            percent(prediction.probability),
            help="Calibrated estimate from the model (class-weighting offset removed, "
            "temperature-scaled), averaged over 8 rotated and mirrored copies "
            "of this one photo.",
        )
        with right:
            verdict_box(prediction)
            st.caption(
                f"At decision threshold {prediction.threshold:.4f}. Over 8 rotated "
                f"and mirrored copies of this photo the probability ranged "
                f"{percent(low)} – {percent(high)} (copies of one photo, not different "
                "photos)."
            )
        if code == "indeterminate":
            st.warning(INDETERMINATE_MESSAGE, icon=":material/help:")
