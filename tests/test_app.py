"""The Streamlit app, driven headlessly with `streamlit.testing.v1.AppTest` against tiny
model bundles built in a temporary folder (`MEDAL_MODELS_DIR` points there)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from app_helpers import copy_bundle, make_bundle, make_screen, png, record_screen, synthetic_lesion  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from medal_core.bundles import bundle as bundles  # noqa: E402
from medal_core.evaluation import metrics
from medal_core.evaluation.figures import MEDAL_THRESHOLD  # noqa: E402
from medal_views import explorer

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
PAGES = {
    "pages/threshold_explorer.py": "Threshold explorer",
    "pages/compare_models.py": "Compare models",
    "pages/explainability.py": "Explainability",
    "pages/batch_triage.py": "Batch triage",
    "pages/about.py": "About MedAL Triage",
}
TIMEOUT = 180  # the first run imports TensorFlow and loads a model


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def good_models(tmp_path_factory) -> Path:
    """Two good bundles, 'alpha' and 'beta'."""
    root = tmp_path_factory.mktemp("models_good")
    make_bundle(root / "alpha", seed=0)
    make_bundle(root / "beta", seed=1)
    return root


@pytest.fixture(scope="session")
def mixed_models(tmp_path_factory, good_models) -> Path:
    """'alpha' (good) and 'damaged' (model file altered after the manifest was written)."""
    root = tmp_path_factory.mktemp("models_mixed")
    copy_bundle(good_models / "alpha", root / "alpha")
    copy_bundle(good_models / "alpha", root / "damaged")
    with open(root / "damaged" / "model.keras", "ab") as handle:
        handle.write(b"tampered")
    return root


def start(models_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("MEDAL_MODELS_DIR", str(models_dir))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def all_text(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "error", "warning", "info", "success")
        for e in getattr(at, kind)
    ]
    parts += [e.label for e in at.expander]
    return "\n".join(str(p) for p in parts)


def stored(models_dir: Path, name: str):
    return bundles.load_bundle(models_dir / name, load_model=False)


# ---------------------------------------------------------------- every page


def test_every_page_renders(good_models, monkeypatch):
    at = start(good_models, monkeypatch)
    assert "Triage" in titles(at)
    assert at.selectbox(key="sidebar_bundle").options == ["alpha", "beta"]
    assert at.session_state["threshold"] == pytest.approx(stored(good_models, "alpha").threshold)
    for page, title in PAGES.items():
        goto(at, page)
        assert title in titles(at), (page, titles(at))


def test_default_bundle_is_mobilenet_when_present(tmp_path, good_models, monkeypatch):
    copy_bundle(good_models / "beta", tmp_path / "mobilenet")
    copy_bundle(good_models / "alpha", tmp_path / "alpha")
    at = start(tmp_path, monkeypatch)
    assert at.selectbox(key="sidebar_bundle").value == "mobilenet"


# ---------------------------------------------------------------- threshold explorer


def threshold_field(at):
    """The sidebar's threshold field (its key follows the shared value)."""
    from medal_ui.session import threshold_widget_key

    return at.number_input(key=threshold_widget_key(at.session_state["threshold"]))


def test_moving_the_threshold_changes_the_metrics(good_models, monkeypatch):
    at = goto(start(good_models, monkeypatch), "pages/threshold_explorer.py")
    before = metric_values(at)
    p = stored(good_models, "alpha").predictions
    expected = explorer.at_threshold(p.labels, p.probabilities, at.session_state["threshold"])
    assert before["Sensitivity"] == f"{expected.metrics['sensitivity'].value:.1%}"

    threshold_field(at).set_value(0.8).run()  # the sidebar's shared field
    assert not at.exception
    after = metric_values(at)
    expected = explorer.at_threshold(p.labels, p.probabilities, 0.8)
    assert after["Sensitivity"] == f"{expected.metrics['sensitivity'].value:.1%}"
    assert after["Specificity"] == f"{expected.metrics['specificity'].value:.1%}"
    assert after != before
    assert any("Threshold in use: **0.8000**" in m.value for m in at.markdown)


