"""MedAL Triage: the Streamlit entry point.

    streamlit run streamlit_app.py

Routes to the pages in `pages/` (`st.navigation`, its own menu hidden); each page draws
the shared sidebar (menu, model chooser, decision threshold) first, with
`medal_ui.layout.start_page`. The models folder is `models/` next to this file, or
`$MEDAL_MODELS_DIR`.
"""

import sys
from pathlib import Path

import streamlit as st

# The first run in a fresh process imports the app's modules for a few seconds: say so,
# instead of a blank page. (Later runs find them imported and skip this.)
starting = None
if "medal_ui.layout" not in sys.modules:
    st.set_page_config(
        page_title="MedAL Triage", layout="wide", page_icon=str(Path(__file__).parent / "assets" / "icon.png")
    )
    starting = st.empty()
    starting.info(
        "Starting MedAL Triage: loading the model and its checks (a few seconds after a restart)…",
        icon=":material/hourglass_top:",
    )

from medal_ui import layout  # noqa: E402  (after the message above)

layout.configure_page()
if starting is not None:
    starting.empty()

PAGES = [
    st.Page(path, title=title, icon=icon, default=(index == 0))
    for index, (path, title, icon) in enumerate(layout.PAGES)
]

# The menu is drawn by each page's `layout.start_page` (`layout.page_links`).
st.navigation(PAGES, position="hidden").run()
