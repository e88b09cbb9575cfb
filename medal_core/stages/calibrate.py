"""Calibration stage: set a bundle's decision policy on its calibration set and report
the app's rule on its report set.

    python -m medal_core calibrate --bundle models/mobilenet --data-root ../shared/data

Run after training (`train.save_calibrated_bundle` calls `calibrate_bundle`; the CLI
re-runs it on an existing bundle, e.g. after refitting the shared screen). On the calibration set, with
the bundle's temperature and the shared screen (`medal_core.screening.screen`):

* which images get no estimate (not a lesion image, not dermoscopic);
* the threshold: the highest at which the *app* sends at least 95% of the melanomas
  onwards, the no-estimate ones counted as sent onwards (`decision.app_threshold`);
* the borderline band (`decision.threshold_band_ratio`) and the threshold with a 95%
  confidence guarantee of sensitivity >= 0.95 on new cases (`decision.guaranteed_threshold`).

Then the rule's figures (verdict counts, melanomas sent onwards, benign lesions
reassured) on the calibration set and on the report set, which chose nothing, are
written into the manifest, and both prediction files are rewritten with a `no_estimate`
column so that the threshold explorer can show the rule live.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from medal_core.bundles import bundle as bundles
from medal_core.bundles.screening import (
    SCREEN_FOLDER,
    SCREEN_MANIFEST,
    load_screen,
    read_screen_manifest,
    screen_folder_for,
)
from medal_core.data import datasets as data
from medal_core.data import roles
from medal_core.evaluation import decision, figures, metrics
from medal_core.stages.evaluate import score_role
from medal_core.stages.non_lesion_pictures import non_lesion_check

TARGET_SENSITIVITY = figures.TARGET_SENSITIVITY
GUARANTEE_CONFIDENCE = 0.95


def rule_report(labels, scored: dict, threshold: float, band_ratio: float) -> dict:
    """The app's rule on one set, with Wilson intervals on its two headline shares."""
    counts = decision.rule_counts(
        labels, scored["probabilities"], threshold, band_ratio, scored["no_estimate"]
    )
    for key in ("melanomas_onward", "benign_reassured"):
        estimate = metrics.Estimate.of(counts[key]["count"], counts[key]["of"])
        counts[key].update(low=estimate.low, high=estimate.high)
    return counts


def with_current_screen(loaded: bundles.Bundle, assignment: roles.RoleAssignment) -> bundles.Bundle:
    """The bundle with the screen found beside it (or the app's own), checked to have been
    fitted on the same roles as `assignment`, so that its limits never saw the bundle's
    report images. A screen beside the bundle (models/screening for models/NAME) fitted on
    other roles is an error; the app's own, for a bundle elsewhere (a training run), is
    then not used: the bundle answers for every image, and this says so. Without any
    screen the bundle records none."""
    without_screen = {k: v for k, v in loaded.manifest.items() if k != "screening"}
    folder = screen_folder_for(loaded.folder)
    if not (folder / SCREEN_MANIFEST).is_file():
        return dataclasses.replace(loaded, manifest=without_screen)
    recorded = read_screen_manifest(folder).get("data", {}).get("roles")
    if not isinstance(recorded, dict) or set(recorded) != {"train", "calibration", "report"}:
        raise bundles.BundleError(f"{folder / SCREEN_MANIFEST} does not record its roles; refit it.")
    summary = assignment.summary()
    if {role: summary[role]["ids_sha256"] for role in recorded} != recorded:
        advice = (
            f"fit a screen on the bundle's recipe with `python -m medal_core fit-screening "
            f"--recipe ... --out {loaded.folder.parent / SCREEN_FOLDER}`"
        )
        beside = loaded.folder.resolve().parent / SCREEN_FOLDER
        if (beside / SCREEN_MANIFEST).is_file() or "screening" in loaded.manifest:
            raise data.DatasetError(
                f"the screen in {folder} was fitted on other train/calibration/report images "
                f"than bundle '{loaded.name}': {advice}"
            )
        print(
            f"note: the app's screen was fitted on other images than bundle '{loaded.name}', "
            f"so it is calibrated without one and will answer for every image; {advice}",
            file=sys.stderr,
        )
        return dataclasses.replace(loaded, manifest=without_screen)
    return dataclasses.replace(loaded, screen=load_screen(folder))


