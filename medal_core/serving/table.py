"""The batch results table, as CSV: one row per file, the same columns whether the app's
Batch page or `python -m medal_core batch` wrote it. No image data.

    writer.writerow(CSV_COLUMNS)
    writer.writerow(prediction_row("a.jpg", prediction, model="mobilenet"))
    writer.writerow(refused_row("b.txt", "This file is not an image ...", 0.05, "mobilenet"))
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from medal_core.evaluation.decision import VERDICT_LABELS
from medal_core.serving.prediction import Prediction

CSV_COLUMNS = (
    "file",
    "status",
    "probability",
    "decision",
    "verdict_code",
    "spread_low",
    "spread_high",
    "warnings",
    "threshold",
    "model",
    "error",
)
REFUSED = "refused"


def safe_text(value: str) -> str:
    """A text cell that a spreadsheet will not run as a formula (file names come from
    the user): a leading =, +, -, @, tab or CR is escaped with an apostrophe."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def number_cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def csv_row(
    file: str,
    status: str,
    probability: float | None,
    decision: str,
    verdict_code: str,
    spread: tuple[float, float] | None,
    warnings: Iterable[str],
    threshold: float,
    model: str,
    error: str = "",
) -> list[str]:
    """One line of CSV_COLUMNS."""
    low, high = spread if spread else (None, None)
    return [
        safe_text(file),
        status,
        number_cell(probability),
        decision,
        verdict_code,
        number_cell(low),
        number_cell(high),
        ";".join(warnings),
        f"{threshold:.4f}",
        safe_text(model),
        error,
    ]


def prediction_row(file: str, prediction: Prediction, model: str) -> list[str]:
    """The line of an accepted file, judged at `prediction.threshold`."""
    estimate = prediction.has_estimate
    return csv_row(
        file,
        "ok",
        prediction.probability if estimate else None,
        VERDICT_LABELS[prediction.verdict_code],
        prediction.verdict_code,
        prediction.spread if estimate else None,
        [w["code"] for w in prediction.warnings()],
        prediction.threshold,
        model,
    )


def refused_row(file: str, error: str, threshold: float, model: str) -> list[str]:
    """The line of a file the intake refused, with its message."""
    return csv_row(file, REFUSED, None, "Refused", REFUSED, None, (), threshold, model, error)
