"""Batch triage: many uploaded files in, one row per file out, and a CSV of the rows.

    results = predict_files(predictor, [("a.jpg", data_a), ("b.png", data_b)])
    rows = batch_rows(results, threshold=0.3)       # sorted, most suspicious first
    csv_text = to_csv(rows, model_name="mobilenet")

The model runs once per file (`predict_files`); judging the stored results at another
threshold (`batch_rows`) costs nothing. The CSV holds no image data.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from medal_core.images import png_data_uri
from medal_core.intake import IntakeError, read_upload
from medal_core.prediction import Prediction
from medal_core.predictor import Predictor
from medal_core.results import decision_label, prediction_warnings

THUMBNAIL_SIDE = 96
CSV_COLUMNS = ("file", "status", "probability", "decision", "verdict_code", "spread_low",
               "spread_high", "warnings", "threshold", "model", "error")


@dataclass(frozen=True)
class FileResult:
    """One uploaded file: its prediction and thumbnail, or why it was refused."""

    file: str
    prediction: Prediction | None = None
    thumbnail: str | None = None     # PNG data URI
    error: str | None = None         # the IntakeError message of a refused file


@dataclass(frozen=True)
class BatchRow:
    """One line of the batch table. `probability` is None for refused files and for
    images that get no melanoma estimate (not a lesion image, not dermoscopic)."""

    file: str
    status: str                      # "ok" or "refused"
    probability: float | None
    decision: str
    verdict_code: str
    spread: tuple[float, float] | None
    warnings: tuple[str, ...]
    thumbnail: str | None
    error: str


def predict_files(predictor: Predictor, files: Iterable[tuple[str, bytes]],
                  on_progress: Callable[[int, int], None] | None = None,
                  chunk_size: int = 8) -> list[FileResult]:
    """Read and predict every (file name, bytes) pair, `chunk_size` images per model
    call, calling `on_progress(done, total)` after each chunk. Refused files keep their
    intake message; results are in input order."""
    files = list(files)
    results: list[FileResult] = [FileResult("")] * len(files)   # every slot is filled below
    pending = []  # (index, name, rgb)
    for index, (name, data) in enumerate(files):
        try:
            pending.append((index, name, read_upload(data).rgb))
        except IntakeError as error:
            results[index] = FileResult(name, error=str(error))
    done = len(files) - len(pending)
    if on_progress:
        on_progress(done, len(files))
    for start in range(0, len(pending), chunk_size):
        part = pending[start:start + chunk_size]
        predictions = predictor.predict_batch([rgb for _, _, rgb in part])
        for (index, name, rgb), prediction in zip(part, predictions):
            results[index] = FileResult(name, prediction, png_data_uri(rgb, THUMBNAIL_SIDE))
        done += len(part)
        if on_progress:
            on_progress(done, len(files))
    return results


def _sort_key(row: BatchRow) -> tuple:
    """Images with no estimate first (a clinician must look at them: they are never
    silently dropped), then estimates by falling probability, then refused files."""
    if row.status != "ok":
        return (2, 0.0, row.file)
    if row.probability is None:
        return (0, 0.0, row.file)
    return (1, -row.probability, row.file)


def batch_rows(results: Iterable[FileResult], threshold: float) -> list[BatchRow]:
    """Table rows at `threshold`, most suspicious first."""
    rows = []
    for result in results:
        if result.prediction is None:
            rows.append(BatchRow(result.file, "refused", None, "Refused", "refused", None, (),
                                 None, result.error or ""))
            continue
        prediction = result.prediction.at_threshold(threshold)
        estimate = prediction.has_estimate
        rows.append(BatchRow(
            result.file, "ok", prediction.probability if estimate else None,
            decision_label(prediction), prediction.verdict_code,
            prediction.spread if estimate else None,
            tuple(code for code, _ in prediction_warnings(prediction)), result.thumbnail, ""))
    return sorted(rows, key=_sort_key)


def summary_counts(rows: Iterable[BatchRow]) -> dict[str, int]:
    """What the batch summary shows: files read, sent onwards with an estimate (refer or
    borderline), no estimate (a clinician must look), low suspicion, refused files."""
    rows = list(rows)
    codes = [r.verdict_code for r in rows if r.status == "ok"]
    return {"triaged": len(codes),
            "onward": sum(c in ("refer", "indeterminate") for c in codes),
            "no_estimate": codes.count("no_estimate"),
            "low": codes.count("low"),
            "refused": sum(r.status != "ok" for r in rows)}


def table_records(rows: Iterable[BatchRow]) -> list[dict]:
    """Rows as dicts for a display table (thumbnail included, probability in %)."""
    return [{"thumbnail": r.thumbnail, "file": r.file,
             "probability": None if r.probability is None else 100 * r.probability,
             "decision": r.decision, "warnings": ", ".join(r.warnings) or "",
             "reason refused": r.error} for r in rows]


def _text(value: str) -> str:
    """A text cell that a spreadsheet will not run as a formula (file names come from
    the user): a leading =, +, -, @, tab or CR is escaped with an apostrophe."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


def to_csv(rows: Iterable[BatchRow], threshold: float, model_name: str) -> str:
    """CSV text with the columns CSV_COLUMNS, one line per row, no image data."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        low, high = r.spread if r.spread else (None, None)
        writer.writerow([_text(r.file), r.status, _number(r.probability), r.decision, r.verdict_code,
                         _number(low), _number(high), ";".join(r.warnings),
                         f"{threshold:.4f}", _text(model_name), r.error])
    return buffer.getvalue()
