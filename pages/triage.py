"""Triage (home): one image in, the estimate, decision, Grad-CAM and a case report out."""

import streamlit as st

from medal_core.explain.overlay import colour_scale, overlay_heatmap
from medal_ui import analysis, layout, session, widgets
from medal_views.explorer import report_threshold_figures, threshold_note
from medal_views.report import case_report_html, report_file_name
from medal_views.results import with_threshold

layout.start_page()

st.title("Triage")
st.caption(
    "Upload a dermoscopic image of one skin lesion to get the model's estimate of the "
    "probability of melanoma and a suggested next step."
)

context = session.require_context()
upload = widgets.image_input("triage")
if upload is None:
    st.markdown(
        "The image is analysed in memory on this server and is never stored. "
        "Use a **dermoscopy** image (taken through a dermatoscope), centred on the "
        "lesion."
    )
    widgets.disclaimer()
    st.stop()

result = analysis.analyse_or_stop(context, upload)

prediction = with_threshold(result.prediction, context.threshold)
widgets.show_warnings(prediction, result.notes)
widgets.result_card(prediction)
st.caption(threshold_note(context.bundle, context.threshold))

overlay = None
direction = "malignant"
if prediction.has_estimate:
    original_col, overlay_col, controls = st.columns([1, 1, 0.7])
    with controls:
        direction = st.segmented_control(
            "Heatmap shows evidence for",
            ["malignant", "benign"],
            default="malignant",
            key="triage_direction",
            required=True,
            help="Grad-CAM: the regions that pushed the model towards this answer.",
        )
        opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="triage_opacity")
        st.caption(
            "Warm colours mark the regions that weighed most for the chosen answer, "
            "averaged over the 8 rotated and mirrored copies the estimate averages. "
            "A heatmap shows where the model looked, not why it is right."
        )
        st.image(
            colour_scale(),
            caption="0 → 1: the strongest evidence in this image, either "
            "direction (malignant and benign share one scale)",
            width="stretch",
        )
    layer = context.bundle.manifest["gradcam_layer"]
    heat = analysis.heatmap(context, upload, result, layer, direction)
    overlay = overlay_heatmap(result.display_rgb, heat, opacity)
    original_col.image(result.display_rgb, caption=f"Uploaded image ({upload.name})", width="stretch")
    overlay_col.image(overlay, caption=f"Grad-CAM: evidence for {direction}", width="stretch")
else:
    st.image(result.display_rgb, caption=f"Uploaded image ({upload.name})", width=420)


def report() -> str:
    # Called only when the button is clicked: the report encodes two images. A result
    # sent onwards is explained by the evidence for malignant, whatever is on screen.
    shown, report_overlay = direction, overlay
    if prediction.has_estimate and prediction.onward and direction != "malignant":
        shown = "malignant"
        report_overlay = overlay_heatmap(
            result.display_rgb, analysis.heatmap(context, upload, result, layer, shown), opacity
        )
    return case_report_html(
        original_rgb=result.display_rgb,
        overlay_rgb=report_overlay,
        prediction=prediction,
        model_name=context.name,
        threshold=context.threshold,
        file_name=upload.name,
        direction=shown,
        notes=result.notes,
        threshold_figures=report_threshold_figures(context.bundle, context.threshold),
    )


st.download_button(
    "Download case report (HTML)",
    report,
    file_name=report_file_name(upload.name),
    mime="text/html",
    icon=":material/download:",
    on_click="ignore",
)
widgets.disclaimer()
