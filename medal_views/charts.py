"""Plotly figure builders: pure functions, data in, `go.Figure` out (no Streamlit)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from medal_core.evaluation.metrics import Confusion, NaturalFrequencies
from medal_views.explorer import Curves, OperatingPoint

PRIMARY = "#1f5f7a"
SERIES_COLOURS = ("#1f5f7a", "#c0672b", "#4c8c4a", "#7b5ea7", "#b8860b", "#4a7fb5")
CAUGHT, MISSED, FALSE_ALARM, REASSURED = "#b23a2a", "#e8a33d", "#8fb8cc", "#dfe6ea"

_LAYOUT: dict = dict(
    margin=dict(l=10, r=10, t=40, b=10),
    height=380,
    legend=dict(
        yanchor="bottom",
        y=0.02,
        xanchor="right",
        x=0.98,
        bgcolor="rgba(255,255,255,0.85)",
        bordercolor="#d5dde3",
        borderwidth=1,
        font=dict(size=11),
    ),
    plot_bgcolor="white",
    hovermode="closest",
)
_AXIS = dict(showgrid=True, gridcolor="#e6ecef", zeroline=False, linecolor="#b0bec5")


def _finish(fig: go.Figure, title: str, **layout) -> go.Figure:
    fig.update_layout(**{**_LAYOUT, "title": dict(text=title, x=0, font=dict(size=15)), **layout})
    fig.update_xaxes(**_AXIS)
    fig.update_yaxes(**_AXIS)
    return fig


def roc_figure(
    curves: Mapping[str, Curves], points: Mapping[str, OperatingPoint] | None = None, title: str = "ROC curve"
) -> go.Figure:
    """ROC curves of one or more models (name → Curves) with each model's operating
    point marked (name → OperatingPoint) and the chance diagonal."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance",
            line=dict(color="#b0bec5", dash="dot"),
            hoverinfo="skip",
        )
    )
    for i, (name, c) in enumerate(curves.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        label = f"{name} (AUC {c.roc_auc:.3f})" if name else f"AUC {c.roc_auc:.3f}"
        thresholds = np.where(np.isfinite(c.roc_thresholds), c.roc_thresholds, np.nan)
        fig.add_trace(
            go.Scatter(
                x=c.fpr,
                y=c.tpr,
                mode="lines",
                name=label,
                line=dict(color=colour, width=2.5, shape="hv"),
                customdata=thresholds,
                hovertemplate="1 − specificity %{x:.3f}<br>sensitivity %{y:.3f}"
                "<br>threshold %{customdata:.3f}<extra></extra>",
            )
        )
        point = (points or {}).get(name)
        if point is not None:
            x, y = point.roc_point
            fig.add_trace(
                go.Scatter(
                    x=[x],
                    y=[y],
                    mode="markers",
                    name=f"threshold {point.threshold:.3f}",
                    marker=dict(size=13, color=colour, symbol="circle", line=dict(color="white", width=2)),
                    hovertemplate=f"threshold {point.threshold:.3f}<br>sensitivity %{{y:.3f}}"
                    "<br>1 − specificity %{x:.3f}<extra></extra>",
                )
            )
    fig.update_xaxes(title_text="1 − specificity (false-positive rate)", range=[-0.01, 1.01])
    fig.update_yaxes(title_text="sensitivity (true-positive rate)", range=[-0.01, 1.02])
    return _finish(fig, title)


def pr_figure(
    curves: Curves,
    point: OperatingPoint | None = None,
    prevalence: float | None = None,
    title: str = "Precision–recall curve",
) -> go.Figure:
    """Precision against recall with the operating point and the chance level
    (precision = prevalence)."""
    fig = go.Figure()
    if prevalence is not None:
        fig.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[prevalence, prevalence],
                mode="lines",
                name=f"chance ({prevalence:.1%})",
                line=dict(color="#b0bec5", dash="dot"),
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=curves.recall,
            y=curves.precision,
            mode="lines",
            name=f"AP {curves.average_precision:.3f}",
            line=dict(color=PRIMARY, width=2.5),
            customdata=curves.pr_thresholds,
            hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<br>threshold %{customdata:.3f}"
            "<extra></extra>",
        )
    )
    if point is not None and not math.isnan(point.pr_point[1]):
        x, y = point.pr_point
        fig.add_trace(
            go.Scatter(
                x=[x],
                y=[y],
                mode="markers",
                name=f"threshold {point.threshold:.3f}",
                marker=dict(size=13, color=PRIMARY, line=dict(color="white", width=2)),
                hovertemplate=f"threshold {point.threshold:.3f}<br>recall %{{x:.3f}}"
                "<br>precision %{y:.3f}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="recall (sensitivity)", range=[-0.01, 1.01])
    fig.update_yaxes(title_text="precision (PPV)", range=[-0.01, 1.02])
    return _finish(fig, title, legend={**_LAYOUT["legend"], "xanchor": "left", "x": 0.02})


def confusion_figure(confusion: Confusion, title: str = "Confusion matrix") -> go.Figure:
    """2×2 counts: rows the true class, columns the decision."""
    matrix = confusion.as_matrix()
    text = [
        [f"<b>{v}</b><br><span style='font-size:11px'>{label}</span>" for v, label in zip(row, labels)]
        for row, labels in zip(
            matrix, (("true negatives", "false positives"), ("false negatives", "true positives"))
        )
    ]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=["low suspicion", "sent onwards"],
            y=["benign", "melanoma"],
            text=text,
            texttemplate="%{text}",
            textfont=dict(size=18, color="#1d2b36"),
            showscale=False,
            colorscale=[[0, "#f3f7f9"], [1, "#7fb0c6"]],
            hoverinfo="skip",
            xgap=3,
            ygap=3,
        )
    )
    fig.update_xaxes(title_text="decision", side="bottom", showgrid=False)
    fig.update_yaxes(title_text="truth", autorange="reversed", showgrid=False)
    return _finish(fig, title, height=330)


