"""Peak memory of batch triage with many phone-size photos. Prints figures; asserts nothing.

    python bench/batch_memory.py --files 20 200 --megapixels 36

For each file count, a fresh child process loads the bundle, then runs the Batch page's
own path (`medal_views.batch.predict_files`, then the table and the CSV) over that many
JPEG photos of `--megapixels` (8 distinct synthetic lesion photos, cycled, made before
the measurement starts). It reports the process's peak resident memory (VmHWM) above
its level after the model load and the photos were made: if batch memory is bounded,
the peak does not grow with the number of files.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

DISTINCT = 8


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0), so the peak is this phase's."""
    Path("/proc/self/clear_refs").write_text("5")


def phone_photos(megapixels: float) -> list[bytes]:
    """DISTINCT JPEGs (quality 92) of synthetic lesions at about `megapixels`, 4:3."""
    import numpy as np
    from app_helpers import synthetic_lesion
    from PIL import Image

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    photos = []
    for seed in range(DISTINCT):
        small = Image.fromarray(synthetic_lesion(seed, 512))
        big = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC)).astype(np.int16)
        noise = np.random.default_rng(seed).integers(-6, 7, big.shape, dtype=np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92)
        photos.append(buffer.getvalue())
    return photos


def measure(bundle: str, files: int, megapixels: float) -> dict:
    from medal_core.serving.predictor import Predictor
    from medal_views import batch

    predictor = Predictor.from_folder(bundle)
    photos = phone_photos(megapixels)
    predictor.predict_batch([predictor_warm_image()])  # trace before measuring
    _reset_peak()
    baseline = _status_kib("VmRSS")
    started = time.perf_counter()
    results = batch.predict_files(
        predictor, ((f"photo_{i}.jpg", photos[i % DISTINCT]) for i in range(files)), total=files
    )
    rows = batch.batch_rows(results, predictor.default_threshold)
    csv_text = batch.to_csv(rows, predictor.default_threshold, predictor.bundle.name)
    seconds = time.perf_counter() - started
    return {
        "files": files,
        "megapixels": megapixels,
        "jpeg_mb_each": round(sum(map(len, photos)) / DISTINCT / 2**20, 2),
        "peak_above_baseline_mib": round((_status_kib("VmHWM") - baseline) / 1024, 1),
        "baseline_rss_mib": round(baseline / 1024, 1),
        "seconds": round(seconds, 1),
        "seconds_per_file": round(seconds / files, 3),
        "csv_rows": csv_text.count("\n") - 1,
        "decoded_mib_each": round(3 * megapixels * 1e6 / 2**20, 1),
    }


def predictor_warm_image():
    import numpy as np

    return np.full((300, 300, 3), 128, np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(REPO_ROOT / "models" / "mobilenet"))
    parser.add_argument("--files", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--megapixels", type=float, default=36)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.bundle, args.child, args.megapixels)))
        return 0
    figures = []
    for files in args.files:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--bundle",
                args.bundle,
                "--child",
                str(files),
                "--megapixels",
                str(args.megapixels),
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=3600,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        figures.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"batch triage, {args.megapixels:g}-MP phone-size JPEGs ({figures[0]['jpeg_mb_each']} MB "
        f"each, {figures[0]['decoded_mib_each']} MiB decoded), bundle {Path(args.bundle).name}:"
    )
    for f in figures:
        print(
            f"  {f['files']:>4} files: peak {f['peak_above_baseline_mib']:>7} MiB above the "
            f"{f['baseline_rss_mib']} MiB after loading; {f['seconds']} s "
            f"({f['seconds_per_file']} s a file); {f['csv_rows']} CSV rows"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
