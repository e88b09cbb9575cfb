"""Compare models: every usable bundle side by side."""

import streamlit as st

from medal_core.bundles.bundle import BundleError
from medal_ui import caches, layout, session, widgets
from medal_views import charts, compare, explorer
from medal_views.catalog import read_history, signature

layout.start_page()

context = session.require_context()
catalog = context.catalog

st.title("Compare models")
st.caption(
    "Figures of every model bundle on its report set (which chose nothing), each at "
    "its own default threshold under the app's rule, and the time one image takes on "
    "this server."
)

rows, curves, points, histories = [], {}, {}, {}
for name, bundle in catalog.bundles.items():
    sha = signature(bundle)
    latency = parameters = None
    try:
        latency = caches.get_latency_ms(str(bundle.folder), sha)
        parameters = compare.parameter_count(
            bundle, caches.get_predictor(str(bundle.folder), sha).bundle.model
        )
    except BundleError as error:
        st.error(f"**{name}** could not be loaded: {error}")
    _, p, _ = compare.figure_set(bundle)
    rows.append(compare.summary_row(name, bundle, latency, parameters))
    curves[name] = explorer.curves(p.labels, p.probabilities)
    points[name] = explorer.at_threshold(p.labels, p.probabilities, bundle.threshold, p.no_estimate)
    histories[name] = read_history(bundle.folder)

st.dataframe(
    [compare.display_row(row) for row in rows],
    hide_index=True,
    column_config={
        "parameters": st.column_config.NumberColumn(format="localized"),
        "latency ms": st.column_config.NumberColumn(
            "latency (ms)",
            format="%.0f",
            help="Median time of one prediction (8 test-time views) on a 512 × 512 image "
            "on this server, measured when the page was first opened.",
        ),
    },
)

left, right = st.columns([1, 1.4])
left.plotly_chart(
    charts.roc_figure(curves, points, title="ROC curves (dots: default thresholds)"),
    key="compare_roc",
    config={"displayModeBar": False},
)
if any(histories.values()):
    right.plotly_chart(
        charts.training_curves_figure({k: v for k, v in histories.items() if v}),
        key="compare_training",
        config={"displayModeBar": False},
    )
else:
    right.info("No training logs (history.csv) in these bundles.")
statement = compare.weakest_statement(rows, catalog.default_name())
if statement:
    st.warning(statement, icon=":material/compare_arrows:")
st.caption(
    "AUC intervals: stratified bootstrap; sensitivity and specificity intervals: Wilson. "
    "All on each model's own report set (or, for a bundle without one, the set its "
    "threshold was chosen on)."
)
widgets.broken_bundles(catalog, expanded=True)
