"""The model card shown on the About page, built from a bundle's manifest as Markdown
sections: [(heading, markdown), ...]. Fixed text (intended use, data, limits, privacy)
lives here so that it is reviewed with the code, not scattered through the UI."""

from __future__ import annotations

import math

INTENDED_USE = """\
**What it is for.** A triage aid: given a *dermoscopic* image of a single pigmented skin
lesion, it estimates the probability that the lesion is a melanoma and suggests whether
it should be seen by a dermatologist.

**Intended users.** Clinicians who take dermoscopy images (general practitioners,
dermatology nurses, triage teams) deciding how urgently to refer, and researchers and
students exploring what such a model can and cannot do.

**Not for.** Diagnosis; deciding *against* seeing a doctor when a lesion worries you;
ordinary phone photos, non-pigmented lesions, mucosa, nails or children without clinical
validation; any use without a clinician in the loop."""

DATA = """\
Dermoscopic images, melanoma against everything else, used at 256 px (squashed to
square): **ISIC 2017** (International Skin Imaging Collaboration, challenge "Skin Lesion
Analysis Towards Melanoma Detection"; CC-0 or CC-BY-NC per image), **HAM10000**
(Tschandl et al. 2018, CC BY-NC 4.0; upscaled here from 200x150 px, split by lesion), the
**ISIC 2018 Task 3 test set** (CC BY-NC 4.0) and **PH2** (Mendonça et al. 2013, research
use). Each image has one role: training, selection (early stopping), calibration
(temperature, threshold, out-of-distribution limits) or report (chose nothing). ISIC 2017
images that show a lesion of its held-out test split are used nowhere. The dermoscopic
check also saw half of the patients of PAD-UFES-20's smartphone photos (CC BY 4.0).

Citation: N. C. F. Codella, D. Gutman, M. E. Celebi, et al., *Skin lesion analysis toward
melanoma detection: a challenge at the 2017 International Symposium on Biomedical Imaging
(ISBI), hosted by the International Skin Imaging Collaboration (ISIC)*, ISBI 2018;
arXiv:1710.05006 (2017)."""

LIMITS = """\
- **Dermoscopy only.** The model has only seen dermatoscope images; photos taken without
  a dermatoscope (e.g. phone photos) are outside what it was validated on. A check
  refuses most of them (no estimate), but not all.
- **256-px source images.** Training images were 256 × 256 px; fine detail beyond that is
  not used, and the validation figures say nothing about higher-resolution images.
- **Skin types.** Darker skin types (Fitzpatrick V–VI) are under-represented in ISIC; the
  model's performance on them is unknown and may be worse.
- **Not validated on phone photos** or in a prospective clinical study; the figures come
  from a report set that played no part in training or choosing (part of ISIC 2017, the
  ISIC 2018 Task 3 test set and PH2), with the confidence intervals shown.
- **Prevalence.** PPV and NPV depend on how common melanoma is where the tool is used;
  see the threshold explorer for other prevalences.
- **Out-of-distribution check.** Images far from the training lesions are flagged and get
  no estimate, but this check is not perfect in either direction."""

PRIVACY = """\
- Uploaded images are processed **in memory** only: they are never written to disk,
  stored in a database or logged.
- No telemetry: Streamlit's usage statistics are switched off
  (`gatherUsageStats = false`).
- No external requests: the app loads nothing from other servers, and the downloadable
  case report is a single self-contained file."""


def _pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.1%}"


def _estimate(entry: dict, counts: bool = True) -> str:
    text = _pct(entry.get("value"))
    low, high = entry.get("low"), entry.get("high")
    if text != "n/a" and low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" (95% CI {low:.1%}–{high:.1%})"
    if counts and "successes" in entry and "total" in entry and entry.get("total"):
        text += f" — {entry['successes']}/{entry['total']}"
    return text


def model_section(manifest: dict) -> str:
    """Architecture, size, weights, calibration and provenance."""
    weights = manifest.get("backbone_weights", {})
    parameters = manifest.get("parameters")
    lines = [
        f"- **Architecture:** {manifest.get('architecture', '?')}, input "
        f"{manifest.get('input_size', '?')} × {manifest.get('input_size', '?')} px RGB",
        f"- **Parameters:** {parameters:,}" if isinstance(parameters, int) else "- **Parameters:** n/a",
        f"- **Starting weights:** {weights.get('note') or weights.get('source', 'n/a')}",
        *_ensemble_lines(manifest.get("ensemble")),
        f"- **Calibration:** class-weighting offset {manifest.get('logit_offset', 0.0):.3f} removed "
        f"from the logit, then temperature scaling, T = {manifest.get('temperature', float('nan')):.3f}",
        f"- **Test-time augmentation:** {manifest.get('test_time_views', 1)} view(s) "
        "(rotations and mirror images) averaged",
        f"- **Created:** {manifest.get('created', 'n/a')}",
        f"- **Model file sha256:** `{manifest.get('model_sha256', '')[:16]}…`",
    ]
    return "\n".join(lines)