def calibrate_bundle(
    folder: str | Path, assignment: roles.RoleAssignment, threshold_sources: tuple[str, ...] = ()
) -> dict:
    """Set the decision policy of the bundle in `folder` and record the rule's figures.
    Returns the manifest's new `decision` entry.

    `threshold_sources` (dataset names) restricts the images the threshold, its band and
    its guarantee are chosen on to those calibration images: the sources most like the
    images the app is meant for (default: every calibration image). The rule's figures
    are reported on the whole calibration set and on the report set either way."""
    from medal_core.modeling.runner import ModelRunner

    loaded = with_current_screen(bundles.load_bundle(folder, load_screen_too=False), assignment)
    runner = ModelRunner(loaded.model)
    calibration_set, report_set = assignment.role("calibration"), assignment.role("report")
    cal = score_role(loaded, runner, calibration_set)
    rep = score_role(loaded, runner, report_set)
    labels = calibration_set.labels
    chosen = (
        np.isin(calibration_set.sources.astype(str), list(threshold_sources))
        if threshold_sources
        else np.ones(len(labels), bool)
    )
    if not chosen.any():
        raise data.DatasetError(f"no calibration image comes from {list(threshold_sources)}")
    y, p, skip = labels[chosen], cal["probabilities"][chosen], cal["no_estimate"][chosen]
    threshold = decision.app_threshold(y, p, TARGET_SENSITIVITY, skip)
    band_ratio = decision.threshold_band_ratio(y, p, TARGET_SENSITIVITY)
    guaranteed = decision.guaranteed_threshold(y, p, TARGET_SENSITIVITY, GUARANTEE_CONFIDENCE, skip)
    caught = decision.rule_counts(y, p, threshold, band_ratio, skip)["melanomas_onward"]
    entry = {
        "target_sensitivity": TARGET_SENSITIVITY,
        "threshold_set": {
            "sources": list(threshold_sources) or "all calibration images",
            "images": int(chosen.sum()),
            "melanomas": int(y.sum()),
        },
        "band_ratio": band_ratio,
        "band_method": (
            "odds ratio between the 95th percentile of the threshold re-chosen on "
            "1,000 stratified bootstrap resamples of the calibration set and the "
            "threshold itself"
        ),
        "sensitivity_lower_bound": decision.sensitivity_lower_bound(
            caught["count"], caught["of"], GUARANTEE_CONFIDENCE
        ),
        "guaranteed": {
            "threshold": guaranteed,
            "target": TARGET_SENSITIVITY,
            "confidence": GUARANTEE_CONFIDENCE,
            "method": "highest threshold whose exact (Clopper-Pearson) lower bound "
            "on the calibration set's sensitivity reaches the target",
        },
        "rule": {
            "calibration": rule_report(labels, cal, threshold, band_ratio),
            "report": rule_report(report_set.labels, rep, threshold, band_ratio),
        },
        "non_lesion_check": (
            non_lesion_check(loaded.screen.scores, loaded.screen.input_size) if loaded.screen else None
        ),
    }
    manifest = dict(loaded.manifest)
    if loaded.screen is not None:
        manifest["screening"] = {
            "folder": str(loaded.screen.folder.name),
            "sha256": loaded.screen.manifest_sha256,
            "note": "the shared screen this bundle's threshold was chosen with (models/screening)",
            "figures": loaded.screen.manifest["figures"],
        }
    manifest["threshold"] = {
        **figures.operating_points(y, p),
        "value": threshold,
        "method": (
            f"highest threshold at which the app sends >= {TARGET_SENSITIVITY:.2f} of "
            "the melanomas onwards (no-estimate ones included), on the calibration "
            + (f"images from {', '.join(threshold_sources)}" if threshold_sources else "set")
        ),
    }
    manifest["decision"] = entry
    manifest["validation_metrics"] = {
        **figures.evaluate_probabilities(
            labels, cal["probabilities"], threshold, no_estimate=cal["no_estimate"]
        ),
        "calibration": manifest["validation_metrics"].get("calibration"),
    }
    manifest["report_metrics"] = {
        **figures.evaluate_probabilities(
            report_set.labels, rep["probabilities"], threshold, no_estimate=rep["no_estimate"]
        ),
        "calibration": figures.calibration_summary(
            report_set.labels, rep["logits"], loaded.temperature, loaded.logit_offset
        ),
        "headline": figures.headline_figures(
            report_set.labels, rep["probabilities"], threshold, no_estimate=rep["no_estimate"]
        ),
    }
    folder = Path(folder)
    for dataset, scored, name in (
        (calibration_set, cal, bundles.PREDICTIONS_FILE),
        (report_set, rep, bundles.REPORT_PREDICTIONS_FILE),
    ):
        bundles.write_predictions(
            folder / name,
            bundles.Predictions.of(dataset, scored["logits"], scored["probabilities"], scored["no_estimate"]),
        )
    (folder / bundles.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return entry


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument(
        "--data-root", required=True, help="the folder holding the datasets the bundle was trained on"
    )
    parser.add_argument(
        "--threshold-on",
        action="append",
        default=[],
        metavar="SOURCE",
        help="choose the threshold on the calibration images of this dataset "
        "only (repeatable; default: all calibration images)",
    )
    args = parser.parse_args(argv)
    try:
        manifest = bundles.read_manifest(args.bundle)
        entry = calibrate_bundle(
            args.bundle, roles.bundle_roles(manifest, args.data_root), tuple(args.threshold_on)
        )
    except (bundles.BundleError, data.DatasetError) as error:
        sys.exit(f"error: {error}")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
