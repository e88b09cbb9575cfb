"""Evaluate a bundle: ROC/PR AUC, operating-point metrics with CIs, calibration, the
specificity at the dermatologists' and the app's sensitivity, per-diagnosis figures and
MedAL's per-class table.

    # the bundle's own roles, rebuilt from its recipe (checked against its manifest):
    python -m medal_core evaluate --bundle models/mobilenet --data-root ../shared/data
    # any labelled folder or split the bundle never saw:
    python -m medal_core evaluate --bundle models/mobilenet --data DIR --split test

With `--data-root` every figure of the README's model table is recomputed from the
bundle's model and the images: its report set (which chose nothing), each source of
it, and, labelled as such, its selection and calibration sets. `--data` evaluates one
folder (`--split` train, val, test or all). Either way the predictions are the app's: the
bundle's test-time views (8 in every committed bundle), and no estimate where the
bundle's screen gives none (counted, and counted as sent onwards at the threshold).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from medal_core.bundles import bundle as bundles
from medal_core.data import datasets as data
from medal_core.evaluation.figures import (
    calibration_summary,
    evaluate_probabilities,
    format_headline,
    format_report,
    headline_figures,
    per_diagnosis,
)
from medal_core.modeling.runner import DIHEDRAL_VIEWS


def dataset_logits(model, dataset: data.Dataset, views: int = 1) -> np.ndarray:
    """Logits of shape (n,) for every image of `dataset` (mean over `views` test-time views)."""
    from medal_core.modeling.runner import ModelRunner  # deferred: TensorFlow is slow to import

    runner = ModelRunner(model)
    return mean_logits(runner, data.load_images(dataset.paths, runner.input_size), views)


def mean_logits(runner, images: np.ndarray, views: int = 1) -> np.ndarray:
    """Logits of shape (n,) from a `ModelRunner` for images (n, s, s, 3), averaged over
    `views` test-time views."""
    logits, _ = runner.batched(images, views)
    return logits if views == 1 else logits.mean(axis=1)


def score_role(loaded: bundles.Bundle, runner, dataset: data.Dataset) -> dict:
    """Logits (n,), calibrated probabilities (n,) and the no-estimate mask (n,) of a set,
    computed exactly as the app's Predictor does (the bundle's test-time views, the
    shared screen)."""
    screen = loaded.screen
    sizes = sorted({runner.input_size} | ({screen.input_size} if screen else set()))
    images = dict(zip(sizes, data.load_images_at(dataset.paths, tuple(sizes))))  # each decoded once
    views = loaded.manifest["test_time_views"]
    view_logits, _ = runner.batched(images[runner.input_size], views)
    logits = view_logits.mean(axis=1) if views == DIHEDRAL_VIEWS else view_logits
    no_estimate = (
        np.zeros(len(dataset), bool)
        if screen is None
        else screen.scores(images[screen.input_size]).no_estimate
    )
    return {"logits": logits, "probabilities": loaded.calibrate(logits), "no_estimate": no_estimate}


def evaluate_roles(
    bundle, data_root: str | Path, roles_to_check=("report", "selection", "calibration")
) -> dict:
    """Rebuild the bundle's roles from the recipe in its manifest, check they are the
    images it recorded, recompute the predictions exactly as the app makes them (its
    test-time views, the shared screen) and report every set and each source of it."""
    from medal_core.data import roles
    from medal_core.modeling.runner import ModelRunner

    assignment = roles.bundle_roles(bundle.manifest, data_root)
    runner = ModelRunner(bundle.model)
    result: dict = {}
    for role in roles_to_check:
        dataset = assignment.role(role)
        scored = score_role(bundle, runner, dataset)
        probabilities, no_estimate = scored["probabilities"], scored["no_estimate"]
        sets = {f"{role} (all)": np.ones(len(dataset), bool)}
        for source in sorted(set(dataset.sources)):
            sets[f"{role}: {source}"] = dataset.sources == source
            if role == "selection" and source == "isic2017":
                sets["selection: isic2017 official val"] = (dataset.sources == source) & (
                    dataset.splits == "val"
                )
        for name, chosen in sets.items():
            if len(set(dataset.labels[chosen].tolist())) < 2:
                continue
            result[name] = headline_figures(
                dataset.labels[chosen],
                probabilities[chosen],
                bundle.threshold,
                no_estimate=no_estimate[chosen],
            )
        if role == "report":
            result["report per diagnosis"] = per_diagnosis(
                dataset.labels, probabilities, dataset.diagnoses, bundle.threshold, no_estimate
            )
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle folder, e.g. models/mobilenet")
    parser.add_argument(
        "--data-root", default=None, help="folder holding the bundle's datasets: evaluates its roles"
    )
    parser.add_argument("--data", default=None, help="or one dataset folder")
    parser.add_argument("--manifest", default=None, help="optional CSV manifest (filepath,label)")
    parser.add_argument("--split", default="all", help="with --data: train | val | test | all")
    parser.add_argument(
        "--threshold", type=float, default=None, help="decision threshold (default: the bundle's)"
    )
    parser.add_argument("--json", default=None, help="where to write the JSON report")
    args = parser.parse_args(argv)
    if (args.data is None) == (args.data_root is None):
        parser.error("give --data-root (the bundle's roles) or --data (one folder)")

    from medal_core.bundles.bundle import BundleError, load_bundle

    report: dict
    try:
        bundle = load_bundle(args.bundle)
        if args.data_root is not None:
            report = {
                "bundle": bundle.name,
                "data_root": str(args.data_root),
                "sets": evaluate_roles(bundle, args.data_root),
            }
            for name, figures in report["sets"].items():
                if name != "report per diagnosis":
                    print(format_headline(name, figures))
            print("report set, share at or above the threshold by diagnosis:")
            for row in report["sets"]["report per diagnosis"]:
                est = row["above_threshold"]
                print(
                    f"  {row['diagnosis']:<22} {est['successes']:>4}/{est['total']:<5} "
                    f"{est['value']:.3f} ({est['low']:.3f}-{est['high']:.3f})"
                )
            suffix = "roles"
        else:
            dataset = data.load_dataset(args.data, args.manifest).select_split(args.split)
            report = evaluate_folder(bundle, dataset, args.threshold)
            report.update(split=args.split, data=str(args.data))
            print(format_report(report, f"{bundle.name} on '{args.split}' of {args.data}"))
            refused = report["no_estimate"]
            print(
                f"no estimate (the screen): {refused['images']} of {report['n']} images, "
                f"{refused['melanomas']} of {report['malignant']} melanomas (counted as sent onwards)"
            )
            suffix = args.split
    except (BundleError, data.DatasetError) as error:
        sys.exit(f"error: {error}")
    out = Path(args.json or f"reports/{bundle.name}_{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON report: {out}")
    return report


def evaluate_folder(bundle, dataset: data.Dataset, threshold: float | None = None) -> dict:
    """The full report of `evaluate_probabilities` for one dataset, plus calibration,
    with the predictions made as the app makes them (`score_role`: the bundle's test-time
    views and its screen, whose no-estimate images count as sent onwards at the threshold)."""
    from medal_core.modeling.runner import ModelRunner

    scored = score_role(bundle, ModelRunner(bundle.model), dataset)
    probabilities, no_estimate = scored["probabilities"], scored["no_estimate"]
    threshold = bundle.threshold if threshold is None else threshold
    report = evaluate_probabilities(dataset.labels, probabilities, threshold, no_estimate=no_estimate)
    report["calibration"] = calibration_summary(
        dataset.labels, scored["logits"], bundle.temperature, bundle.logit_offset
    )
    report["headline"] = headline_figures(dataset.labels, probabilities, threshold, no_estimate=no_estimate)
    report["no_estimate"] = {
        "images": int(no_estimate.sum()),
        "melanomas": int(no_estimate[dataset.labels == 1].sum()),
        "screen": bundle.screen.folder.name if bundle.screen is not None else None,
    }
    report["bundle"] = bundle.name
    return report


if __name__ == "__main__":
    main()
