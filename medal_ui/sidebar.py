"""The shared sidebar: model chooser, decision threshold, broken bundles."""

from __future__ import annotations

import streamlit as st

from medal_ui import caches
from medal_ui.session import (
    BUNDLE_KEY,
    BUNDLE_WIDGET,
    THRESHOLD_KEY,
    AppContext,
    _choose_bundle,
    _choose_threshold,
    _ensure_state,
    current_context,
    set_threshold,
    threshold_widget_key,
)


def render_sidebar() -> AppContext | None:
    """The shared sidebar: model chooser, threshold slider, broken bundles."""
    from medal_ui import widgets

    catalog = caches.get_catalog()
    with st.sidebar:
        if catalog.empty:
            st.error("No model available.", icon=":material/error:")
            widgets.broken_bundles(catalog, expanded=True)
            return None
        _ensure_state(catalog)
        # The chooser's state is restored only when Streamlit dropped it (a page change
        # makes it a new widget); the threshold field is keyed by its value instead.
        if st.session_state.get(BUNDLE_WIDGET) != st.session_state[BUNDLE_KEY]:
            st.session_state[BUNDLE_WIDGET] = st.session_state[BUNDLE_KEY]
        st.selectbox(
            "Model",
            catalog.names,
            key=BUNDLE_WIDGET,
            on_change=_choose_bundle,
            help="Model bundles found in the models folder.",
        )
        bundle = catalog.bundles[st.session_state[BUNDLE_KEY]]
        threshold = st.session_state[THRESHOLD_KEY]
        widget_key = threshold_widget_key(threshold)
        st.number_input(
            "Decision threshold",
            0.0,
            1.0,
            value=threshold,
            key=widget_key,
            step=0.0005,
            format="%.4f",
            on_change=_choose_threshold,
            args=(widget_key,),
            help="Images with a melanoma probability at or above this are sent "
            "onwards. Type a value or step with − and +; shared by every "
            "page; the threshold explorer shows what it means.",
        )
        st.caption(
            "Validated default"
            if st.session_state[THRESHOLD_KEY] == bundle.threshold
            else f"Changed (validated default {bundle.threshold:.4f})"
        )
        st.button(
            f"Reset to the model's default ({bundle.threshold:.4f})",
            on_click=set_threshold,
            args=(bundle.threshold,),
            type="tertiary",
            icon=":material/restart_alt:",
        )
        widgets.broken_bundles(catalog)
    caches.warm_up_in_background(bundle)
    return current_context()
