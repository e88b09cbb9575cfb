"""Unit tests of the app's core modules: catalog, explorer, report, batch, results,
images, charts, compare and model card (no Streamlit, no browser)."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import shutil

import numpy as np
import pytest
from app_helpers import make_bundle, png, synthetic_lesion, synthetic_predictions
from PIL import Image

import medal_core
from medal_core.evaluation import metrics
from medal_core.evaluation.figures import MEDAL_THRESHOLD
from medal_core.screening.quality import QualityReport, QualityWarning, assess_quality
from medal_core.serving.prediction import DISCLAIMER, Prediction
from medal_views import batch, catalog, charts, compare, explorer, images, model_card, report, results


def prediction(probability=0.6, spread=(0.55, 0.65), threshold=0.5, ood_score=0.2, warnings=()) -> Prediction:
    views = np.linspace(spread[0], spread[1], 8)
    quality = QualityReport(
        100.0, 120.0, 0.0, 0.0, tuple(QualityWarning(code, f"message {code}") for code in warnings)
    )
    return Prediction(
        probability, math.log(probability / (1 - probability)), threshold, views, ood_score, quality
    )


@pytest.fixture(scope="module")
def one_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("core_models")
    make_bundle(root / "alpha", seed=0, with_screen=False)
    return root


# ---------------------------------------------------------------- catalog


def test_scan_separates_good_and_broken_bundles(tmp_path, one_bundle):
    shutil.copytree(one_bundle / "alpha", tmp_path / "alpha")
    shutil.copytree(one_bundle / "alpha", tmp_path / "tampered")
    with open(tmp_path / "tampered" / "model.keras", "ab") as handle:
        handle.write(b"x")
    shutil.copytree(one_bundle / "alpha", tmp_path / "no_predictions")
    (tmp_path / "no_predictions" / "val_predictions.csv").unlink()
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "manifest.json").write_text("{not json")
    (tmp_path / "training" / "checkpoints").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")

    found = catalog.scan(tmp_path)
    assert found.names == ["alpha"]
    assert found.bundles["alpha"].model is None
    broken = dict(found.broken)
    assert set(broken) == {"bad_json", "no_predictions", "tampered", "training"}
    assert "does not match its manifest" in broken["tampered"]
    assert "val_predictions.csv" in broken["no_predictions"]
    assert "not valid JSON" in broken["bad_json"]
    assert "training is still running" in broken["training"]
    assert found.default_name() == "alpha"


def test_default_bundle_prefers_the_ensemble_then_the_single_models_by_selection_auc(tmp_path, one_bundle):
    for name in ("alpha", "mobilenet", "zeta"):
        shutil.copytree(one_bundle / "alpha", tmp_path / name)
    assert catalog.scan(tmp_path).default_name() == "mobilenet"
    shutil.copytree(one_bundle / "alpha", tmp_path / "mobilenetv2")
    assert catalog.scan(tmp_path).default_name() == "mobilenetv2"
    shutil.copytree(one_bundle / "alpha", tmp_path / "mobilenetv2_cc")
    assert catalog.scan(tmp_path).default_name() == "mobilenetv2_cc"
    shutil.copytree(one_bundle / "alpha", tmp_path / "mobilenetv2_cc_ensemble")
    assert catalog.scan(tmp_path).default_name() == "mobilenetv2_cc_ensemble"


@pytest.mark.parametrize("exists", [True, False])
def test_empty_catalog_says_how_to_fix_it(tmp_path, exists):
    folder = tmp_path if exists else tmp_path / "missing"
    found = catalog.scan(folder)
    assert found.empty and found.default_name() is None and found.broken == []
    assert "python -m medal_core train" in found.help_text()
    assert ("does not exist" in found.help_text()) is not exists


def test_fingerprint_follows_bundle_changes(tmp_path, one_bundle):
    shutil.copytree(one_bundle / "alpha", tmp_path / "alpha")
    before = catalog.fingerprint(tmp_path)
    assert catalog.fingerprint(tmp_path) == before
    manifest = tmp_path / "alpha" / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    assert catalog.fingerprint(tmp_path) != before


def test_signature_follows_the_manifest(tmp_path, one_bundle):
    shutil.copytree(one_bundle / "alpha", tmp_path / "alpha")
    first = catalog.signature(catalog.check_bundle(tmp_path / "alpha"))
    assert catalog.signature(catalog.check_bundle(tmp_path / "alpha")) == first
    manifest_path = tmp_path / "alpha" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["temperature"] = 2.0
    manifest_path.write_text(json.dumps(manifest))
    assert catalog.signature(catalog.check_bundle(tmp_path / "alpha")) != first


def test_models_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv(catalog.MODELS_DIR_ENV, raising=False)
    assert catalog.models_dir_from_env("models") == catalog.Path("models")
    monkeypatch.setenv(catalog.MODELS_DIR_ENV, str(tmp_path))
    assert catalog.models_dir_from_env("models") == tmp_path


def test_read_history_numbers_epochs_across_phases(one_bundle, tmp_path):
    history = catalog.read_history(one_bundle / "alpha")
    assert history["epoch"] == [0, 1, 0, 1]
    assert history["step"] == [1, 2, 3, 4]
    assert history["val_auc"][-1] == pytest.approx(0.80)
    assert catalog.read_history(tmp_path) == {}


# ---------------------------------------------------------------- explorer


@pytest.fixture(scope="module")
def stored():
    p = synthetic_predictions()
    return p.labels, p.probabilities


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.77, 1.0])
def test_operating_point_agrees_with_metrics(stored, threshold):
    labels, probs = stored
    point = explorer.at_threshold(labels, probs, threshold)
    assert point.confusion == metrics.confusion_at(labels, probs, threshold)
    expected = metrics.threshold_metrics(labels, probs, threshold)
    for name in ("sensitivity", "specificity", "ppv", "npv", "f1"):
        got, want = point.metrics[name], expected[name]
        assert (got.value, got.low, got.high) == pytest.approx((want.value, want.low, want.high), nan_ok=True)
    assert point.referred == int((probs >= threshold).sum())
    assert point.roc_point == pytest.approx(
        (1 - expected["specificity"].value, expected["sensitivity"].value)
    )


def test_presets(stored):
    labels, probs = stored
    found = explorer.presets(labels, probs)
    assert list(found) == [explorer.SENSITIVITY_PRESET, explorer.YOUDEN_PRESET, explorer.MEDAL_PRESET]
    sensitivity = explorer.at_threshold(labels, probs, found[explorer.SENSITIVITY_PRESET])
    assert sensitivity.metrics["sensitivity"].value >= 0.95
    assert found[explorer.YOUDEN_PRESET] == metrics.youden_threshold(labels, probs)
    assert found[explorer.MEDAL_PRESET] == MEDAL_THRESHOLD == 0.37


def test_curves_agree_with_metrics(stored):
    labels, probs = stored
    c = explorer.curves(labels, probs)
    fpr, tpr, _ = metrics.roc_curve(labels, probs)
    np.testing.assert_allclose(c.fpr, fpr)
    np.testing.assert_allclose(c.tpr, tpr)
    assert c.roc_auc == metrics.roc_auc(labels, probs)
    assert c.average_precision == metrics.average_precision(labels, probs)


def test_prevalence_view_uses_bayes(stored):
    labels, probs = stored
    point = explorer.at_threshold(labels, probs, 0.4)
    sens, spec = point.metrics["sensitivity"].value, point.metrics["specificity"].value
    view = explorer.at_prevalence(point, 0.02, patients=1000)
    assert (view.ppv, view.npv) == pytest.approx(metrics.predictive_values(sens, spec, 0.02))
    f = view.frequencies
    assert f.patients == 1000 and f.with_melanoma == pytest.approx(20)
    assert f.melanomas_caught + f.melanomas_missed == pytest.approx(20)
    assert f.referred == pytest.approx(f.melanomas_caught + f.benign_referred)
    # at the dataset's own prevalence the PPV is the observed one
    own = explorer.at_prevalence(point, explorer.dataset_prevalence(labels))
    assert own.ppv == pytest.approx(point.metrics["ppv"].value)


def test_metric_rows_and_formatting(stored):
    labels, probs = stored
    rows = explorer.metric_rows(explorer.at_threshold(labels, probs, 0.5))
    assert [r["metric"] for r in rows] == ["Sensitivity", "Specificity", "PPV", "NPV", "F1"]
    assert re.fullmatch(r"\d+/\d+", rows[0]["counts"]) and rows[-1]["counts"] == ""
    nothing_referred = explorer.metric_rows(explorer.at_threshold(labels, probs, 1.1))
    assert nothing_referred[2]["value_text"] == "n/a"  # PPV with no referrals
    assert explorer.format_estimate(metrics.Estimate.of(9, 10)).startswith("90.0% (95% CI ")
    assert explorer.format_estimate(metrics.Estimate.of(0, 0)) == "n/a"


# ---------------------------------------------------------------- results


def test_results_wording():
    p = prediction(0.6, (0.55, 0.65), threshold=0.3)
    assert results.decision_label(p) == "Refer to a dermatologist"
    assert results.decision_label(results.with_threshold(p, 0.7)) == "Low suspicion"
    assert results.decision_label(results.with_threshold(p, 0.6)) == "Borderline — see a dermatologist"
    assert results.decision_label(prediction(ood_score=1.8)) == "No estimate — have a clinician look"
    assert "Not recognised as a dermoscopic lesion image" in results.verdict_text(prediction(ood_score=1.8))
    with pytest.raises(ValueError):
        results.with_threshold(p, 1.5)
    codes = [
        c
        for c, _ in results.prediction_warnings(
            prediction(ood_score=1.8, warnings=("blurred", "low_resolution"))
        )
    ]
    assert codes == ["not_lesion", "blurred", "low_resolution"]


# ---------------------------------------------------------------- images


def test_images_helpers():
    rgb = synthetic_lesion(0, 300)
    small = images.downscale(rgb, 100)
    assert small.shape == (100, 100, 3) and small.dtype == np.uint8
    assert images.downscale(rgb, 1000) is rgb
    wide = np.zeros((50, 200, 3), np.uint8)
    assert images.downscale(wide, 100).shape == (25, 100, 3)
    decoded = np.asarray(Image.open(io.BytesIO(images.png_bytes(rgb))))
    np.testing.assert_array_equal(decoded, rgb)
    uri = images.png_data_uri(rgb, 64)
    assert uri.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size == (64, 64)


# ---------------------------------------------------------------- report


def embedded_images(html_text: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(data)))
        for data in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html_text)
    ]


def test_report_holds_the_numbers_images_and_disclaimer():
    rgb = synthetic_lesion(1, 700)
    p = prediction(0.634, (0.52, 0.71), threshold=0.4, warnings=("blurred",))
    text = report.case_report_html(
        original_rgb=rgb,
        overlay_rgb=rgb[::-1].copy(),
        prediction=p,
        model_name="mobilenet",
        threshold=0.4,
        file_name="mole.jpg",
        notes=("rotated per EXIF orientation",),
        threshold_figures="sensitivity 95.0% [19/20], NPV 99.0%",
    )
    assert "63.4%" in text and "52.0% – 71.0%" in text and "0.4000" in text
    assert "sensitivity 95.0% [19/20], NPV 99.0%" in text
    assert f"MedAL Triage {medal_core.__version__}" in text
    assert "dermoscopic images" in text and "not a diagnosis" in text  # intended use
    assert "(local time)" in text and "@media print" in text
    assert "Refer to a dermatologist" in text and "mobilenet" in text and "mole.jpg" in text
    assert "message blurred" in text and "rotated per EXIF orientation" in text
    assert DISCLAIMER in text
    assert re.search(r"Created \d{4}-\d{2}-\d{2}", text)
    pictures = embedded_images(text)
    assert len(pictures) == 2 and all(max(im.size) <= report.REPORT_IMAGE_SIDE for im in pictures)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "Content-Security-Policy" in text


def test_report_escapes_every_text():
    hostile = "<script>alert('x')</script>&\"'"
    p = prediction(0.2, (0.1, 0.3), threshold=0.5, warnings=("blurred",))
    text = report.case_report_html(
        original_rgb=synthetic_lesion(2, 128),
        prediction=p,
        model_name=hostile,
        threshold=0.5,
        file_name=hostile,
        notes=(hostile,),
    )
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;&#x27;" in text
    assert len(embedded_images(text)) == 1  # no overlay given


def test_report_for_a_non_lesion_gives_no_probability_and_no_heatmap():
    p = prediction(0.9, (0.85, 0.95), ood_score=10.0)
    rgb = synthetic_lesion(3, 128)
    text = report.case_report_html(
        original_rgb=rgb,
        overlay_rgb=rgb,
        prediction=p,
        model_name="m",
        threshold=0.5,
        threshold_figures="sens 95%",
    )
    assert "90.0%" not in text and "not given" in text
    assert "Not recognised as a dermoscopic lesion image" in text and "clinician" in text
    assert len(embedded_images(text)) == 1 and "sens 95%" not in text


def test_borderline_report_says_so():
    p = prediction(0.5, (0.4, 0.6), threshold=0.5)
    text = report.case_report_html(
        original_rgb=synthetic_lesion(3, 128), prediction=p, model_name="m", threshold=0.5
    )
    assert "Borderline — see a dermatologist" in text and "threshold itself is uncertain" in text


def test_report_file_name_is_safe():
    name = report.report_file_name("../../etc/pass wd.<b>.jpg")
    assert re.fullmatch(r"medal_report_[A-Za-z0-9_-]+_\d{4}-\d{2}-\d{2}\.html", name)


# ---------------------------------------------------------------- batch


class StubPredictor:
    """Probability = mean brightness of the image / 255; counts calls."""

    def __init__(self):
        self.calls = 0

    def predict_batch(self, rgbs, threshold=None):
        self.calls += 1
        out = []
        for rgb in rgbs:
            prob = float(np.clip(rgb.mean() / 255, 0.01, 0.99))
            views = np.full(8, prob)
            out.append(
                Prediction(
                    prob, 0.0, 0.5 if threshold is None else threshold, views, 0.2, assess_quality(rgb)
                )
            )
        return out

    def predict(self, rgb, threshold=None):
        return self.predict_batch([rgb], threshold)[0]


def flat_png(value: int, size: int = 96) -> bytes:
    return png(np.full((size, size, 3), value, np.uint8))


def test_batch_rows_sorted_with_refusals_last():
    stub = StubPredictor()
    progress = []
    found = batch.predict_files(
        stub,
        [
            ("dark.png", flat_png(60)),
            ("junk.png", b"junk"),
            ("bright.png", flat_png(200)),
            ("mid.png", flat_png(128)),
        ],
        on_progress=lambda done, total: progress.append((done, total)),
        chunk_size=2,
    )
    assert [r.file for r in found] == ["dark.png", "junk.png", "bright.png", "mid.png"]
    assert progress[-1] == (4, 4) and stub.calls == 2
    rows = batch.batch_rows(found, threshold=0.4)
    assert [r.file for r in rows] == ["bright.png", "mid.png", "dark.png", "junk.png"]
    assert [r.decision for r in rows[:3]] == [
        "Refer to a dermatologist",
        "Refer to a dermatologist",
        "Low suspicion",
    ]
    assert rows[-1].status == "refused" and "not an image" in rows[-1].error
    assert rows[0].thumbnail.startswith("data:image/png;base64,")
    # judging at another threshold needs no model call
    again = batch.batch_rows(found, threshold=0.6)
    assert [r.decision for r in again[:2]] == ["Refer to a dermatologist", "Low suspicion"]
    assert stub.calls == 2


def test_no_estimate_rows_have_no_probability_sort_first_and_are_counted():
    p = prediction(0.9, (0.9, 0.9), ood_score=10.0)
    rows = batch.batch_rows(
        [
            batch.FileResult("mole.png", prediction(0.2, (0.2, 0.2)), None),
            batch.FileResult("cat.png", p, "data:image/png;base64,AA"),
        ],
        0.5,
    )
    assert [r.file for r in rows] == ["cat.png", "mole.png"]
    assert rows[0].probability is None and rows[0].verdict_code == "no_estimate"
    assert rows[0].decision == "No estimate — have a clinician look"
    assert rows[0].warnings == ("not_lesion",)
    assert batch.summary_counts(rows) == {"triaged": 2, "onward": 0, "no_estimate": 1, "low": 1, "refused": 0}


def test_batch_csv_columns_order_and_no_image_data():
    stub = StubPredictor()
    found = batch.predict_files(
        stub, [("b.png", flat_png(90)), ("=cmd|' /C calc'!A0.png", flat_png(200)), ("bad.png", b"")]
    )
    rows = batch.batch_rows(found, threshold=0.5)
    text = batch.to_csv(rows, threshold=0.5, model_name="mobilenet")
    parsed = list(csv.reader(io.StringIO(text)))
    assert (
        tuple(parsed[0])
        == batch.CSV_COLUMNS
        == (
            "file",
            "status",
            "probability",
            "decision",
            "verdict_code",
            "spread_low",
            "spread_high",
            "warnings",
            "threshold",
            "model",
            "error",
        )
    )
    assert len(parsed) == 4
    assert [row[0] for row in parsed[1:]] == ["'=cmd|' /C calc'!A0.png", "b.png", "bad.png"]
    assert float(parsed[1][2]) == pytest.approx(200 / 255, abs=1e-4)
    assert parsed[3][1] == "refused" and parsed[3][2] == "" and "empty" in parsed[3][10]
    assert all(row[8] == "0.5000" and row[9] == "mobilenet" for row in parsed[1:])
    assert "base64" not in text and "data:image" not in text


def test_table_records_for_display():
    rows = batch.batch_rows(
        [
            batch.FileResult(
                "a.png", prediction(0.25, (0.2, 0.3), warnings=("blurred",)), "data:image/png;base64,AA"
            )
        ],
        0.5,
    )
    record = batch.table_records(rows)[0]
    assert record["probability"] == pytest.approx(25.0) and record["warnings"] == "blurred"
    assert record["thumbnail"].startswith("data:image/png")


# ---------------------------------------------------------------- charts


def test_charts_mark_the_operating_point(stored):
    labels, probs = stored
    c = explorer.curves(labels, probs)
    point = explorer.at_threshold(labels, probs, 0.42)
    roc = charts.roc_figure({"m": c}, {"m": point})
    marker = [t for t in roc.data if t.mode == "markers"][0]
    assert (marker.x[0], marker.y[0]) == pytest.approx(point.roc_point)
    pr = charts.pr_figure(c, point, 0.2)
    marker = [t for t in pr.data if t.mode == "markers"][0]
    assert (marker.x[0], marker.y[0]) == pytest.approx(point.pr_point)
    assert charts.confusion_figure(point.confusion).data[0].z.tolist() == point.confusion.as_matrix().tolist()


def test_icon_array_shows_every_patient():
    f = metrics.natural_frequencies(0.9, 0.7, 0.03)
    fig = charts.natural_frequency_figure(f)
    assert sum(len(t.x) for t in fig.data) == 1000
    caught = fig.data[0]
    assert len(caught.x) == round(f.melanomas_caught)


def test_training_curves_figure(one_bundle):
    fig = charts.training_curves_figure({"alpha": catalog.read_history(one_bundle / "alpha")})
    assert {t.name for t in fig.data} == {"alpha validation", "alpha training"}
    assert len(fig.data) == 4


# ---------------------------------------------------------------- compare and model card


def test_compare_summary_row(one_bundle):
    loaded = catalog.scan(one_bundle).bundles["alpha"]
    row = compare.summary_row("alpha", loaded, latency_ms=12.5)
    p = loaded.predictions
    assert row["AUC"] == pytest.approx(metrics.roc_auc(p.labels, p.probabilities))
    assert row["AUC low"] < row["AUC"] < row["AUC high"]
    at = metrics.threshold_metrics(p.labels, p.probabilities, loaded.threshold)
    assert row["sensitivity"] == at["sensitivity"].value
    assert row["specificity"] == at["specificity"].value
    assert row["parameters"] == loaded.manifest["parameters"]
    shown = compare.display_row(row)
    assert shown["ROC AUC (95% CI)"].startswith(f"{row['AUC']:.3f} (")


def test_measure_latency_is_the_median_of_timed_predictor_calls(monkeypatch):
    stub = StubPredictor()
    clock = iter([0.0, 0.010, 1.0, 1.030, 2.0, 2.020])  # three calls: 10, 30, 20 ms
    monkeypatch.setattr(compare.time, "perf_counter", lambda: next(clock))
    assert compare.measure_latency(stub, side=64, repeats=3) == pytest.approx(20.0)
    assert stub.calls == 4  # one warm-up + 3 timed


def test_model_card_sections(one_bundle):
    manifest = json.loads((one_bundle / "alpha" / "manifest.json").read_text())
    card = dict(model_card.model_card(manifest))
    assert list(card) == [
        "Intended use and users",
        "Model",
        "Data",
        "Validation metrics",
        "Known limits",
        "Privacy",
    ]
    assert "Codella" in card["Data"] and "CC-0" in card["Data"] and "CC-BY-NC" in card["Data"]
    auc = manifest["validation_metrics"]["roc_auc"]
    assert f"{auc['value']:.3f} (95% CI {auc['low']:.3f}–{auc['high']:.3f}" in card["Validation metrics"]
    assert "Sensitivity:** " in card["Validation metrics"]
    for phrase in ("Dermoscopy only", "256-px", "Skin types", "phone photos"):
        assert phrase in card["Known limits"]
    for phrase in ("in memory", "never written to disk", "No telemetry", "No external requests"):
        assert phrase in card["Privacy"]


def test_threshold_note_names_the_set_the_default_and_the_range(one_bundle):
    from medal_core.bundles import bundle as bundles

    loaded = bundles.load_bundle(one_bundle / "alpha", load_model=False)
    default = explorer.threshold_note(loaded, loaded.threshold)
    assert f"Threshold {loaded.threshold:.4f} (the validated default)" in default
    assert "calibration set" in default and "melanomas onwards" in default
    changed = explorer.threshold_note(loaded, 0.999999)
    assert "changed from the validated default" in changed and "outside the range" in changed


@pytest.mark.parametrize(
    "value, text", [(0.0004, "< 0.1%"), (0.001, "0.1%"), (0.256, "25.6%"), (0.9995, "> 99.9%")]
)
def test_percent_never_reads_zero_or_certain(value, text):
    assert results.percent(value) == text


def test_batch_reads_decodes_and_predicts_chunk_by_chunk():
    """Memory bound: the files are read lazily and at most `chunk_size` decoded images
    wait for the model at any time, however long the batch."""
    stub = StubPredictor()
    read = []
    waiting_at_each_call = []
    original = stub.predict_batch

    def counting(rgbs, threshold=None):
        waiting_at_each_call.append(len(read) - sum(waiting_at_each_call))
        return original(rgbs, threshold)

    stub.predict_batch = counting

    def files():
        for i in range(11):
            read.append(i)
            yield f"{i}.png", flat_png(20 * i + 10)

    found = batch.predict_files(stub, files(), chunk_size=3, total=11)
    assert [r.file for r in found] == [f"{i}.png" for i in range(11)]
    assert waiting_at_each_call == [3, 3, 3, 2]
    assert max(waiting_at_each_call) <= 3


def test_the_comparison_names_the_weaker_model_plainly():
    rows = [
        {
            "model": "mobilenet",
            "AUC": 0.85,
            "AUC low": 0.83,
            "AUC high": 0.87,
            "figures on": "report set, 1927 images",
        },
        {
            "model": "custom_cnn",
            "AUC": 0.69,
            "AUC low": 0.65,
            "AUC high": 0.72,
            "figures on": "report set, 1927 images",
        },
    ]
    text = compare.weakest_statement(rows)
    assert text.startswith("**custom_cnn is the weaker model**") and "do not overlap" in text
    assert "Use mobilenet unless" in text
    assert compare.weakest_statement(rows[:1]) is None
    # The app's default (chosen on the selection set) is recommended, even where another
    # bundle's report AUC is a little higher; never the weakest one.
    rows.append({**rows[0], "model": "mobilenetv2", "AUC": 0.84, "AUC low": 0.82, "AUC high": 0.86})
    text = compare.weakest_statement(rows, recommended="mobilenetv2")
    assert "against mobilenet's 0.850" in text and "Use mobilenetv2 (the app's default" in text
    assert "Use mobilenet unless" in compare.weakest_statement(rows, recommended="custom_cnn")
    # Two models whose intervals overlap: neither is called the weaker one or a baseline.
    text = compare.weakest_statement(rows[::2], recommended="mobilenetv2")
    assert text.startswith("No model is clearly weaker here") and "weaker model**" not in text
    assert "0.840 (mobilenetv2) to 0.850 (mobilenet)" in text and "default, mobilenetv2" in text


def test_guarantee_note_only_at_the_default_and_says_when_none_is_possible():
    manifest = {
        "threshold": {"value": 0.05},
        "decision": {
            "sensitivity_lower_bound": 0.854,
            "target_sensitivity": 0.95,
            "guaranteed": {"threshold": None, "target": 0.95},
        },
    }
    note = explorer.guarantee_note(manifest, 0.05)
    assert "at least 85.4%" in note and "too few melanomas" in note
    assert explorer.guarantee_note(manifest, 0.06) is None
    manifest["decision"]["guaranteed"]["threshold"] = 0.0139
    assert "0.0139 would guarantee 95%" in explorer.guarantee_note(manifest, 0.05)


def test_the_model_card_reports_the_shared_screen_of_a_committed_bundle():
    from medal_core.bundles import bundle as bundles
    from medal_core.bundles.screening import DEFAULT_SCREEN, read_screen_manifest

    manifest = bundles.read_manifest(DEFAULT_SCREEN.parent / "mobilenet")
    figures = read_screen_manifest(DEFAULT_SCREEN)["figures"]
    text = dict(model_card.model_card(manifest))["Validation metrics"]
    clinical = figures["clinical_held_out"]
    assert f"refuses {clinical['refused']:.1%} of {clinical['images']} held-out smartphone photos" in text
    pictures = figures["non_lesion_pictures"]
    assert f"{pictures['no_estimate']} of {pictures['images']} non-lesion pictures" in text
    assert f"{figures['report_given_an_estimate']['all']:.1%} of the report set" in text
