"""Archive-scale batch scoring on Ray Data: `python -m medal_core batch`.

    python -m medal_core batch --input DIR_OR_CSV --out results.csv [--bundle models/mobilenetv2_cc_ensemble]
        [--threshold T] [--address RAY_ADDRESS] [--workers N] [--batch-size 16]

`--input` is a folder (searched recursively for image files) or a CSV manifest with a
`path` column (relative paths are taken from the CSV's folder). Files stream through
`map_batches` over `--workers` predictor actors, `--batch-size` at a time, and each
scored batch is appended to `--out` as it arrives: memory stays flat however many images
there are (each actor holds one batch of decoded images). The CSV has the columns of the
app's batch CSV (`medal_core.serving.table`), in input order; a refused file gets its
reason. Ray starts locally unless `--address` names a cluster; usage statistics are off.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medal_core.data.intake import MAX_BYTES, IntakeError, read_upload
from medal_core.serving.table import CSV_COLUMNS, prediction_row, refused_row

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MANIFEST_COLUMN = "path"


def list_inputs(source: str | Path) -> Iterator[tuple[str, str]]:
    """(name for the CSV, absolute path) of every input: image files under a folder in
    sorted order, or the rows of a CSV manifest's `path` column in their order."""
    source = Path(source)
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                yield str(path.relative_to(source)), str(path.resolve())
        return
    if source.suffix.lower() != ".csv" or not source.is_file():
        raise ValueError(f"--input must be a folder or a .csv manifest, got {source}")
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if MANIFEST_COLUMN not in (reader.fieldnames or []):
            raise ValueError(
                f"{source} has no '{MANIFEST_COLUMN}' column (columns: {', '.join(reader.fieldnames or [])})"
            )
        for row in reader:
            given = Path(row[MANIFEST_COLUMN])
            yield str(given), str(given if given.is_absolute() else (source.parent / given).resolve())


def read_file(path: str, limit: int = MAX_BYTES) -> bytes | str:
    """The file's bytes (at most `limit` + 1 are read), or a message why it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except OSError as error:
        return f"The file could not be read ({error.strerror or error})."


class ScoreBatch:
    """Ray Data actor: a batch of {"name", "path"} rows → the CSV's columns."""

    def __init__(self, bundle: str, threshold: float | None, threads: int = 1):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from medal_core.serving.predictor import Predictor

        self.predictor = Predictor.from_folder(bundle)
        self.threshold = self.predictor.default_threshold if threshold is None else threshold
        self.model = self.predictor.bundle.name

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = score_files(
            self.predictor, list(batch["name"]), list(batch["path"]), self.threshold, self.model
        )
        columns = np.array(rows, dtype=object).reshape(len(rows), -1)
        return {name: columns[:, i].astype(str) for i, name in enumerate(CSV_COLUMNS)}


def score_files(
    predictor, names: list[str], paths: list[str], threshold: float, model: str
) -> list[list[str]]:
    """CSV rows for files, in their order: accepted images predicted together."""
    rows: list[list[str] | None] = [None] * len(names)
    accepted, images = [], []
    for i, path in enumerate(paths):
        data = read_file(path)
        if isinstance(data, str):
            rows[i] = refused_row(names[i], data, threshold, model)
            continue
        try:
            images.append(read_upload(data).rgb)
            accepted.append(i)
        except IntakeError as error:
            rows[i] = refused_row(names[i], str(error), threshold, model)
    if images:
        for i, prediction in zip(accepted, predictor.predict_batch(images, threshold)):
            rows[i] = prediction_row(names[i], prediction, model)
    return [row for row in rows if row is not None]


def run(args: argparse.Namespace) -> int:
    """Score every input into `args.out`; returns how many rows were written."""
    import ray

    from medal_core.serving.ray_serve import start_ray

    inputs = list(list_inputs(args.input))
    if not inputs:
        raise SystemExit(f"no image files found in {args.input}")
    start_ray(args.address, cpus=None if args.address else args.workers)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the CSV follows the input order
    context.enable_progress_bars = not args.quiet
    dataset = ray.data.from_items(
        [{"name": n, "path": p} for n, p in inputs],
        override_num_blocks=max(1, len(inputs) // args.batch_size),
    )
    scored = dataset.map_batches(
        ScoreBatch,
        batch_size=args.batch_size,
        concurrency=args.workers,
        num_cpus=1,
        fn_constructor_args=(args.bundle, args.threshold),
        batch_format="numpy",
    )
    written, started = 0, time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for batch in scored.iter_batches(batch_size=args.batch_size, batch_format="numpy"):
            columns = [batch[name] for name in CSV_COLUMNS]
            writer.writerows(zip(*columns))
            written += len(columns[0])
            if not args.quiet:
                rate = written / max(time.perf_counter() - started, 1e-9)
                print(f"scored {written}/{len(inputs)} files ({rate:.1f}/s)", file=sys.stderr, flush=True)
    return written


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m medal_core batch",
        description="Score a folder or CSV manifest of images with Ray Data.",
    )
    parser.add_argument("--input", required=True, help="folder of images, or a CSV with a 'path' column")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--bundle", default="models/mobilenetv2_cc_ensemble")
    parser.add_argument(
        "--threshold", type=float, default=None, help="decision threshold (default: the bundle's own)"
    )
    parser.add_argument("--address", default=None, help="Ray cluster to join; default: start one here")
    parser.add_argument("--workers", type=int, default=1, help="predictor actors")
    parser.add_argument("--batch-size", type=int, default=16, help="files per actor call")
    parser.add_argument("--quiet", action="store_true", help="no progress on the terminal")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.batch_size < 1:
        parser.error("--workers and --batch-size must be at least 1")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        parser.error("--threshold must be in [0, 1]")
    if not (Path(args.bundle) / "manifest.json").exists():
        parser.error(f"{args.bundle} is not a bundle folder (no manifest.json)")
    if not Path(args.input).exists():
        parser.error(f"--input {args.input} does not exist")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        written = run(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
