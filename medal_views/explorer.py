"""Everything the threshold explorer shows, as plain data computed from a bundle's stored
predictions (labels, calibrated probabilities and which images get no estimate).

The operating-point figures are the app's rule (`medal_core.evaluation.decision`): sensitivity is
the share of melanomas sent onwards (refer, borderline or no estimate), specificity the
share of benign lesions told "low suspicion"; `verdict_shares` splits them by verdict.

    point = at_threshold(labels, probabilities, 0.3)
    point.metrics["sensitivity"].value, point.confusion.tp, point.roc_point
    presets(labels, probabilities)          # {"Sensitivity ≥ 95%": 0.21, "Youden": ...}
    at_prevalence(point, 0.02).frequencies.melanomas_missed   # per 1,000 patients

All figures come from `medal_core.evaluation.metrics`; nothing here re-implements a metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medal_core.evaluation import decision, metrics
from medal_core.evaluation.figures import MEDAL_THRESHOLD, TARGET_SENSITIVITY

SENSITIVITY_PRESET = f"Sensitivity ≥ {TARGET_SENSITIVITY:.0%}"
YOUDEN_PRESET = "Youden"
MEDAL_PRESET = f"MedAL {MEDAL_THRESHOLD:g}"

# Display order and names of the operating-point metrics.
METRIC_NAMES = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
    "f1": "F1",
}


@dataclass(frozen=True)
class OperatingPoint:
    """The stored predictions seen at one threshold."""

    threshold: float
    confusion: metrics.Confusion
    metrics: dict[str, metrics.Estimate]  # sensitivity, specificity, ppv, npv, accuracy, f1
    n: int

    @property
    def referred(self) -> int:
        """Cases at or above the threshold (called malignant)."""
        return self.confusion.tp + self.confusion.fp

    @property
    def roc_point(self) -> tuple[float, float]:
        """(false-positive rate, true-positive rate) of this operating point."""
        return 1 - self.metrics["specificity"].value, self.metrics["sensitivity"].value

    @property
    def pr_point(self) -> tuple[float, float]:
        """(recall, precision); precision is NaN when nothing is referred."""
        return self.metrics["sensitivity"].value, self.metrics["ppv"].value


@dataclass(frozen=True)
class Curves:
    """ROC and precision–recall curves with their areas."""

    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray
    roc_auc: float
    precision: np.ndarray
    recall: np.ndarray
    pr_thresholds: np.ndarray
    average_precision: float


@dataclass(frozen=True)
class PrevalenceView:
    """Predictive values and natural frequencies at an assumed prevalence."""

    prevalence: float
    ppv: float
    npv: float
    frequencies: metrics.NaturalFrequencies


def at_threshold(labels, probabilities, threshold: float, no_estimate=None) -> OperatingPoint:
    """Confusion counts and metrics with 95% CIs (Wilson; F1 by bootstrap) of the app's
    rule at `threshold`: "positive" means sent onwards, so the images with no estimate
    (`no_estimate`, (n,) bool) count as positive whatever the threshold."""
    scores = decision.onward_scores(probabilities, no_estimate)
    confusion = metrics.confusion_at(labels, scores, threshold)
    return OperatingPoint(
        float(threshold), confusion, metrics.threshold_metrics(labels, scores, threshold), int(len(labels))
    )


def verdict_shares(
    labels, probabilities, threshold: float, band_ratio: float, no_estimate=None
) -> list[dict]:
    """One row per verdict (most urgent first): melanomas and benign lesions there, as
    counts and shares of their class."""
    counts = decision.rule_counts(labels, probabilities, threshold, band_ratio, no_estimate)
    n_mel, n_ben = counts["melanomas_onward"]["of"], counts["benign_reassured"]["of"]
    return [
        {
            "verdict": code,
            "melanoma": c["melanoma"],
            "benign": c["benign"],
            "melanoma_share": c["melanoma"] / n_mel if n_mel else float("nan"),
            "benign_share": c["benign"] / n_ben if n_ben else float("nan"),
        }
        for code, c in counts["verdicts"].items()
    ]


def curves(labels, probabilities) -> Curves:
    """The ROC and PR curves of the stored predictions."""
    fpr, tpr, roc_thresholds = metrics.roc_curve(labels, probabilities)
    precision, recall, pr_thresholds = metrics.precision_recall_curve(labels, probabilities)
    return Curves(
        fpr,
        tpr,
        roc_thresholds,
        metrics.roc_auc(labels, probabilities),
        precision,
        recall,
        pr_thresholds,
        metrics.average_precision(labels, probabilities),
    )


def presets(labels, probabilities, target_sensitivity: float = TARGET_SENSITIVITY) -> dict[str, float]:
    """Named thresholds: the largest one reaching `target_sensitivity`, Youden's J
    optimum, and the original MedAL app's 0.37."""
    return {
        SENSITIVITY_PRESET: metrics.threshold_for_sensitivity(labels, probabilities, target_sensitivity),
        YOUDEN_PRESET: metrics.youden_threshold(labels, probabilities),
        MEDAL_PRESET: MEDAL_THRESHOLD,
    }


def dataset_prevalence(labels) -> float:
    """Share of melanomas among the stored predictions."""
    return float(np.mean(np.asarray(labels) == 1))


