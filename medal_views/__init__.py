"""What the app shows, as plain Python a test can call without a server: bundle
discovery (catalog), the threshold explorer, model comparison, charts (Plotly), the case
report (HTML), the batch table and CSV, the model card, and how a result is put into
words. Depends on `medal_core`; `medal_core` never imports it. Streamlit lives in
`medal_ui` and `pages/` only."""
