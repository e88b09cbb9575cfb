"""The figures reported for a set of images, as JSON-ready dicts: pure functions of
labels (n,) in {0, 1} and calibrated probabilities (n,) in [0, 1].

The decision rule they describe is the app's (`medal_core.evaluation.decision`):
images with no estimate (`no_estimate`, (n,) bool) count as sent onwards.
"""

from __future__ import annotations

import numpy as np

from medal_core.evaluation import metrics
from medal_core.evaluation.decision import onward_scores

TARGET_SENSITIVITY = 0.95
DERMATOLOGIST_SENSITIVITY = 0.82  # dermatologists' sensitivity on ISIC 2017-like tests
MEDAL_THRESHOLD = 0.37  # the operating point of the original MedAL app


def calibration_summary(y_true, logits, temperature: float, logit_offset: float = 0.0) -> dict:
    """NLL, Brier score and ECE of the raw sigmoid(logits), after removing the class-
    weighting offset, and after the offset and temperature scaling (what the app shows)."""
    summary: dict = {"temperature": temperature, "logit_offset": logit_offset}
    for label, offset, t in (
        ("uncalibrated", 0.0, 1.0),
        ("offset_only", logit_offset, 1.0),
        ("calibrated", logit_offset, temperature),
    ):
        p = metrics.calibrated_probability(logits, offset, t)
        summary[label] = {
            "nll": metrics.log_loss(y_true, p),
            "brier": metrics.brier_score(y_true, p),
            "ece": metrics.expected_calibration_error(y_true, p),
        }
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


def evaluate_probabilities(
    y_true, probabilities, threshold: float, n_bootstrap: int = 2000, no_estimate=None
) -> dict:
    """Everything the README and the app report, as a JSON-ready dict: the areas under
    the curves of the model's probabilities, and the figures at `threshold` of the app's
    rule (images with no estimate, `no_estimate` (n,) bool, count as sent onwards)."""
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


def headline_figures(
    y_true, probabilities, threshold: float, n_bootstrap: int = 2000, no_estimate=None
) -> dict:
    """The model table's figures for one set: ROC AUC (bootstrap 95% CI), specificity at
    sensitivity 0.95 and 0.82 (points of this set's ROC curve), ECE — all of the model's
    probabilities — and the app's sensitivity and specificity at the bundle's own
    threshold (chosen elsewhere), counting images with no estimate (`no_estimate`, (n,)
    bool) as sent onwards."""
    y_true, probabilities = metrics.check_binary_inputs(y_true, probabilities)
    low, high = metrics.bootstrap_ci(y_true, probabilities, metrics.roc_auc, n_bootstrap)
    at = metrics.threshold_metrics(y_true, onward_scores(probabilities, no_estimate), threshold)
    return {
        "n": int(len(y_true)),
        "malignant": int(y_true.sum()),
        "roc_auc": {"value": metrics.roc_auc(y_true, probabilities), "low": low, "high": high},
        "specificity_at_sensitivity": {
            f"{target:.2f}": vars(metrics.specificity_at_sensitivity(y_true, probabilities, target))
            for target in (TARGET_SENSITIVITY, DERMATOLOGIST_SENSITIVITY)
        },
        "ece": metrics.expected_calibration_error(y_true, probabilities),
        "threshold": threshold,
        "sensitivity": vars(at["sensitivity"]),
        "specificity": vars(at["specificity"]),
    }


def per_diagnosis(labels, probabilities, diagnoses, threshold: float, no_estimate=None) -> list[dict]:
    """For each diagnosis: images, and the share the app sends onwards at `threshold`
    (Wilson CI; no-estimate images count as sent onwards), which for melanoma is the
    sensitivity and for a benign diagnosis the share referred."""
    labels = np.asarray(labels)
    probabilities = onward_scores(probabilities, no_estimate)
    diagnoses = np.asarray(diagnoses, dtype=str)
    rows = []
    for name in sorted(set(diagnoses.tolist()) - {""}):
        chosen = diagnoses == name
        above = int(np.sum(probabilities[chosen] >= threshold))
        rows.append(
            {
                "diagnosis": name,
                "melanoma": bool(labels[chosen].max() == 1),
                "images": int(chosen.sum()),
                "above_threshold": vars(metrics.Estimate.of(above, int(chosen.sum()))),
            }
        )
    return rows


def format_headline(name: str, figures: dict) -> str:
    """One line of the model table."""
    auc, spec = figures["roc_auc"], figures["specificity_at_sensitivity"]
    return (
        f"{name:<34} n={figures['n']:>5} mel={figures['malignant']:>4}  "
        f"AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})  "
        f"spec@0.95 {spec['0.95']['value']:.3f}  spec@0.82 {spec['0.82']['value']:.3f}  "
        f"ECE {figures['ece']:.3f}  at {figures['threshold']:.4f}: "
        f"sens {figures['sensitivity']['value']:.3f} spec {figures['specificity']['value']:.3f}"
    )


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
    lines += [
        "confusion (rows true, columns decision):",
        "               benign  malignant",
        f"  benign     {c['tn']:>8} {c['fp']:>10}",
        f"  malignant  {c['fn']:>8} {c['tp']:>10}",
        "class        precision  recall    f1  support",
    ]
    for row in report["per_class"]:
        lines.append(
            f"  {row['class']:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} "
            f"{row['f1']:>5.3f} {row['support']:>8}"
        )
    if "calibration" in report:
        cal = report["calibration"]
        lines.append(
            f"calibration (class-weight offset {cal.get('logit_offset', 0.0):.3f}, "
            f"temperature {cal['temperature']:.3f}):"
        )
        for label in ("uncalibrated", "offset_only", "calibrated"):
            m = cal[label]
            lines.append(f"  {label:<13} NLL {m['nll']:.4f}  Brier {m['brier']:.4f}  ECE {m['ece']:.4f}")
    return "\n".join(lines)