def _whole_counts(values: list[float], total: int) -> list[int]:
    """Round non-negative values summing to `total` to integers with the same sum
    (largest remainder)."""
    floors = [int(math.floor(v)) for v in values]
    order = sorted(range(len(values)), key=lambda i: values[i] - floors[i], reverse=True)
    for i in order[: max(0, total - sum(floors))]:
        floors[i] += 1
    return floors


def natural_frequency_figure(
    frequencies: NaturalFrequencies, columns: int | None = None, title: str | None = None
) -> go.Figure:
    """An icon array: one square per patient, coloured by what happens to them
    (50 columns for 1,000 patients, 125 for 10,000)."""
    patients = frequencies.patients
    columns = columns or (50 if patients <= 1000 else 125)
    marker_size = 9 if patients <= 1000 else 3
    labels = ("melanoma caught (referred)", "melanoma missed", "benign, referred", "benign, reassured")
    colours = (CAUGHT, MISSED, FALSE_ALARM, REASSURED)
    counts = _whole_counts(
        [
            frequencies.melanomas_caught,
            frequencies.melanomas_missed,
            frequencies.benign_referred,
            frequencies.benign_reassured,
        ],
        patients,
    )
    rows = math.ceil(patients / columns)
    fig = go.Figure()
    start = 0
    for label, colour, count in zip(labels, colours, counts):
        index = np.arange(start, start + count)
        start += count
        fig.add_trace(
            go.Scatter(
                x=index % columns,
                y=index // columns,
                mode="markers",
                name=f"{label}: {count}",
                marker=dict(symbol="square", size=marker_size, color=colour, line=dict(width=0)),
                hovertemplate=f"{label}: {count} of {patients}<extra></extra>",
            )
        )
    fig.update_xaxes(visible=False, range=[-1, columns])
    fig.update_yaxes(visible=False, range=[rows, -1])
    return _finish(
        fig,
        title or f"What happens to {patients:,} patients",
        height=340,
        legend=dict(orientation="h", yanchor="top", y=-0.02, x=0),
    )


def training_curves_figure(histories: Mapping[str, Mapping[str, list[float]]]) -> go.Figure:
    """Validation and training AUC (left) and loss (right) per epoch, per model."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("AUC", "loss"), horizontal_spacing=0.1)
    for i, (name, history) in enumerate(histories.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        steps = history.get("step", [])
        for col, (train_key, val_key) in enumerate((("auc", "val_auc"), ("loss", "val_loss")), 1):
            for key, dash in ((val_key, "solid"), (train_key, "dot")):
                if key in history:
                    fig.add_trace(
                        go.Scatter(
                            x=steps,
                            y=history[key],
                            mode="lines+markers",
                            marker=dict(size=4),
                            name=f"{name} {'validation' if key.startswith('val') else 'training'}",
                            line=dict(color=colour, dash=dash),
                            legendgroup=name,
                            showlegend=col == 1,
                        ),
                        row=1,
                        col=col,
                    )
    fig.update_xaxes(title_text="epoch")
    return _finish(
        fig,
        "Training curves",
        height=400,
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, font=dict(size=11)),
        margin=dict(l=10, r=10, t=60, b=10),
    )
