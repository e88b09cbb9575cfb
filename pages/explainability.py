"""Explainability: Grad-CAM at any convolutional layer, and what a layer "sees"."""

import cv2
import streamlit as st

from medal_core.explain.gradcam import conv_layer_names, layer_channels, layers_worth_looking_at
from medal_core.explain.overlay import activation_grid, colour_scale, overlay_heatmap
from medal_ui import analysis, layout, session, widgets
from medal_views.results import with_threshold

layout.start_page()

context = session.require_context()
st.title("Explainability")
st.caption(
    "Where in the image the model found its evidence (Grad-CAM), layer by layer, and "
    "the raw activation maps of a layer."
)

upload = widgets.image_input("explain")
if upload is None:
    st.info("Upload an image (or use the one from the Triage page) to see its explanations.")
    st.stop()
result = analysis.analyse_or_stop(context, upload)

model = context.model()
layers = conv_layer_names(model)
worth = dict((name, label) for label, name in layers_worth_looking_at(model))
default_layer = context.bundle.manifest["gradcam_layer"]
prediction = with_threshold(result.prediction, context.threshold)
widgets.show_warnings(prediction)
widgets.result_card(prediction)

st.subheader("Grad-CAM")
c1, c2, c3 = st.columns([3, 2, 2], vertical_alignment="bottom")
every_layer = st.toggle(
    "List every convolutional layer",
    key="explain_every_layer",
    help=f"{len(layers)} layers; the short list has one per stage.",
)
choices = layers if every_layer else list(worth)
layer = c1.selectbox(
    "Layer",
    choices,
    index=choices.index(default_layer) if default_layer in choices else len(choices) - 1,
    format_func=lambda name: worth.get(name, name),
    key=f"explain_layer_{context.name}_{every_layer}",
    help="Layers near the output see large, meaningful regions; early layers see edges and colours.",
)
direction = c2.segmented_control(
    "Evidence for", ["malignant", "benign"], default="malignant", key="explain_direction", required=True
)
opacity = c3.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="explain_opacity")
heat = analysis.heatmap(context, upload, result, layer, direction)
left, right = st.columns(2)
left.image(result.display_rgb, caption=upload.name, width="stretch")
right.image(
    overlay_heatmap(result.display_rgb, heat, opacity),
    caption=f"Grad-CAM at {layer}, evidence for {direction}, averaged over the 8 "
    "rotated/mirrored copies the estimate averages",
    width="stretch",
)
right.image(
    colour_scale(),
    caption="0 → 1: the strongest evidence in this image, either "
    "direction (one scale for malignant and benign)",
    width="stretch",
)

st.subheader("Activation maps")
a1, a2 = st.columns([3, 2])
map_layer = a1.selectbox(
    "Layer",
    choices,
    index=min(len(choices) - 1, len(choices) // 2),
    format_func=lambda name: worth.get(name, name),
    key=f"explain_map_layer_{context.name}_{every_layer}",
)
channels = layer_channels(model, map_layer)
count = (
    a2.slider(
        "Channels to show",
        1,
        min(64, channels),
        min(16, channels),
        key=f"explain_map_count_{context.name}_{map_layer}",
    )
    if channels > 1
    else 1
)
maps = analysis.activations(context, upload, result, map_layer, count)
grid = activation_grid(maps, columns=8 if count > 16 else 4, pad=2, colormap=cv2.COLORMAP_VIRIDIS)
st.image(
    grid,
    caption=f"First {count} of {channels} channels of {map_layer} "
    f"({maps.shape[1]}×{maps.shape[2]} px each, each scaled to its own range)",
    width=min(900, max(320, grid.shape[1] * 4)),
)
widgets.disclaimer()