def at_prevalence(point: OperatingPoint, prevalence: float, patients: int | None = None) -> PrevalenceView:
    """PPV/NPV (Bayes' rule) and what happens to `patients` people at `prevalence`, for
    this operating point's sensitivity and specificity."""
    sensitivity = point.metrics["sensitivity"].value
    specificity = point.metrics["specificity"].value
    ppv, npv = metrics.predictive_values(sensitivity, specificity, prevalence)
    return PrevalenceView(
        float(prevalence),
        ppv,
        npv,
        metrics.natural_frequencies(sensitivity, specificity, prevalence, patients),
    )


def metric_rows(point: OperatingPoint) -> list[dict]:
    """One row per metric (METRIC_NAMES order): key, name, value, low, high, the counts
    behind it ("successes/total"; empty for F1) and display texts."""
    rows = []
    for key, label in METRIC_NAMES.items():
        estimate = point.metrics[key]
        counts = "" if key == "f1" else f"{estimate.successes}/{estimate.total}"
        defined = not np.isnan(estimate.value)
        rows.append(
            {
                "key": key,
                "metric": label,
                "value": estimate.value,
                "low": estimate.low,
                "high": estimate.high,
                "counts": counts,
                "value_text": f"{estimate.value:.1%}" if defined else "n/a",
                "ci_text": (
                    f"95% CI {estimate.low:.1%}–{estimate.high:.1%}"
                    if defined and not np.isnan(estimate.low)
                    else ""
                ),
            }
        )
    return rows


def format_estimate(estimate: metrics.Estimate, digits: int = 1) -> str:
    """'91.2% (95% CI 85.0–95.1%)', or 'n/a' when undefined (no cases to divide by)."""
    if estimate.value is None or np.isnan(estimate.value):
        return "n/a"
    text = f"{estimate.value:.{digits}%}"
    if not (np.isnan(estimate.low) or np.isnan(estimate.high)):
        text += f" (95% CI {estimate.low:.{digits}%}–{estimate.high:.{digits}%})"
    return text


def _honest_point(bundle, threshold: float):
    """(stored predictions, whether they are the report set, the app's rule at
    `threshold` on them): the report set, or the calibration set for older bundles."""
    has_report = bundle.report_predictions is not None
    predictions = bundle.report_predictions if has_report else bundle.predictions
    return (
        predictions,
        has_report,
        at_threshold(predictions.labels, predictions.probabilities, threshold, predictions.no_estimate),
    )


def threshold_note(bundle, threshold: float) -> str:
    """One sentence for the Triage page: what the threshold in use means under the app's
    rule on the bundle's report set (calibration set for older bundles), whether it is
    the validated default, and a warning outside the range validation supports."""
    predictions, has_report, point = _honest_point(bundle, threshold)
    which = (
        "report set, which chose nothing"
        if has_report
        else "calibration set, on which the default was chosen"
    )
    sensitivity, specificity = point.metrics["sensitivity"], point.metrics["specificity"]
    status = (
        "the validated default"
        if threshold == bundle.threshold
        else f"changed from the validated default {bundle.threshold:.4f}"
    )
    text = (
        f"Threshold {threshold:.4f} ({status}): on the {which} ({point.n} images), "
        f"the app sends {sensitivity.value:.1%} of melanomas onwards "
        f"({sensitivity.successes}/{sensitivity.total}) and reassures "
        f"{specificity.value:.1%} of benign lesions ({specificity.successes}/"
        f"{specificity.total})."
    )
    scores = predictions.probabilities[predictions.estimated]
    low, high = np.quantile(scores, [0.01, 0.99]) if len(scores) else (0.0, 1.0)
    if not low <= threshold <= high:
        text += (
            " This threshold lies outside the range of the validation estimates "
            f"({low:.4f}–{high:.4f}): its figures rest on very few cases."
        )
    return text


def report_threshold_figures(bundle, threshold: float) -> str:
    """For the case report: the threshold's sensitivity and NPV under the app's rule on
    the bundle's report set (calibration set for older bundles), with their counts."""
    _, has_report, point = _honest_point(bundle, threshold)
    which = "report set (images that chose nothing)" if has_report else "calibration set"
    sensitivity, npv = point.metrics["sensitivity"], point.metrics["npv"]
    return (
        f"on the model's {which}, {point.n} images: sensitivity {format_estimate(sensitivity)} "
        f"[{sensitivity.successes}/{sensitivity.total}], NPV {format_estimate(npv)} "
        f"[{npv.successes}/{npv.total}]"
    )


def guarantee_note(manifest: dict, threshold: float) -> str | None:
    """At the bundle's own threshold: the exact 95% lower bound on its sensitivity, and
    the threshold that would guarantee the target (or why none can). None at any other
    threshold, or for a bundle without a decision policy."""
    entry = manifest.get("decision", {})
    if "sensitivity_lower_bound" not in entry or threshold != manifest["threshold"]["value"]:
        return None
    text = (
        f"With 95% confidence, the default threshold sends at least "
        f"{entry['sensitivity_lower_bound']:.1%} of melanomas onwards on new cases like the "
        "images it was chosen on (exact binomial bound)."
    )
    guaranteed = entry.get("guaranteed", {})
    if guaranteed.get("threshold") is not None:
        return text + (
            f" A threshold of {guaranteed['threshold']:.4f} would guarantee "
            f"{guaranteed['target']:.0%} with 95% confidence."
        )
    return text + (
        " The calibration images have too few melanomas for any threshold to "
        f"guarantee {entry.get('target_sensitivity', 0.95):.0%} with 95% confidence."
    )
