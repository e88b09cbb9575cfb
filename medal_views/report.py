"""A self-contained HTML case report for one triaged image.

The file needs nothing else to open: styles are inline, images are embedded as base64
PNG data URIs, and a Content-Security-Policy forbids scripts and any external request.
Every piece of text (file name, model name, warnings, ...) is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Sequence

import numpy as np

from medal_core import __version__
from medal_core.serving.prediction import DISCLAIMER, Prediction
from medal_views.images import png_data_uri
from medal_views.results import INDETERMINATE_MESSAGE, percent, prediction_warnings, verdict_text

REPORT_IMAGE_SIDE = 512  # images are downscaled to at most this many pixels per side

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2b36;
max-width:900px;margin:2em auto;padding:0 1em;line-height:1.45}
h1{color:#1f5f7a;font-size:1.6em;margin-bottom:.2em}
.meta{color:#5a6b78;font-size:.9em}
.verdict{font-size:1.3em;font-weight:600;padding:.6em .9em;border-radius:8px;margin:1em 0}
.refer{background:#fde8e4;color:#8a2a17}.low{background:#e6f4ea;color:#1e5e34}
.indeterminate{background:#fff4d6;color:#7a5400}.no_estimate{background:#eceff1;color:#37474f}
table{border-collapse:collapse;margin:.6em 0}td,th{text-align:left;padding:.25em 1em .25em 0}
.images{display:flex;gap:1em;flex-wrap:wrap}.images figure{margin:0;flex:1 1 300px}
.images img{max-width:100%;border-radius:6px;border:1px solid #d5dde3}
figcaption{font-size:.85em;color:#5a6b78}
.warnings li{color:#7a5400}.disclaimer{margin-top:2em;padding:.8em 1em;background:#eef5f8;
border-left:4px solid #1f5f7a;font-size:.95em}
.intended{font-size:.95em}
@media print{body{margin:0;max-width:none;font-size:11pt;color:#000}
.verdict,.disclaimer{border:1px solid #666}.images figure{flex:1 1 45%}
.images img{max-height:9cm}a{color:#000}}
"""

INTENDED_USE = (
    "Intended use: a triage aid for dermoscopic images (taken through a "
    "dermatoscope) of a single skin lesion, for clinicians deciding how urgently "
    "to refer. It is not a diagnosis."
)

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _percent(value: float) -> str:
    return percent(value)


def case_report_html(
    *,
    original_rgb: np.ndarray,
    prediction: Prediction,
    model_name: str,
    threshold: float,
    overlay_rgb: np.ndarray | None = None,
    file_name: str | None = None,
    direction: str = "malignant",
    notes: Sequence[str] = (),
    created: _dt.datetime | None = None,
    threshold_figures: str | None = None,
) -> str:
    """The report as one HTML string.

    original_rgb / overlay_rgb: (h, w, 3) uint8 images (the Grad-CAM overlay is
    optional); prediction: the `Prediction` at `threshold`; notes: what intake did to
    the image (e.g. "rotated per EXIF orientation"); created: the report's time (now, in
    local time, by default); threshold_figures: what the threshold means (its
    sensitivity and NPV on the bundle's report set), one sentence. An image with no
    estimate gets only what a clinician needs: the image, why there is no estimate and
    what to do; no probability, no heatmap.
    """
    created = created or _dt.datetime.now().astimezone()
    code = prediction.verdict_code
    low, high = prediction.spread
    rows = [("Model", model_name), ("App version", f"MedAL Triage {__version__}")]
    if prediction.has_estimate:
        rows.insert(0, ("Probability of melanoma (calibrated)", _percent(prediction.probability)))
        rows.insert(
            1, ("Spread over 8 rotated/mirrored copies of this photo", f"{_percent(low)} – {_percent(high)}")
        )
        rows.append(("Decision threshold, as used", f"{threshold:.4f}"))
        if threshold_figures:
            rows.append(("What the threshold means", threshold_figures))
    else:
        rows.insert(0, ("Probability of melanoma", "not given: " + verdict_text(prediction)))
        overlay_rgb = None
    if file_name:
        rows.append(("File", file_name))
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)

    warnings = [message for _, message in prediction_warnings(prediction)]
    if code == "indeterminate":
        warnings.insert(0, INDETERMINATE_MESSAGE)
    warnings_html = (
        ("<h2>Warnings</h2><ul class='warnings'>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>")
        if warnings
        else ""
    )
    notes_html = ("<p class='meta'>Image handling: " + _e("; ".join(notes)) + "</p>") if notes else ""

    figures = [
        f"<figure><img alt='Uploaded image' src='{png_data_uri(original_rgb, REPORT_IMAGE_SIDE)}'>"
        "<figcaption>Uploaded image</figcaption></figure>"
    ]
    if overlay_rgb is not None:
        figures.append(
            f"<figure><img alt='Grad-CAM heatmap' src='{png_data_uri(overlay_rgb, REPORT_IMAGE_SIDE)}'>"
            f"<figcaption>Grad-CAM: regions that pushed the model towards "
            f"{_e(direction)}</figcaption></figure>"
        )

    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>MedAL Triage case report</title><style>{_STYLE}</style></head><body>"
        "<h1>MedAL Triage — case report</h1>"
        f"<p class='meta'>Created {_e(created.strftime('%Y-%m-%d %H:%M %Z').strip())} "
        "(local time)</p>"
        f"<p class='intended'>{_e(INTENDED_USE)}</p>"
        f"<div class='verdict {_e(code)}'>{_e(verdict_text(prediction))}</div>"
        f"<table>{table}</table>{warnings_html}{notes_html}"
        f"<div class='images'>{''.join(figures)}</div>"
        f"<p class='disclaimer'>{_e(DISCLAIMER)}</p>"
        "</body></html>"
    )


def report_file_name(file_name: str | None, created: _dt.datetime | None = None) -> str:
    """A safe download name such as 'medal_report_lesion_2025-01-31.html'."""
    created = created or _dt.datetime.now()
    stem = (file_name or "image").rsplit(".", 1)[0]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "image"
    return f"medal_report_{safe}_{created:%Y-%m-%d}.html"
