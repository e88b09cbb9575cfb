"""Threshold explorer: what the shared decision threshold means under the app's rule on
the chosen bundle's stored predictions (its report set, which chose nothing, or its
calibration set, on which the default was chosen), and at another prevalence."""

import streamlit as st

from medal_core.evaluation import decision
from medal_ui import layout, session, widgets
from medal_views import charts, explorer
from medal_views.results import VERDICTS

layout.start_page()

SET_KEY = "explorer_set"
REPORT_SET = "Report set (chose nothing)"
CALIBRATION_SET = "Calibration set (chose the default threshold)"

context = session.require_context()
sets = {CALIBRATION_SET: context.bundle.predictions}
if context.bundle.report_predictions is not None:
    sets = {REPORT_SET: context.bundle.report_predictions, **sets}


# Cached per bundle (folder + signature); the arrays (underscored) are not hashed.
@st.cache_data(show_spinner=False, max_entries=8)
def _presets(folder: str, sha: str, _labels, _probabilities) -> dict[str, float]:
    return explorer.presets(_labels, _probabilities)


@st.cache_data(show_spinner=False, max_entries=8)
def _curves(folder: str, sha: str, _labels, _probabilities) -> explorer.Curves:
    return explorer.curves(_labels, _probabilities)


@st.cache_data(show_spinner=False, max_entries=256)
def _point(
    folder: str, sha: str, which: str, threshold: float, _labels, _probabilities, _no_estimate
) -> explorer.OperatingPoint:
    return explorer.at_threshold(_labels, _probabilities, threshold, _no_estimate)


st.title("Threshold explorer")
chosen_set = (
    st.segmented_control(
        "Figures on",
        list(sets),
        default=list(sets)[0],
        key=SET_KEY,
        help="The report set played no part in training, choosing "
        "the model or setting the threshold: its figures are "
        "the honest ones.",
    )
    or list(sets)[0]
)
predictions = sets[chosen_set]
labels, probabilities = predictions.labels, predictions.probabilities
no_estimate = predictions.no_estimate
band_ratio = float(context.bundle.manifest.get("decision", {}).get("band_ratio", decision.DEFAULT_BAND_RATIO))
st.caption(
    f"**{context.name}** on its {chosen_set.split(' (')[0].lower()}: {len(labels)} images "
    f"({int(labels.sum())} melanomas). The figures are the app's rule: sensitivity is the "
    "share of melanomas sent onwards (refer, borderline or no estimate), specificity the "
    'share of benign lesions told "low suspicion". The threshold set here is used on '
    "every page."
)

presets = _presets(context.folder, context.sha + chosen_set, labels, probabilities)
buttons = st.columns(len(presets) + 1)
for column, (label, value) in zip(buttons, presets.items()):
    column.button(
        f"{label} ({value:.4f})",
        on_click=session.set_threshold,
        args=(value,),
        key=f"preset_{label.split()[0].lower()}",
        width="stretch",
    )
buttons[-1].button(
    f"Model default ({context.bundle.threshold:.4f})",
    on_click=session.set_threshold,
    args=(context.bundle.threshold,),
    key="preset_default",
    width="stretch",
)

st.caption("Move the threshold in the sidebar (type a value, or step with − and +), or pick a preset above.")

point = _point(context.folder, context.sha, chosen_set, context.threshold, labels, probabilities, no_estimate)
curves = _curves(context.folder, context.sha + chosen_set, labels, probabilities)
st.markdown(
    f"Threshold in use: **{context.threshold:.4f}**"
    + (
        " (the model's validated default)"
        if context.threshold == context.bundle.threshold
        else f" (changed from the validated default {context.bundle.threshold:.4f})"
    )
)

cols = st.columns(len(explorer.METRIC_NAMES))
for column, row in zip(cols, explorer.metric_rows(point)):
    column.metric(
        row["metric"],
        row["value_text"],
        border=True,
        help="95% Wilson interval" if row["counts"] else "95% bootstrap interval",
    )
    column.caption(" · ".join(part for part in (row["ci_text"], row["counts"]) if part))

note = explorer.guarantee_note(context.bundle.manifest, context.threshold)
if note:
    st.caption(note)

st.markdown("**What the app says at this threshold**")
shares = explorer.verdict_shares(labels, probabilities, context.threshold, band_ratio, no_estimate)
st.table(
    [
        {
            "verdict": VERDICTS[row["verdict"]],
            "melanomas": f"{row['melanoma']} ({row['melanoma_share']:.1%})",
            "benign lesions": f"{row['benign']} ({row['benign_share']:.1%})",
        }
        for row in shares
    ],
    hide_index=True,
)

left, middle, right = st.columns([1, 1.2, 1.2])
left.plotly_chart(charts.confusion_figure(point.confusion), key="confusion", config={"displayModeBar": False})
left.caption(f"{point.referred} of {point.n} sent onwards at threshold {point.threshold:.4f}.")
middle.plotly_chart(charts.roc_figure({"": curves}, {"": point}), key="roc", config={"displayModeBar": False})
right.plotly_chart(
    charts.pr_figure(curves, point, explorer.dataset_prevalence(labels)),
    key="pr",
    config={"displayModeBar": False},
)

st.subheader("At another prevalence")
default_prevalence = round(100 * explorer.dataset_prevalence(labels), 1)
prevalence = (
    st.slider(
        "Share of patients with melanoma (%)",
        0.1,
        50.0,
        default_prevalence,
        0.1,
        format="%.1f%%",
        key=f"prevalence_{context.name}",
        help=f"This set has {default_prevalence:.1f}% melanomas; a clinic's share is "
        "usually much lower, which lowers the PPV.",
    )
    / 100
)
view = explorer.at_prevalence(point, prevalence)
f = view.frequencies
stats, chart = st.columns([1, 2])
with stats:
    st.metric(
        "PPV at this prevalence",
        "n/a" if view.ppv != view.ppv else f"{view.ppv:.1%}",
        help="Of the patients referred, the share who have melanoma.",
    )
    st.metric(
        "NPV at this prevalence",
        "n/a" if view.npv != view.npv else f"{view.npv:.1%}",
        help="Of the patients reassured, the share who do not have melanoma.",
    )
    st.markdown(
        f"Per **{f.patients:,} patients**:\n\n"
        f"- **{f.with_melanoma:,}** have a melanoma: **{f.melanomas_caught:,}** sent onwards, "
        f"**{f.melanomas_missed:,}** missed\n"
        f"- **{f.patients - f.with_melanoma:,}** have a benign lesion: **{f.benign_referred:,}** "
        f"sent onwards, **{f.benign_reassured:,}** reassured\n"
        f"- **{f.referred:,}** sent onwards in all"
    )
chart.plotly_chart(charts.natural_frequency_figure(f), key="frequencies", config={"displayModeBar": False})
st.caption(
    f"Sensitivity and specificity are taken from the {chosen_set.split(' (')[0].lower()}; "
    "PPV, NPV and the counts follow from Bayes' rule at the chosen prevalence."
)
widgets.broken_bundles(context.catalog)