def test_a_typed_threshold_is_used_exactly_and_survives_page_changes(good_models, monkeypatch):
    at = goto(start(good_models, monkeypatch), "pages/threshold_explorer.py")
    threshold_field(at).set_value(0.0596).run()
    assert at.session_state["threshold"] == 0.0596  # not snapped to a grid
    assert any("Threshold in use: **0.0596**" in m.value for m in at.markdown)
    goto(at, "pages/triage.py")  # Triage uses it too
    assert threshold_field(at).value == 0.0596
    assert at.session_state["threshold"] == 0.0596


def test_stepping_the_threshold_up_and_down_returns_to_the_same_figures(good_models, monkeypatch):
    at = goto(start(good_models, monkeypatch), "pages/threshold_explorer.py")
    default = at.session_state["threshold"]
    before = metric_values(at)
    field = threshold_field(at)
    field.increment().run()
    assert at.session_state["threshold"] == pytest.approx(default + 0.0005)
    threshold_field(at).decrement().run()
    assert at.session_state["threshold"] == pytest.approx(default, abs=1e-12)
    assert metric_values(at) == before


@pytest.mark.parametrize("key", ["preset_sensitivity", "preset_youden", "preset_medal"])
def test_presets_land_where_they_claim(good_models, monkeypatch, key):
    at = goto(start(good_models, monkeypatch), "pages/threshold_explorer.py")
    at.button(key=key).click().run()
    assert not at.exception
    threshold = at.session_state["threshold"]
    p = stored(good_models, "alpha").predictions
    if key == "preset_sensitivity":
        assert metrics.threshold_metrics(p.labels, p.probabilities, threshold)["sensitivity"].value >= 0.95
        assert threshold == metrics.threshold_for_sensitivity(p.labels, p.probabilities, 0.95)
    elif key == "preset_youden":
        assert threshold == metrics.youden_threshold(p.labels, p.probabilities)
    else:
        assert threshold == MEDAL_THRESHOLD
    assert threshold_field(at).value == pytest.approx(threshold)
    expected = explorer.at_threshold(p.labels, p.probabilities, threshold)
    assert metric_values(at)["Sensitivity"] == f"{expected.metrics['sensitivity'].value:.1%}"


def test_changing_the_bundle_resets_the_threshold(good_models, monkeypatch):
    at = start(good_models, monkeypatch)
    threshold_field(at).set_value(0.9).run()
    at.selectbox(key="sidebar_bundle").set_value("beta").run()
    assert not at.exception
    assert at.session_state["threshold"] == pytest.approx(stored(good_models, "beta").threshold)


def test_prevalence_changes_the_predictive_values(good_models, monkeypatch):
    at = goto(start(good_models, monkeypatch), "pages/threshold_explorer.py")
    before = metric_values(at)["PPV at this prevalence"]
    at.slider(key="prevalence_alpha").set_value(1.0).run()
    after = metric_values(at)["PPV at this prevalence"]
    assert float(after.rstrip("%")) < float(before.rstrip("%"))


# ---------------------------------------------------------------- missing and broken bundles


@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_no_bundle_explains_what_to_do(tmp_path, monkeypatch, kind):
    folder = tmp_path if kind == "empty" else tmp_path / "does_not_exist"
    at = start(folder, monkeypatch)
    text = all_text(at)
    assert "No model is available" in text
    assert "python -m medal_core train" in text
    for page in PAGES:
        goto(at, page)
    assert "python -m medal_core train" in all_text(at)  # the About page explains too


def test_a_broken_bundle_is_listed_and_the_app_still_works(mixed_models, monkeypatch):
    at = start(mixed_models, monkeypatch)
    assert at.selectbox(key="sidebar_bundle").options == ["alpha"]
    text = all_text(at)
    assert "1 model bundle could not be loaded" in text
    assert "damaged" in text and "does not match its manifest" in text
    at.file_uploader(key="triage_file").set_value(("lesion.png", png(synthetic_lesion(1)), "image/png")).run()
    assert not at.exception
    assert "Probability of melanoma" in metric_values(at)
    goto(at, "pages/compare_models.py")
    assert "does not match its manifest" in all_text(at)


