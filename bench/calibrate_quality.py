"""Measure the quality statistics on real images and check the limits in quality.py.

For each split (val, train) of an ISIC-style folder `DATA/{split}/{benign,malignant}/*`:

1. every image goes through `read_upload` (as an upload would) and `assess_quality`;
2. the 0.5/1/99/99.5 percentiles of each statistic are printed, with the share of
   images that pass each check at the current limits (the target is >= 99 % on val);
3. each image is degraded (Gaussian blur sigma 3 and 6 px, darkened x0.25,
   overexposed x3 and clipped) and the share of degraded images on which each check
   fires is printed (the target is a large majority for the matching check).

Usage (from the repository root):

    python bench/calibrate_quality.py --data ../shared/data/isic2017
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from medal_core.data.intake import read_upload  # noqa: E402
from medal_core.screening import quality  # noqa: E402

DEFAULT_DATA = "../shared/data/isic2017"
CHECKS = ("blurred", "too_dark", "overexposed", "low_resolution")
STATISTICS = ("sharpness", "brightness", "dark_fraction", "clipped_fraction")
PERCENTILES = (0.5, 1, 99, 99.5)


def degradations() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> function from (h, w, 3) uint8 RGB to a degraded copy of it."""

    def blur(sigma):
        return lambda rgb: cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma, sigmaY=sigma)

    def scale(gain):
        return lambda rgb: np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)

    return {
        "blur sigma 3": blur(3),
        "blur sigma 6": blur(6),
        "dark x0.25": scale(0.25),
        "overexposed x3": scale(3.0),
    }


def image_paths(data: Path, split: str, limit: int | None) -> list[Path]:
    paths = sorted((data / split).glob("*/*.jpg"))
    return paths[:limit] if limit else paths


def measure_split(paths: list[Path]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, float]]]:
    """Statistics and check firing rates of the real images and of each degradation.

    Returns ({"real images" | degradation: {statistic: (n,) values}},
             {"real images" | degradation: {check code | "any": share of images it fired on}}).
    """
    variants = {"real images": lambda rgb: rgb, **degradations()}
    stats = {variant: {name: [] for name in STATISTICS} for variant in variants}
    fired = {variant: {code: 0 for code in (*CHECKS, "any")} for variant in variants}
    for path in paths:
        rgb = read_upload(path.read_bytes()).rgb
        for variant, transform in variants.items():
            report = quality.assess_quality(transform(rgb))
            for name in STATISTICS:
                stats[variant][name].append(getattr(report, name))
            for code in report.codes:
                fired[variant][code] += 1
            fired[variant]["any"] += not report.ok
    n = max(len(paths), 1)
    rates = {
        variant: {code: count / n for code, count in counts.items()} for variant, counts in fired.items()
    }
    arrays = {
        variant: {name: np.asarray(values) for name, values in by_name.items()}
        for variant, by_name in stats.items()
    }
    return arrays, rates


def print_split(
    split: str, n: int, stats: dict[str, dict[str, np.ndarray]], rates: dict[str, dict[str, float]]
) -> None:
    print(f"\n=== {split}: {n} images ===")
    print_percentiles(stats["real images"], PERCENTILES)
    print("\npass rate at the current limits (real images):")
    for code in CHECKS:
        print(f"  {code:<16}{1 - rates['real images'][code]:>8.2%}")
    print(f"  {'all checks':<16}{1 - rates['real images']['any']:>8.2%}")
    print("\nfiring rate of each check on degraded copies:")
    print(f"  {'degradation':<16}" + "".join(f"{code:>16}" for code in CHECKS))
    for variant, row in rates.items():
        if variant != "real images":
            print(f"  {variant:<16}" + "".join(f"{row[code]:>16.2%}" for code in CHECKS))
    for variant, by_name in stats.items():
        if variant != "real images":
            print(f"\nstatistics of '{variant}' copies:")
            print_percentiles(by_name, (1, 50, 90, 95, 99))


def print_percentiles(stats: dict[str, np.ndarray], percentiles) -> None:
    header = "".join(f"{f'p{p:g}':>10}" for p in percentiles)
    print(f"  {'statistic':<18}{'min':>10}{header}{'max':>10}")
    for name, values in stats.items():
        cells = "".join(f"{v:>10.4g}" for v in np.percentile(values, percentiles))
        print(f"  {name:<18}{values.min():>10.4g}{cells}{values.max():>10.4g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="ISIC folder with {split}/{benign,malignant}/*.jpg; a relative "
        f"path is taken from the repository root (default {DEFAULT_DATA})",
    )
    parser.add_argument("--splits", nargs="+", default=["val", "train"])
    parser.add_argument(
        "--limit", type=int, default=None, help="use only the first N images of each split (quick look)"
    )
    args = parser.parse_args(argv)

    data = Path(args.data)
    if not data.is_absolute() and not data.is_dir():
        data = REPO_ROOT / data
    if not data.is_dir():
        parser.error(f"data folder not found: {args.data}")

    print(
        "limits: "
        + ", ".join(
            f"{name}={getattr(quality, name)}"
            for name in (
                "SHARPNESS_MIN",
                "BRIGHTNESS_MIN",
                "DARK_LUMA",
                "DARK_FRACTION_MAX",
                "CLIPPED_LEVEL",
                "CLIPPED_FRACTION_MAX",
                "MIN_RESOLUTION_SIDE",
                "WORKING_SIDE",
            )
        )
    )
    for split in args.splits:
        paths = image_paths(data, split, args.limit)
        if not paths:
            print(f"\n=== {split}: no images under {data / split} ===")
            continue
        stats, rates = measure_split(paths)
        print_split(split, len(paths), stats, rates)
    return 0


if __name__ == "__main__":
    sys.exit(main())
