"""Threshold explorer: what the shared decision threshold means on the chosen bundle's
stored validation predictions, and at another prevalence."""

import streamlit as st

from medal_core import charts, explorer
from medal_ui import layout, state, widgets

layout.start_page()

PAGE_SLIDER = "explorer_threshold"

context = state.require_context()
predictions = context.bundle.predictions
labels, probabilities = predictions.labels, predictions.probabilities


# Cached per bundle (folder + signature); the arrays (underscored) are not hashed.
@st.cache_data(show_spinner=False, max_entries=8)
def _presets(folder: str, sha: str, _labels, _probabilities) -> dict[str, float]:
    return explorer.presets(_labels, _probabilities)


@st.cache_data(show_spinner=False, max_entries=8)
def _curves(folder: str, sha: str, _labels, _probabilities) -> explorer.Curves:
    return explorer.curves(_labels, _probabilities)


@st.cache_data(show_spinner=False, max_entries=256)
def _point(folder: str, sha: str, threshold: float, _labels, _probabilities) -> explorer.OperatingPoint:
    return explorer.at_threshold(_labels, _probabilities, threshold)


def _from_page_slider() -> None:
    state.set_threshold(st.session_state[PAGE_SLIDER])


st.title("Threshold explorer")
st.caption(f"**{context.name}** on its {len(labels)} validation images "
           f"({int(labels.sum())} melanomas). The threshold set here is used on every page.")

presets = _presets(context.folder, context.sha, labels, probabilities)
buttons = st.columns(len(presets) + 1)
for column, (label, value) in zip(buttons, presets.items()):
    column.button(f"{label} ({value:.3f})", on_click=state.set_threshold, args=(value,),
                  key=f"preset_{label.split()[0].lower()}", width="stretch")
buttons[-1].button(f"Model default ({context.bundle.threshold:.3f})", on_click=state.set_threshold,
                   args=(context.bundle.threshold,), key="preset_default", width="stretch")

# The page's own slider mirrors the shared threshold (set before the widget is drawn).
st.session_state[PAGE_SLIDER] = context.threshold
st.slider("Decision threshold (probability of melanoma at or above which to refer)", 0.0, 1.0,
          step=0.001, format="%.3f", key=PAGE_SLIDER, on_change=_from_page_slider)

point = _point(context.folder, context.sha, context.threshold, labels, probabilities)
curves = _curves(context.folder, context.sha, labels, probabilities)

cols = st.columns(len(explorer.METRIC_NAMES))
for column, row in zip(cols, explorer.metric_rows(point)):
    column.metric(row["metric"], row["value_text"], border=True,
                  help="95% Wilson interval" if row["counts"] else "95% bootstrap interval")
    column.caption(" · ".join(part for part in (row["ci_text"], row["counts"]) if part))

left, middle, right = st.columns([1, 1.2, 1.2])
left.plotly_chart(charts.confusion_figure(point.confusion), key="confusion",
                  config={"displayModeBar": False})
left.caption(f"{point.referred} of {point.n} referred at threshold {point.threshold:.3f}.")
middle.plotly_chart(charts.roc_figure({"": curves}, {"": point}), key="roc",
                    config={"displayModeBar": False})
right.plotly_chart(charts.pr_figure(curves, point, explorer.dataset_prevalence(labels)), key="pr",
                   config={"displayModeBar": False})

st.subheader("At another prevalence")
default_prevalence = round(100 * explorer.dataset_prevalence(labels), 1)
prevalence = st.slider(
    "Share of patients with melanoma (%)", 0.1, 50.0, default_prevalence, 0.1, format="%.1f%%",
    key=f"prevalence_{context.name}",
    help=f"The validation set has {default_prevalence:.1f}% melanomas; a clinic's share is "
         "usually much lower, which lowers the PPV.") / 100
view = explorer.at_prevalence(point, prevalence)
f = view.frequencies
stats, chart = st.columns([1, 2])
with stats:
    st.metric("PPV at this prevalence", "n/a" if view.ppv != view.ppv else f"{view.ppv:.1%}",
              help="Of the patients referred, the share who have melanoma.")
    st.metric("NPV at this prevalence", "n/a" if view.npv != view.npv else f"{view.npv:.1%}",
              help="Of the patients reassured, the share who do not have melanoma.")
    st.markdown(
        f"Per **{f.patients:,} patients**:\n\n"
        f"- **{f.referred:.0f}** referred\n"
        f"- **{f.melanomas_caught:.0f}** of {f.with_melanoma:.0f} melanomas caught\n"
        f"- **{f.melanomas_missed:.0f}** melanomas missed\n"
        f"- **{f.benign_referred:.0f}** benign lesions referred")
chart.plotly_chart(charts.natural_frequency_figure(f), key="frequencies",
                   config={"displayModeBar": False})
st.caption("Sensitivity and specificity are taken from the validation set; PPV, NPV and the "
           "counts follow from Bayes' rule at the chosen prevalence.")
widgets.broken_bundles(context.catalog)
