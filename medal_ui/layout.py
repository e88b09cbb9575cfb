"""What every page begins with: page settings, logo, style and the shared sidebar."""

import gc
from pathlib import Path

import streamlit as st

from medal_ui import sidebar

ASSETS = Path(__file__).resolve().parents[1] / "assets"

# The app's pages, in menu order: (file, title, Material icon). `streamlit_app.py` routes
# with them; the sidebar links to them.
PAGES = (
    ("pages/triage.py", "Triage", ":material/stethoscope:"),
    ("pages/threshold_explorer.py", "Threshold explorer", ":material/tune:"),
    ("pages/compare_models.py", "Compare models", ":material/compare_arrows:"),
    ("pages/explainability.py", "Explainability", ":material/visibility:"),
    ("pages/batch_triage.py", "Batch triage", ":material/view_list:"),
    ("pages/about.py", "About / model card", ":material/info:"),
)

# Pages import TensorFlow before this module: its ~0.5 M objects live as long as the
# process, and Streamlit's full garbage collections after every script run would walk
# them all (see also `caches.get_predictor`).
gc.freeze()


def configure_page() -> None:
    """Title, local icon and layout. Called before `st.navigation` too: otherwise
    Streamlit shows the page's Material icon as the favicon, fetched from Google's font
    servers — a request to the outside world from a page that promises none."""
    st.set_page_config(
        page_title="MedAL Triage",
        page_icon=str(ASSETS / "icon.png"),
        layout="wide",
        initial_sidebar_state="expanded",
        menu_items={"About": "MedAL Triage — an open-source dermoscopy triage aid. Not a diagnosis."},
    )


def start_page() -> None:
    """Draw the page chrome and the shared sidebar (model chooser, threshold).

    Each page calls this itself, first, rather than relying on `streamlit_app.py`: with a
    `pages/` folder beside the entry point, Streamlit runs a page file on its own (its
    older multipage mode) until `st.navigation` has run once in the process — on a fresh
    server's first request, and in every `AppTest` run after `switch_page`.
    """
    configure_page()
    st.logo(str(ASSETS / "logo.png"), icon_image=str(ASSETS / "icon.png"), size="large")
    st.html(ASSETS / "style.css")
    page_links()
    sidebar.render_sidebar()


def page_links() -> None:
    """The menu, drawn here rather than by Streamlit: its own menu is switched off
    (`client.showSidebarNavigation`, `.streamlit/config.toml`) because on a fresh server
    it first lists the files of `pages/` (for ~2 s) before `st.navigation` replaces them."""
    with st.sidebar:
        for path, title, icon in PAGES:
            st.page_link(path, label=title, icon=icon)
