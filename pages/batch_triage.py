"""Batch triage: many images at once, a table sorted by probability and a CSV."""

import streamlit as st

from medal_ui import layout, session, widgets
from medal_views import batch

layout.start_page()

RESULTS_KEY = "batch_results"

context = session.require_context()
st.title("Batch triage")
st.caption(
    "Triage many images at once. The table lists the most suspicious first; refused "
    "files are listed with the reason."
)

files = st.file_uploader(
    f"Upload dermoscopic images (up to {batch.MAX_FILES} per batch)",
    type=widgets.IMAGE_TYPES,
    accept_multiple_files=True,
    key="batch_files",
    help="Up to 20 MB each. Images are processed in memory, one after another, and never stored.",
)
if files and len(files) > batch.MAX_FILES:
    st.error(
        f"{len(files)} files were chosen; a batch takes at most {batch.MAX_FILES}. "
        f"Remove some (or split them into batches of {batch.MAX_FILES}) and try again.",
        icon=":material/block:",
    )
    widgets.disclaimer()
    st.stop()
if not files:
    st.session_state.pop(RESULTS_KEY, None)
    st.info("Choose or drop several images above.")
    widgets.disclaimer()
    st.stop()

# The model runs once per set of files and bundle; other widgets only re-judge the results.
batch_key = (context.folder, context.sha, tuple((f.name, f.file_id, f.size) for f in files))
stored = st.session_state.get(RESULTS_KEY)
if stored is None or stored[0] != batch_key:
    progress = st.progress(0.0, text="Starting…")

    def report(done: int, total: int) -> None:
        progress.progress(done / total, text=f"Triaged {done} of {total} images")

    try:
        results = batch.predict_files(
            context.predictor(), ((f.name, f.getvalue()) for f in files), on_progress=report, total=len(files)
        )
    except session.SERVICE_ERRORS as error:
        progress.empty()
        session.service_error_and_stop(error)
    progress.empty()
    st.session_state[RESULTS_KEY] = (batch_key, results)
else:
    results = stored[1]

rows = batch.batch_rows(results, context.threshold)
ok = [r for r in rows if r.status == "ok"]
refused = [r for r in rows if r.status != "ok"]
counts = batch.summary_counts(rows)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Images read", counts["triaged"])
m2.metric("Refer or borderline", counts["onward"])
m3.metric(
    "No estimate",
    counts["no_estimate"],
    help="Not a lesion image, or not a dermoscopic image: no melanoma estimate is "
    "given. Listed first: have a clinician look at each.",
)
m4.metric("Refused files", counts["refused"])

st.dataframe(
    batch.table_records(ok),
    hide_index=True,
    row_height=64,
    column_order=["thumbnail", "file", "probability", "decision", "warnings"],
    column_config={
        "thumbnail": st.column_config.ImageColumn("image", width="small"),
        "probability": st.column_config.ProgressColumn(
            "P(melanoma)",
            format="%.1f%%",
            min_value=0,
            max_value=100,
            help="Calibrated probability; empty where no estimate is given (not a lesion "
            "image, or not a dermoscopic image).",
        ),
        "decision": st.column_config.TextColumn(width="medium"),
        "warnings": st.column_config.TextColumn(help="Why there is no estimate, and photo-quality warnings."),
    },
)
if refused:
    st.markdown("**Refused files**")
    for row in refused:
        st.warning(f"**{widgets.md_escape(row.file)}**: {row.error}", icon=":material/block:")

st.download_button(
    "Download results (CSV)",
    batch.to_csv(rows, context.threshold, context.name),
    file_name="medal_batch_triage.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
)
st.caption(
    f"Decisions at threshold {context.threshold:.3f} with model {context.name}. The CSV holds no image data."
)
widgets.disclaimer()
