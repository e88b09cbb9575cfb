"""Side-by-side figures for several bundles: AUC with CI on each bundle's report set
(which chose nothing; its calibration set for older bundles without one), the app's
sensitivity and specificity at each bundle's own threshold, size and measured latency."""

from __future__ import annotations

import math
import time

import numpy as np

from medal_core.bundles.bundle import Bundle, Predictions
from medal_core.evaluation import decision, metrics


def figure_set(bundle: Bundle) -> tuple[str, Predictions, dict]:
    """(name, stored predictions, the manifest's metrics) of the set a comparison uses:
    the report set when the bundle has one, else the set its threshold was chosen on."""
    if bundle.report_predictions is not None:
        return "report", bundle.report_predictions, bundle.manifest.get("report_metrics", {})
    return "calibration", bundle.predictions, bundle.manifest.get("validation_metrics", {})


def auc_with_ci(bundle: Bundle, n_bootstrap: int = 1000) -> tuple[float, float, float]:
    """(ROC AUC, low, high) on the comparison set (`figure_set`): the manifest's figures
    when it has them (computed on the same predictions), else a fresh bootstrap."""
    _, p, stored_metrics = figure_set(bundle)
    stored = stored_metrics.get("roc_auc", {})
    if all(isinstance(stored.get(k), (int, float)) for k in ("value", "low", "high")):
        return float(stored["value"]), float(stored["low"]), float(stored["high"])
    low, high = metrics.bootstrap_ci(p.labels, p.probabilities, metrics.roc_auc, n_bootstrap)
    return metrics.roc_auc(p.labels, p.probabilities), low, high


def parameter_count(bundle: Bundle, model=None) -> int | None:
    """From the manifest, or counted on a loaded Keras model."""
    if isinstance(bundle.manifest.get("parameters"), int):
        return bundle.manifest["parameters"]
    return int(model.count_params()) if model is not None else None


def summary_row(
    name: str, bundle: Bundle, latency_ms: float | None = None, parameters: int | None = None
) -> dict:
    """One row of the comparison table (numbers, not strings); sensitivity and
    specificity are the app's rule (no-estimate images count as sent onwards)."""
    which, p, _ = figure_set(bundle)
    auc, low, high = auc_with_ci(bundle)
    at = metrics.threshold_metrics(
        p.labels, decision.onward_scores(p.probabilities, p.no_estimate), bundle.threshold
    )
    return {
        "model": name,
        "architecture": bundle.manifest.get("architecture", ""),
        "input px": bundle.manifest.get("input_size"),
        "parameters": parameters if parameters is not None else parameter_count(bundle),
        "AUC": auc,
        "AUC low": low,
        "AUC high": high,
        "threshold": bundle.threshold,
        "sensitivity": at["sensitivity"].value,
        "sensitivity CI": _ci(at["sensitivity"]),
        "specificity": at["specificity"].value,
        "specificity CI": _ci(at["specificity"]),
        "figures on": f"{which} set, {len(p.labels)} images",
        "latency ms": latency_ms,
    }


def display_row(row: dict) -> dict:
    """A `summary_row` as short texts for a compact table."""

    def pct(value, ci):
        return "n/a" if value is None or math.isnan(value) else f"{value:.1%} ({ci})"

    return {
        "model": row["model"],
        "architecture": row["architecture"],
        "input px": row["input px"],
        "parameters": row["parameters"],
        "ROC AUC (95% CI)": f"{row['AUC']:.3f} ({row['AUC low']:.3f}–{row['AUC high']:.3f})",
        "threshold": f"{row['threshold']:.4f}",
        "figures on": row["figures on"],
        "sensitivity (95% CI)": pct(row["sensitivity"], row["sensitivity CI"]),
        "specificity (95% CI)": pct(row["specificity"], row["specificity CI"]),
        "latency ms": row["latency ms"],
    }


def _ci(estimate: metrics.Estimate) -> str:
    if math.isnan(estimate.low):
        return "n/a"
    return f"{estimate.low:.1%}–{estimate.high:.1%}"


def measure_latency(predictor, side: int = 512, repeats: int = 5, seed: int = 0) -> float:
    """Median wall time in milliseconds of `predictor.predict` on a synthetic
    side × side image (after one warm-up call): the full per-upload cost (resize, 8
    test-time views, quality checks, the shared screen)."""
    image = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    predictor.predict(image)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        predictor.predict(image)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def weakest_statement(rows: list[dict], recommended: str | None = None) -> str | None:
    """A plain sentence about the weakest bundle by AUC (None for fewer than two): named
    as the weaker model only when its AUC interval lies below the best one's, else said
    to be indistinguishable. It recommends `recommended` (the app's default, chosen on
    the selection set) when that is not the weakest, else the bundle with the highest AUC."""
    if len(rows) < 2:
        return None
    ranked = sorted(rows, key=lambda r: r["AUC"])
    weakest, best = ranked[0], ranked[-1]
    default = (
        f" The app's default, {recommended}, was chosen on its selection set."
        if recommended in {r["model"] for r in rows}
        else ""
    )
    if weakest["AUC high"] >= best["AUC low"]:
        return (
            f"No model is clearly weaker here: ROC AUC {weakest['AUC']:.3f} ({weakest['model']}) "
            f"to {best['AUC']:.3f} ({best['model']}), and the 95% intervals overlap.{default}"
        )
    others = {r["model"] for r in ranked[1:]}
    use = (
        f"{recommended} (the app's default, chosen on its selection set)"
        if recommended in others
        else best["model"]
    )
    return (
        f"**{weakest['model']} is the weaker model**: ROC AUC {weakest['AUC']:.3f} against "
        f"{best['model']}'s {best['AUC']:.3f} ({weakest['figures on']} / "
        f"{best['figures on']}; the 95% intervals do not overlap). Use {use} unless you are "
        "studying the baseline."
    )
