"""About / model card: what the chosen model is for, how it was made and how well it does."""

import streamlit as st

from medal_core.serving.prediction import DISCLAIMER
from medal_ui import caches, layout, session, widgets
from medal_views import model_card

layout.start_page()

st.title("About MedAL Triage")
st.markdown(
    "MedAL Triage is an open-source aid for triaging dermoscopic images of skin "
    "lesions: it estimates the probability of melanoma and suggests whether a "
    "lesion should be seen by a dermatologist."
)
st.warning(DISCLAIMER, icon=":material/medical_information:")

context = session.current_context()
if context is None:
    widgets.no_model_message(caches.get_catalog())
    sections = [
        s
        for s in model_card.model_card({})
        if s[0] in ("Intended use and users", "Data", "Known limits", "Privacy")
    ]
else:
    st.subheader(f"Model card: {context.name}")
    sections = model_card.model_card(context.bundle.manifest)

for heading, text in sections:
    with st.expander(heading, expanded=heading not in ("Model", "Data")):
        st.markdown(text)
if context is not None:
    widgets.broken_bundles(context.catalog)