def _ensemble_lines(ensemble: dict | None) -> list[str]:
    """For an ensemble bundle: its members and the selection AUCs that chose it."""
    if not isinstance(ensemble, dict) or not ensemble.get("members"):
        return []
    names = [m.get("name", "?") for m in ensemble["members"]]
    aucs = ensemble.get("selection_roc_auc", {})  # by member key (its architecture), and "ensemble"
    keys = [*(m.get("key", m.get("architecture", "?")) for m in ensemble["members"]), "ensemble"]
    chosen = ", ".join(f"{key} {aucs[key]:.3f}" for key in keys if key in aucs)
    return [
        f"- **Ensemble:** the mean of the logits of {' and '.join(names)}, in one graph "
        f"(the heatmap reads both members' last layers)"
        + (f"; selection-set ROC AUC {chosen}" if chosen else "")
    ]


def data_section(manifest: dict) -> str:
    """The fixed data description plus the size of each of this bundle's data roles."""
    text = DATA
    data = manifest.get("data", {})
    data = data.get("roles", data)
    for split in ("train", "selection", "calibration", "report", "validation"):
        summary = data.get(split)
        if isinstance(summary, dict):
            text += (
                f"\n\n**{split.capitalize()}:** {summary.get('images', '?')} images, "
                f"{summary.get('malignant', '?')} melanomas "
                f"({_pct(summary.get('prevalence'))})."
            )
    return text


def metrics_section(manifest: dict) -> str:
    """Figures with 95% CIs at the bundle's operating point, on its report set (which
    chose nothing) when it has one, else on the set the threshold was chosen on."""
    has_report = "report_metrics" in manifest
    report = manifest.get("report_metrics" if has_report else "validation_metrics", {})
    set_name = "report" if has_report else "validation"
    threshold = manifest.get("threshold", {})
    auc = report.get("roc_auc", {})
    lines = []
    if auc:
        ci = ""
        if auc.get("low") is not None and auc.get("high") is not None:
            ci = f" (95% CI {auc['low']:.3f}–{auc['high']:.3f}, bootstrap)"
        lines.append(f"- **ROC AUC:** {auc.get('value', float('nan')):.3f}{ci}")
    if "pr_auc" in report:
        lines.append(f"- **PR AUC (average precision):** {report['pr_auc']:.3f}")
    if "value" in threshold:
        lines.append(
            f"- **Decision threshold:** {threshold['value']:.4f} — "
            f"{threshold.get('method', 'chosen on validation')}"
        )
    names = {
        "sensitivity": "Sensitivity",
        "specificity": "Specificity",
        "ppv": "PPV",
        "npv": "NPV",
        "accuracy": "Accuracy",
        "f1": "F1",
    }
    for key, label in names.items():
        entry = report.get("at_threshold", {}).get(key)
        if entry:
            lines.append(f"- **{label}:** {_estimate(entry, counts=key != 'f1')}")
    calibration = report.get("calibration", {})
    if calibration:
        before = calibration.get("uncalibrated", {}).get("ece")
        after = calibration.get("calibrated", {}).get("ece")
        if before is not None and after is not None:
            lines.append(f"- **Calibration error (ECE):** {before:.3f} before, {after:.3f} after calibration")
    rule = manifest.get("decision", {}).get("rule", {}).get("report")
    if has_report and rule:
        onward, reassured = rule["melanomas_onward"], rule["benign_reassured"]
        no_estimate = sum(rule["verdicts"]["no_estimate"].values())
        lines.append(
            f"- **The app's rule:** {onward['count']} of {onward['of']} melanomas sent "
            f"onwards ({onward['share']:.1%}); {reassured['count']} of "
            f"{reassured['of']} benign lesions reassured ({reassured['share']:.1%}); "
            f"{no_estimate} images got no estimate"
        )
    screen = manifest.get("screening", {}).get("figures")
    if screen:
        clinical, kept = screen["clinical_held_out"], screen["report_given_an_estimate"]
        pictures = screen["non_lesion_pictures"]
        lines.append(
            f"- **Shared screen (every model):** refuses {clinical['refused']:.1%} of "
            f"{clinical['images']} held-out smartphone photos (PAD-UFES-20, patients it was "
            f"not fitted on) and {pictures['no_estimate']} of {pictures['images']} non-lesion "
            f"pictures; gives an estimate for {kept['all']:.1%} of the report set's "
            "dermoscopic images"
        )
    if "n" in report:
        lines.append(
            f"\nOn {report['n']} {set_name} images ({report.get('malignant', '?')} "
            "melanomas)"
            + (
                ", which played no part in training, choosing the model or setting the threshold."
                if has_report
                else "."
            )
        )
    return "\n".join(lines) or "No figures in the manifest."


def model_card(manifest: dict) -> list[tuple[str, str]]:
    """All sections of the card, in display order."""
    return [
        ("Intended use and users", INTENDED_USE),
        ("Model", model_section(manifest)),
        ("Data", data_section(manifest)),
        ("Validation metrics", metrics_section(manifest)),
        ("Known limits", LIMITS),
        ("Privacy", PRIVACY),
    ]
