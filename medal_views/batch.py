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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from medal_core.data.intake import IntakeError, read_upload
from medal_core.serving.prediction import Prediction
from medal_core.serving.predictor import Predictor
from medal_core.serving.table import CSV_COLUMNS, csv_row
from medal_views.images import png_data_uri
from medal_views.results import decision_label, prediction_warnings

THUMBNAIL_SIDE = 96
# Files per batch: each is read, predicted and reduced to a thumbnail in turn, so memory
# stays bounded, but the time does not (~0.1-0.5 s a file on a small server).
MAX_FILES = 200


@dataclass(frozen=True)
class FileResult:
    """One uploaded file: its prediction and thumbnail, or why it was refused."""

    file: str
    prediction: Prediction | None = None
    thumbnail: str | None = None  # PNG data URI
    error: str | None = None  # the IntakeError message of a refused file


@dataclass(frozen=True)
class BatchRow:
    """One line of the batch table. `probability` is None for refused files and for
    images that get no melanoma estimate (not a lesion image, not dermoscopic)."""

    file: str
    status: str  # "ok" or "refused"
    probability: float | None
    decision: str
    verdict_code: str
    spread: tuple[float, float] | None
    warnings: tuple[str, ...]
    thumbnail: str | None
    error: str


def predict_files(
    predictor: Predictor,
    files: Iterable[tuple[str, bytes]],
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 4,
    total: int | None = None,
) -> list[FileResult]:
    """Read and predict every (file name, bytes) pair, calling `on_progress(done, total)`
    after each file is read or refused (`total`: the number of files, default
    `len(files)`; `files` may be a generator, read one file at a time). Results are in
    input order; refused files keep their intake message.

    Decoding, prediction and the thumbnail happen `chunk_size` files at a time, and only
    the thumbnail and the prediction are kept: peak memory holds at most `chunk_size`
    decoded images, however many files the batch has (a 36-megapixel photo decodes to
    ~110 MB).
    """
    results: list[FileResult] = []
    chunk: list[tuple[str, np.ndarray]] = []
    total = len(files) if total is None and isinstance(files, Sequence) else (total or 0)

    def flush() -> None:
        predictions = predictor.predict_batch([rgb for _, rgb in chunk])
        results.extend(
            FileResult(name, prediction, png_data_uri(rgb, THUMBNAIL_SIDE))
            for (name, rgb), prediction in zip(chunk, predictions)
        )
        chunk.clear()

    for name, data in files:
        try:
            chunk.append((name, read_upload(data).rgb))
        except IntakeError as error:
            if chunk:  # keep input order: predict what is waiting first
                flush()
            results.append(FileResult(name, error=str(error)))
        if len(chunk) >= chunk_size:
            flush()
        if on_progress:
            on_progress(len(results) + len(chunk), total)
    if chunk:
        flush()
    if on_progress:
        on_progress(total, total)
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
            rows.append(
                BatchRow(
                    result.file, "refused", None, "Refused", "refused", None, (), None, result.error or ""
                )
            )
            continue
        prediction = result.prediction.at_threshold(threshold)
        estimate = prediction.has_estimate
        rows.append(
            BatchRow(
                result.file,
                "ok",
                prediction.probability if estimate else None,
                decision_label(prediction),
                prediction.verdict_code,
                prediction.spread if estimate else None,
                tuple(code for code, _ in prediction_warnings(prediction)),
                result.thumbnail,
                "",
            )
        )
    return sorted(rows, key=_sort_key)


def summary_counts(rows: Iterable[BatchRow]) -> dict[str, int]:
    """What the batch summary shows: files read, sent onwards with an estimate (refer or
    borderline), no estimate (a clinician must look), low suspicion, refused files."""
    rows = list(rows)
    codes = [r.verdict_code for r in rows if r.status == "ok"]
    return {
        "triaged": len(codes),
        "onward": sum(c in ("refer", "indeterminate") for c in codes),
        "no_estimate": codes.count("no_estimate"),
        "low": codes.count("low"),
        "refused": sum(r.status != "ok" for r in rows),
    }


def table_records(rows: Iterable[BatchRow]) -> list[dict]:
    """Rows as dicts for a display table (thumbnail included, probability in %)."""
    return [
        {
            "thumbnail": r.thumbnail,
            "file": r.file,
            "probability": None if r.probability is None else 100 * r.probability,
            "decision": r.decision,
            "warnings": ", ".join(r.warnings) or "",
            "reason refused": r.error,
        }
        for r in rows
    ]


def to_csv(rows: Iterable[BatchRow], threshold: float, model_name: str) -> str:
    """CSV text with the columns CSV_COLUMNS, one line per row, no image data."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            csv_row(
                r.file,
                r.status,
                r.probability,
                r.decision,
                r.verdict_code,
                r.spread,
                r.warnings,
                threshold,
                model_name,
                r.error,
            )
        )
    return buffer.getvalue()