def test_training_in_progress_is_reported(tmp_path, good_models, monkeypatch):
    copy_bundle(good_models / "alpha", tmp_path / "alpha")
    (tmp_path / "mobilenet" / "checkpoints").mkdir(parents=True)
    at = start(tmp_path, monkeypatch)
    assert at.selectbox(key="sidebar_bundle").value == "alpha"
    assert "training is still running" in all_text(at)


# ---------------------------------------------------------------- triage


def upload(at: AppTest, name: str, data: bytes, key: str = "triage_file") -> AppTest:
    at.file_uploader(key=key).set_value((name, data, "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_triage_shows_the_result_heatmap_report_and_disclaimer(good_models, monkeypatch):
    from medal_core.serving.prediction import DISCLAIMER

    at = start(good_models, monkeypatch)
    upload(at, "lesion.png", png(synthetic_lesion(2, 300)))
    assert metric_values(at)["Probability of melanoma"].endswith("%")
    verdicts = [e.value for kind in ("error", "success", "warning", "info") for e in getattr(at, kind)]
    assert any(
        v.strip("*") in ("Refer to a dermatologist", "Low suspicion", "Indeterminate — see a dermatologist")
        for v in verdicts
    )
    assert len(at.image) >= 2  # original and Grad-CAM overlay
    assert any(DISCLAIMER in v for v in verdicts)
    assert [b.label for b in at.download_button] == ["Download case report (HTML)"]


def test_a_refused_upload_shows_the_reason_not_a_traceback(good_models, monkeypatch):
    at = start(good_models, monkeypatch)
    upload(at, "notes.png", b"this is not an image")
    assert any("not an image we can read" in e.value for e in at.error)
    assert "Probability of melanoma" not in metric_values(at)


def test_a_non_lesion_image_gets_no_probability(tmp_path, good_models, monkeypatch):
    folder = tmp_path / "strict"
    shutil.copytree(good_models / "alpha", folder)
    # A screen whose limits are almost zero: nothing counts as a lesion image.
    record_screen(folder, make_screen(tmp_path / "screening", widen=1e-9))
    at = start(tmp_path, monkeypatch)
    upload(at, "cat.png", png(synthetic_lesion(7)))
    assert "Probability of melanoma" not in metric_values(at)
    warnings = [w.value for w in at.warning]
    assert any("does not look like a dermoscopic image" in w for w in warnings)
    assert any("Not recognised as a dermoscopic lesion image" in i.value for i in at.info)
    assert len(at.image) == 1  # no Grad-CAM for it
    assert at.download_button  # the report is still offered


def test_borderline_just_above_the_threshold(good_models, monkeypatch):
    from medal_core.serving.predictor import Predictor

    image = synthetic_lesion(8)
    probability = Predictor.from_folder(good_models / "alpha").predict(image).probability
    at = start(good_models, monkeypatch)
    upload(at, "lesion.png", png(image))
    threshold_field(at).set_value(max(0.0, probability - 1e-3)).run()
    assert not at.exception
    assert any("Borderline — see a dermatologist" in w.value for w in at.warning)
    assert any("threshold itself is uncertain" in w.value for w in at.warning)


def test_the_camera_is_behind_a_toggle(good_models, monkeypatch):
    at = start(good_models, monkeypatch)
    assert not at.camera_input  # no permission prompt on load
    at.toggle(key="triage_use_camera").set_value(True).run()
    assert not at.exception
    assert len(at.camera_input) == 1 and not at.file_uploader


def test_widget_changes_do_not_rerun_the_model(good_models, monkeypatch):
    from medal_core.serving import predictor as predictor_module

    calls = []
    # Every prediction (one upload's, with its Grad-CAM, or a batch's) runs through it.
    original = predictor_module.Predictor._predict_with_maps

    def counting(self, images, *args, **kwargs):
        calls.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(predictor_module.Predictor, "_predict_with_maps", counting)
    at = start(good_models, monkeypatch)
    upload(at, "lesion.png", png(synthetic_lesion(3)))
    assert len(calls) == 1
    first = metric_values(at)["Probability of melanoma"]
    at.slider(key="triage_opacity").set_value(0.9).run()
    at.segmented_control(key="triage_direction").set_value("benign").run()  # heatmap direction
    threshold_field(at).set_value(0.05).run()
    assert not at.exception
    assert len(calls) == 1
    assert metric_values(at)["Probability of melanoma"] == first


def test_the_upload_survives_a_visit_to_another_page(good_models, monkeypatch):
    at = start(good_models, monkeypatch)
    upload(at, "lesion.png", png(synthetic_lesion(4)))
    goto(at, "pages/explainability.py")
    assert len(at.image) >= 3  # original, overlay, activation grid
    assert sorted(s.label for s in at.selectbox) == ["Layer", "Layer", "Model"]
    short_list = at.selectbox(key="explain_layer_alpha_False").options
    assert 2 <= len(short_list) <= 5  # one layer per stage, in plain words
    at.toggle(key="explain_every_layer").set_value(True).run()
    at.selectbox(key="explain_layer_alpha_True").set_value("block1_conv").run()
    assert not at.exception
    goto(at, "pages/triage.py")
    assert "Probability of melanoma" in metric_values(at)


# ---------------------------------------------------------------- batch


def test_batch_triage_table_and_refusals(good_models, monkeypatch):
    from medal_core.serving import predictor as predictor_module

    calls = []
    original = predictor_module.Predictor.predict_batch
    monkeypatch.setattr(
        predictor_module.Predictor,
        "predict_batch",
        lambda self, images, *a, **k: calls.append(1) or original(self, images, *a, **k),
    )
    at = goto(start(good_models, monkeypatch), "pages/batch_triage.py")
    files = [
        ("b.png", png(synthetic_lesion(5)), "image/png"),
        ("a.png", png(synthetic_lesion(6)), "image/png"),
        ("broken.png", b"\x89PNG\r\n\x1a\nnope", "image/png"),
    ]
    at.file_uploader(key="batch_files").set_value(files).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["file"]) and set(table["file"]) == {"a.png", "b.png"}
    probabilities = list(table["probability"])
    assert probabilities == sorted(probabilities, reverse=True)
    assert metric_values(at)["Refused files"] == "1"
    refusals = [w.value.replace("\\", "") for w in at.warning]  # names are Markdown-escaped
    assert any("broken.png" in w and ("damaged" in w or "not an image" in w) for w in refusals)
    assert [b.label for b in at.download_button] == ["Download results (CSV)"]
    model_calls = len(calls)
    threshold_field(at).set_value(0.01).run()  # re-judged, not re-run
    assert len(calls) == model_calls
    assert set(at.dataframe[0].value["decision"]) == {"Refer to a dermatologist"}


# ---------------------------------------------------------------- configuration


def test_streamlit_config():
    import tomllib

    from medal_core.data.intake import MAX_BYTES

    config = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == MAX_BYTES
    assert config["server"]["enableXsrfProtection"] is True
    assert config["browser"]["gatherUsageStats"] is False
    assert config["logger"]["level"] == "warning"


@pytest.mark.parametrize("page", ["pages/triage.py", *PAGES])
def test_every_page_draws_the_shared_sidebar_itself(good_models, monkeypatch, page):
    # With `pages/` beside the entry point, AppTest (and a fresh server's first request)
    # runs a page file on its own; each page must still show the model and threshold.
    at = goto(start(good_models, monkeypatch), page)
    assert [s.label for s in at.sidebar.selectbox] == ["Model"]
    assert [s.label for s in at.sidebar.number_input] == ["Decision threshold"]
