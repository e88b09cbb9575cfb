"""Streamlit glue for MedAL Triage: session state, caches and shared widgets. The
numbers and figures come from `medal_core`; nothing here computes them."""
