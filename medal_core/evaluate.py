"""Evaluate a bundle on a labelled split: ROC/PR AUC, operating-point metrics with CIs,
calibration, and MedAL's per-class table.

    python -m medal_core.evaluate --bundle models/mobilenet --data ../shared/data/isic2017 \\
        --split validation

`--split` is a split of the data folder (`train`, `val`, `test`, or `all`), or
`validation`: the bundle's own validation set (official `val` plus the seeded part of
`train` recorded in its manifest), which reproduces the manifest's figures. A folder the
bundle never saw works the same way (e.g. class folders of a held-out test set).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from medal_core import data, metrics

TARGET_SENSITIVITY = 0.95
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

    summary = {"temperature": temperature, "logit_offset": logit_offset}
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


def evaluate_probabilities(y_true, probabilities, threshold: float, n_bootstrap: int = 2000) -> dict:
    """Everything the README and the app report, as a JSON-ready dict."""
    y_true, probabilities = metrics.check_binary_inputs(y_true, probabilities)
    auc_low, auc_high = metrics.bootstrap_ci(y_true, probabilities, metrics.roc_auc, n_bootstrap)
    at_threshold = metrics.threshold_metrics(y_true, probabilities, threshold)
    confusion = metrics.confusion_at(y_true, probabilities, threshold)
    return {
        "n": int(len(y_true)),
        "malignant": int(y_true.sum()),
        "roc_auc": {"value": metrics.roc_auc(y_true, probabilities), "low": auc_low, "high": auc_high},
        "pr_auc": metrics.average_precision(y_true, probabilities),
        "threshold": threshold,
        "at_threshold": {name: vars(est) for name, est in at_threshold.items()},
        "confusion": vars(confusion),
        "per_class": metrics.per_class_report(y_true, probabilities, threshold),
    }


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
              f"               benign  malignant",
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


def select_split(bundle_manifest: dict, dataset: data.Dataset, split: str) -> data.Dataset:
    """The images of `split`; `validation` rebuilds the bundle's own validation set."""
    if split == "validation":
        rule = bundle_manifest["data"]["validation_rule"]
        return data.make_validation_split(dataset, rule["extra_fraction"], rule["seed"])[1]
    return dataset.select_split(split)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle folder, e.g. models/mobilenet")
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--manifest", default=None, help="optional CSV manifest (filepath,label)")
    parser.add_argument("--split", default="validation",
                        help="train | val | test | all | validation (the bundle's own)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold (default: the bundle's)")
    parser.add_argument("--json", default=None, help="where to write the JSON report")
    args = parser.parse_args(argv)

    from medal_core.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(args.bundle)
        dataset = select_split(bundle.manifest, data.load_dataset(args.data, args.manifest), args.split)
    except (BundleError, data.DatasetError) as error:
        sys.exit(f"error: {error}")
    logits = dataset_logits(bundle.model, dataset, views=bundle.manifest["test_time_views"])
    probabilities = bundle.calibrate(logits)
    threshold = bundle.threshold if args.threshold is None else args.threshold
    report = evaluate_probabilities(dataset.labels, probabilities, threshold)
    report["calibration"] = calibration_summary(dataset.labels, logits, bundle.temperature,
                                                bundle.logit_offset)
    report.update(bundle=bundle.name, split=args.split, data=str(args.data))
    print(format_report(report, f"{bundle.name} on '{args.split}' of {args.data}"))
    out = Path(args.json or f"reports/{bundle.name}_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON report: {out}")
    return report


if __name__ == "__main__":
    main()
