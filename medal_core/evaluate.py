"""Evaluate a bundle: ROC/PR AUC, operating-point metrics with CIs, calibration, the
specificity at the dermatologists' and the app's sensitivity, per-diagnosis figures and
MedAL's per-class table.

    # the bundle's own roles, rebuilt from its recipe (checked against its manifest):
    python -m medal_core.evaluate --bundle models/mobilenet --data-root ../shared/data
    # any labelled folder or split the bundle never saw:
    python -m medal_core.evaluate --bundle models/mobilenet --data DIR --split test

With `--data-root` every figure of the README's model table is recomputed from the
bundle's model and the images: its report set (which chose nothing), each source of
it, and, labelled as such, its selection and calibration sets. `--data` evaluates one
folder (`--split` train, val, test or all).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from medal_core import data, metrics

TARGET_SENSITIVITY = 0.95
DERMATOLOGIST_SENSITIVITY = 0.82   # dermatologists' sensitivity on ISIC 2017-like tests
MEDAL_THRESHOLD = 0.37   # the operating point of the original MedAL app


def dataset_logits(model, dataset: data.Dataset, views: int = 1) -> np.ndarray:
    """Logits of shape (n,) for every image of `dataset` (mean over `views` test-time views)."""
    from medal_core.inference import ModelRunner  # deferred: TensorFlow is slow to import

    runner = ModelRunner(model)
    return mean_logits(runner, data.load_images(dataset.paths, runner.input_size), views)


def mean_logits(runner, images: np.ndarray, views: int = 1) -> np.ndarray:
    """Logits of shape (n,) from a `ModelRunner` for images (n, s, s, 3), averaged over
    `views` test-time views."""
    logits, _ = runner.batched(images, views)
    return logits if views == 1 else logits.mean(axis=1)


def calibration_summary(y_true, logits, temperature: float, logit_offset: float = 0.0) -> dict:
    """NLL, Brier score and ECE of the raw sigmoid(logits), after removing the class-
    weighting offset, and after the offset and temperature scaling (what the app shows)."""
    from medal_core.bundle import calibrated_probability

    summary: dict = {"temperature": temperature, "logit_offset": logit_offset}
    for label, offset, t in (("uncalibrated", 0.0, 1.0), ("offset_only", logit_offset, 1.0),
                             ("calibrated", logit_offset, temperature)):
        p = calibrated_probability(logits, offset, t)
        summary[label] = {"nll": metrics.log_loss(y_true, p), "brier": metrics.brier_score(y_true, p),
                          "ece": metrics.expected_calibration_error(y_true, p)}
    return summary


def operating_points(y_true, probabilities, target_sensitivity: float = TARGET_SENSITIVITY) -> dict:
    """The recall-first threshold (default) and the alternatives a clinician may prefer."""
    return {
        "value": metrics.threshold_for_sensitivity(y_true, probabilities, target_sensitivity),
        "method": f"largest threshold with sensitivity >= {target_sensitivity:.2f} on validation",
        "target_sensitivity": target_sensitivity,
        "youden": metrics.youden_threshold(y_true, probabilities),
        "medal": MEDAL_THRESHOLD,
    }


def evaluate_probabilities(y_true, probabilities, threshold: float, n_bootstrap: int = 2000,
                           no_estimate=None) -> dict:
    """Everything the README and the app report, as a JSON-ready dict: the areas under
    the curves of the model's probabilities, and the figures at `threshold` of the app's
    rule (images with no estimate, `no_estimate` (n,) bool, count as sent onwards)."""
    from medal_core.decision import onward_scores

    y_true, probabilities = metrics.check_binary_inputs(y_true, probabilities)
    auc_low, auc_high = metrics.bootstrap_ci(y_true, probabilities, metrics.roc_auc, n_bootstrap)
    onward = onward_scores(probabilities, no_estimate)
    at_threshold = metrics.threshold_metrics(y_true, onward, threshold)
    confusion = metrics.confusion_at(y_true, onward, threshold)
    return {
        "n": int(len(y_true)),
        "malignant": int(y_true.sum()),
        "roc_auc": {"value": metrics.roc_auc(y_true, probabilities), "low": auc_low, "high": auc_high},
        "pr_auc": metrics.average_precision(y_true, probabilities),
        "threshold": threshold,
        "at_threshold": {name: vars(est) for name, est in at_threshold.items()},
        "confusion": vars(confusion),
        "per_class": metrics.per_class_report(y_true, onward, threshold),
    }


def headline_figures(y_true, probabilities, threshold: float, n_bootstrap: int = 2000,
                     no_estimate=None) -> dict:
    """The model table's figures for one set: ROC AUC (bootstrap 95% CI), specificity at
    sensitivity 0.95 and 0.82 (points of this set's ROC curve), ECE — all of the model's
    probabilities — and the app's sensitivity and specificity at the bundle's own
    threshold (chosen elsewhere), counting images with no estimate (`no_estimate`, (n,)
    bool) as sent onwards."""
    from medal_core.decision import onward_scores

    y_true, probabilities = metrics.check_binary_inputs(y_true, probabilities)
    low, high = metrics.bootstrap_ci(y_true, probabilities, metrics.roc_auc, n_bootstrap)
    at = metrics.threshold_metrics(y_true, onward_scores(probabilities, no_estimate), threshold)
    return {
        "n": int(len(y_true)), "malignant": int(y_true.sum()),
        "roc_auc": {"value": metrics.roc_auc(y_true, probabilities), "low": low, "high": high},
        "specificity_at_sensitivity": {
            f"{target:.2f}": vars(metrics.specificity_at_sensitivity(y_true, probabilities, target))
            for target in (TARGET_SENSITIVITY, DERMATOLOGIST_SENSITIVITY)},
        "ece": metrics.expected_calibration_error(y_true, probabilities),
        "threshold": threshold,
        "sensitivity": vars(at["sensitivity"]), "specificity": vars(at["specificity"]),
    }


def per_diagnosis(labels, probabilities, diagnoses, threshold: float, no_estimate=None) -> list[dict]:
    """For each diagnosis: images, and the share the app sends onwards at `threshold`
    (Wilson CI; no-estimate images count as sent onwards), which for melanoma is the
    sensitivity and for a benign diagnosis the share referred."""
    from medal_core.decision import onward_scores

    labels = np.asarray(labels)
    probabilities = onward_scores(probabilities, no_estimate)
    diagnoses = np.asarray(diagnoses, dtype=str)
    rows = []
    for name in sorted(set(diagnoses.tolist()) - {""}):
        chosen = diagnoses == name
        above = int(np.sum(probabilities[chosen] >= threshold))
        rows.append({"diagnosis": name, "melanoma": bool(labels[chosen].max() == 1),
                     "images": int(chosen.sum()), "above_threshold": vars(
                         metrics.Estimate.of(above, int(chosen.sum())))})
    return rows


def format_headline(name: str, figures: dict) -> str:
    """One line of the model table."""
    auc, spec = figures["roc_auc"], figures["specificity_at_sensitivity"]
    return (f"{name:<34} n={figures['n']:>5} mel={figures['malignant']:>4}  "
            f"AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})  "
            f"spec@0.95 {spec['0.95']['value']:.3f}  spec@0.82 {spec['0.82']['value']:.3f}  "
            f"ECE {figures['ece']:.3f}  at {figures['threshold']:.4f}: "
            f"sens {figures['sensitivity']['value']:.3f} spec {figures['specificity']['value']:.3f}")


def evaluate_roles(bundle, data_root: str | Path, roles_to_check=("report", "selection",
                                                                   "calibration")) -> dict:
    """Rebuild the bundle's roles from the recipe in its manifest, check they are the
    images it recorded, recompute the predictions exactly as the app makes them (8 views,
    OOD and dermoscopic checks) and report every set and each source of it."""
    from medal_core import roles
    from medal_core.calibrate import score_role
    from medal_core.inference import ModelRunner

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
                sets["selection: isic2017 official val"] = ((dataset.sources == source)
                                                            & (dataset.splits == "val"))
        for name, chosen in sets.items():
            if len(set(dataset.labels[chosen].tolist())) < 2:
                continue
            result[name] = headline_figures(dataset.labels[chosen], probabilities[chosen],
                                            bundle.threshold, no_estimate=no_estimate[chosen])
        if role == "report":
            result["report per diagnosis"] = per_diagnosis(dataset.labels, probabilities,
                                                           dataset.diagnoses, bundle.threshold,
                                                           no_estimate)
    return result


def format_report(report: dict, title: str = "") -> str:
    """A plain-text table of a report from `evaluate_probabilities`."""
    auc = report["roc_auc"]
    lines = [title] if title else []
    lines += [
        f"images {report['n']} (malignant {report['malignant']})",
        f"ROC AUC  {auc['value']:.3f}  (95% CI {auc['low']:.3f}–{auc['high']:.3f}, bootstrap)",
        f"PR AUC   {report['pr_auc']:.3f}",
        f"at threshold {report['threshold']:.3f}:",
    ]
    for name, est in report["at_threshold"].items():
        counts = "" if name == "f1" else f"  [{est['successes']}/{est['total']}]"
        lines.append(f"  {name:<12} {est['value']:.3f}  (95% CI {est['low']:.3f}–{est['high']:.3f}){counts}")
    c = report["confusion"]
    lines += ["confusion (rows true, columns decision):",
              "               benign  malignant",
              f"  benign     {c['tn']:>8} {c['fp']:>10}",
              f"  malignant  {c['fn']:>8} {c['tp']:>10}",
              "class        precision  recall    f1  support"]
    for row in report["per_class"]:
        lines.append(f"  {row['class']:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                     f"{row['f1']:>5.3f} {row['support']:>8}")
    if "calibration" in report:
        cal = report["calibration"]
        lines.append(f"calibration (class-weight offset {cal.get('logit_offset', 0.0):.3f}, "
                     f"temperature {cal['temperature']:.3f}):")
        for label in ("uncalibrated", "offset_only", "calibrated"):
            m = cal[label]
            lines.append(f"  {label:<13} NLL {m['nll']:.4f}  Brier {m['brier']:.4f}  ECE {m['ece']:.4f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle folder, e.g. models/mobilenet")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the bundle's datasets: evaluates its roles")
    parser.add_argument("--data", default=None, help="or one dataset folder")
    parser.add_argument("--manifest", default=None, help="optional CSV manifest (filepath,label)")
    parser.add_argument("--split", default="all", help="with --data: train | val | test | all")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold (default: the bundle's)")
    parser.add_argument("--json", default=None, help="where to write the JSON report")
    args = parser.parse_args(argv)
    if (args.data is None) == (args.data_root is None):
        parser.error("give --data-root (the bundle's roles) or --data (one folder)")

    from medal_core.bundle import BundleError, load_bundle

    report: dict
    try:
        bundle = load_bundle(args.bundle)
        if args.data_root is not None:
            report = {"bundle": bundle.name, "data_root": str(args.data_root),
                      "sets": evaluate_roles(bundle, args.data_root)}
            for name, figures in report["sets"].items():
                if name != "report per diagnosis":
                    print(format_headline(name, figures))
            print("report set, share at or above the threshold by diagnosis:")
            for row in report["sets"]["report per diagnosis"]:
                est = row["above_threshold"]
                print(f"  {row['diagnosis']:<22} {est['successes']:>4}/{est['total']:<5} "
                      f"{est['value']:.3f} ({est['low']:.3f}-{est['high']:.3f})")
            suffix = "roles"
        else:
            dataset = data.load_dataset(args.data, args.manifest).select_split(args.split)
            report = evaluate_folder(bundle, dataset, args.threshold)
            report.update(split=args.split, data=str(args.data))
            print(format_report(report, f"{bundle.name} on '{args.split}' of {args.data}"))
            suffix = args.split
    except (BundleError, data.DatasetError) as error:
        sys.exit(f"error: {error}")
    out = Path(args.json or f"reports/{bundle.name}_{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON report: {out}")
    return report


def evaluate_folder(bundle, dataset: data.Dataset, threshold: float | None = None) -> dict:
    """The full report of `evaluate_probabilities` for one dataset, plus calibration."""
    logits = dataset_logits(bundle.model, dataset, views=bundle.manifest["test_time_views"])
    probabilities = bundle.calibrate(logits)
    threshold = bundle.threshold if threshold is None else threshold
    report = evaluate_probabilities(dataset.labels, probabilities, threshold)
    report["calibration"] = calibration_summary(dataset.labels, logits, bundle.temperature,
                                                bundle.logit_offset)
    report["headline"] = headline_figures(dataset.labels, probabilities, threshold)
    report["bundle"] = bundle.name
    return report


if __name__ == "__main__":
    main()
