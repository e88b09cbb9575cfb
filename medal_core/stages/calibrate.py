"""Calibration stage: set a bundle's decision policy on its calibration set and report
the app's rule on its report set.

    python -m medal_core calibrate --bundle models/mobilenet --data-root ../shared/data

Run after training (`train.write_bundle` calls `calibrate_bundle`; the CLI re-runs it on
an existing bundle, e.g. after refitting its dermoscopic check). On the calibration set,
with the bundle's temperature, OOD check and dermoscopic check:

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
import json
import sys
from pathlib import Path

import numpy as np

from medal_core.bundles import bundle as bundles
from medal_core.data import datasets as data
from medal_core.data import roles
from medal_core.evaluation import decision, figures, metrics
from medal_core.stages.evaluate import score_role
from medal_core.stages.non_lesion_pictures import non_lesion_pictures

TARGET_SENSITIVITY = figures.TARGET_SENSITIVITY
GUARANTEE_CONFIDENCE = 0.95


def non_lesion_check(loaded: bundles.Bundle, runner) -> dict:
    """Share of non-lesion pictures (flat colours, noise, text, screenshots and, where
    scikit-image is installed, its sample photographs) that get no estimate."""
    pictures = non_lesion_pictures(256)
    batch = np.stack([data.resize_for_model(p, runner.input_size) for p in pictures.values()])
    _, features = runner.batched(batch)
    refused = np.zeros(len(batch), bool)
    if loaded.ood is not None:
        refused |= loaded.ood.score(features, batch) > 1.0
    if loaded.modality is not None:
        refused |= ~loaded.modality.looks_dermoscopic(features, batch)
    return {
        "images": len(batch),
        "no_estimate": int(refused.sum()),
        "share_no_estimate": float(refused.mean()),
        "given_an_estimate": [name for name, r in zip(pictures, refused) if not r],
    }


def rule_report(labels, scored: dict, threshold: float, band_ratio: float) -> dict:
    """The app's rule on one set, with Wilson intervals on its two headline shares."""
    counts = decision.rule_counts(
        labels, scored["probabilities"], threshold, band_ratio, scored["no_estimate"]
    )
    for key in ("melanomas_onward", "benign_reassured"):
        estimate = metrics.Estimate.of(counts[key]["count"], counts[key]["of"])
        counts[key].update(low=estimate.low, high=estimate.high)
    return counts


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

    loaded = bundles.load_bundle(folder)
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
        "non_lesion_check": non_lesion_check(loaded, runner),
    }
    manifest = dict(loaded.manifest)
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
