"""MedAL Triage: the Streamlit entry point.

    streamlit run streamlit_app.py

Navigation over the pages in `pages/`; each page draws the shared sidebar (model chooser
and decision threshold) itself, see `medal_ui.layout.start_page`. The models folder is
`models/` next to this file, or `$MEDAL_MODELS_DIR`.
"""

import streamlit as st

from medal_ui import layout

layout.configure_page()

PAGES = [
    st.Page("pages/triage.py", title="Triage", icon=":material/stethoscope:", default=True),
    st.Page("pages/threshold_explorer.py", title="Threshold explorer", icon=":material/tune:"),
    st.Page("pages/compare_models.py", title="Compare models", icon=":material/compare_arrows:"),
    st.Page("pages/explainability.py", title="Explainability", icon=":material/visibility:"),
    st.Page("pages/batch_triage.py", title="Batch triage", icon=":material/view_list:"),
    st.Page("pages/about.py", title="About / model card", icon=":material/info:"),
]

st.navigation(PAGES).run()
