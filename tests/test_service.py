"""The inference service: its FastAPI routes in-process (no Ray), the app's client of it
against a real server on 127.0.0.1, and the app in service mode."""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from app_helpers import make_bundle, png, synthetic_lesion  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from medal_core.bundles import bundle as bundle_module  # noqa: E402
from medal_core.data.intake import IntakeError, read_upload  # noqa: E402
from medal_core.evaluation import decision  # noqa: E402
from medal_core.serving.client import (  # noqa: E402
    RemoteGradCAM,
    RemotePredictor,
    ServiceClient,
    ServiceRefused,
    ServiceServesAnotherModel,
    ServiceUnavailable,
    check_serves,
    png_for_sending,
)
from medal_core.serving.prediction import Prediction  # noqa: E402
from medal_core.serving.predictor import Predictor  # noqa: E402
from medal_core.serving.service import LocalBackend, create_app  # noqa: E402

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def service_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("service_models") / "alpha", seed=0)


@pytest.fixture(scope="module")
def predictor(service_bundle) -> Predictor:
    return Predictor.from_folder(service_bundle)


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    return TestClient(create_app(LocalBackend(predictor), token=TOKEN, max_bytes=2_000_000))


@pytest.fixture(scope="module")
def lesion() -> np.ndarray:
    return synthetic_lesion(3, 300)


# ---------------------------------------------------------------- routes


def test_health_needs_no_token_and_names_the_bundle(client, predictor):
    answer = client.get("/v1/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["bundle"] == "alpha" and body["replicas"] == 1
    assert body["threshold"] == predictor.default_threshold
    assert body["model_sha256"] == predictor.bundle.manifest["model_sha256"]


def test_the_app_refuses_a_service_that_serves_another_model(client, predictor, tmp_path):
    """The app applies the chosen bundle's threshold and figures to the service's
    answers: they must come from the same model file."""
    health = client.get("/v1/health").json()
    check_serves(health, predictor.bundle)
    (tmp_path / "models").mkdir()
    other = bundle_module.load_bundle(make_bundle(tmp_path / "models" / "beta", seed=1), load_model=False)
    with pytest.raises(
        ServiceServesAnotherModel, match="answers with model 'alpha', not 'beta'.*serve --bundle models/beta"
    ):
        check_serves(health, other)


def test_predict_answers_as_the_predictor_does(client, predictor, lesion):
    answer = client.post("/v1/predict", content=png(lesion), headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    expected = predictor.predict(read_upload(png(lesion)).rgb)
    assert body["verdict"] == expected.verdict_code and body["verdict"] in decision.VERDICT_CODES
    assert body["probability"] == pytest.approx(expected.probability, abs=1e-6)
    assert body["threshold"] == predictor.default_threshold == body["default_threshold"]
    assert body["spread"] == pytest.approx(list(expected.spread), abs=1e-6)
    assert body["bundle"] == "alpha" and "triage aid" in body["disclaimer"]
    assert body["warnings"] == expected.warnings()
    sensitivity = body["sensitivity_at_threshold"]
    assert sensitivity["set"] == "calibration"  # make_bundle stores no report set
    assert 0 <= sensitivity["low"] <= sensitivity["value"] <= sensitivity["high"] <= 1
    assert Prediction.from_dict(body["detail"]).probability == pytest.approx(body["probability"])


def test_a_threshold_override_changes_the_verdict_not_the_probability(client, predictor, lesion):
    base = client.post("/v1/predict", content=png(lesion), headers=AUTH).json()
    for threshold in (0.0, 1.0, 0.5):
        body = client.post(f"/v1/predict?threshold={threshold}", content=png(lesion), headers=AUTH).json()
        expected = Prediction.from_dict(base["detail"]).at_threshold(threshold)
        assert body["threshold"] == threshold and body["verdict"] == expected.verdict_code
        assert body["probability"] == base["probability"]
    assert client.post("/v1/predict?threshold=0", content=png(lesion), headers=AUTH).json()["verdict"] in (
        "refer",
        "indeterminate",
    )


@pytest.mark.parametrize("threshold", ["abc", "1.5", "-0.1", "nan"])
def test_a_bad_threshold_is_a_422_with_a_message(client, lesion, threshold):
    answer = client.post(f"/v1/predict?threshold={threshold}", content=png(lesion), headers=AUTH)
    assert answer.status_code == 422
    assert "threshold must be a number in [0, 1]" in answer.json()["error"]


@pytest.mark.parametrize(
    "body", [b"", b"this is not an image", b"\x89PNG\r\n\x1a\nbroken", bytes(range(256)) * 4]
)
def test_a_refused_file_is_a_422_with_the_intakes_message(client, body):
    with pytest.raises(IntakeError) as refused:
        read_upload(body)
    for route in ("/v1/predict", "/v1/explain"):
        answer = client.post(route, content=body, headers=AUTH)
        assert answer.status_code == 422, route
        assert answer.json() == {"error": str(refused.value)}


def test_a_file_over_the_limit_is_a_413_declared_or_streamed(client):
    huge = b"\xff\xd8" + bytes(2_100_000)
    assert client.post("/v1/predict", content=huge, headers=AUTH).status_code == 413

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(30):
            yield bytes(100_000)

    answer = client.post("/v1/predict", content=chunks(), headers=AUTH)
    assert answer.status_code == 413 and "limit" in answer.json()["error"]


def test_too_many_pixels_is_a_422_not_a_crash(client):
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")  # 81 MP, small file
    answer = client.post("/v1/predict", content=buffer.getvalue(), headers=AUTH)
    assert answer.status_code == 422 and "megapixels" in answer.json()["error"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_a_missing_or_wrong_token_is_a_401(client, lesion, headers):
    for route in ("/v1/predict", "/v1/explain"):
        answer = client.post(route, content=png(lesion), headers=headers)
        assert answer.status_code == 401 and "bearer token" in answer.json()["error"]
        assert answer.headers["www-authenticate"] == "Bearer"


def test_without_a_token_configured_no_header_is_needed(predictor, lesion):
    open_client = TestClient(create_app(LocalBackend(predictor)))
    assert open_client.post("/v1/predict", content=png(lesion)).status_code == 200


def test_explain_returns_the_overlay_or_the_map_as_png(client, predictor, lesion):
    answer = client.post("/v1/explain", content=png(lesion), headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    overlay = np.asarray(Image.open(io.BytesIO(answer.content)))
    assert overlay.shape == lesion.shape and overlay.dtype == np.uint8
    assert not np.array_equal(overlay, lesion)  # something was drawn
    bare = client.post("/v1/explain?output=heatmap&direction=benign", content=png(lesion), headers=AUTH)
    heat = np.asarray(Image.open(io.BytesIO(bare.content)))
    assert heat.shape == (predictor.input_size, predictor.input_size)


@pytest.mark.parametrize(
    "query, word",
    [("direction=up", "direction"), ("output=jpeg", "output"), ("layer=no_such_layer", "no_such_layer")],
)
def test_bad_explain_parameters_are_a_422(client, lesion, query, word):
    answer = client.post(f"/v1/explain?{query}", content=png(lesion), headers=AUTH)
    assert answer.status_code == 422 and word in answer.json()["error"]


def test_a_prediction_survives_its_json_round_trip(predictor, lesion):
    prediction = predictor.predict(lesion, threshold=0.3)
    again = Prediction.from_dict(prediction.to_dict())
    assert again.probability == prediction.probability and again.verdict_code == prediction.verdict_code
    np.testing.assert_allclose(again.view_probabilities, prediction.view_probabilities)
    assert again.quality == prediction.quality and again.warnings() == prediction.warnings()


# ---------------------------------------------------------------- the client, on a real server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(predictor):
    """The routes under uvicorn on 127.0.0.1, in a thread of this process."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(
        create_app(LocalBackend(predictor), token=TOKEN),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=10)


def test_the_remote_predictor_answers_as_the_local_one(server, predictor, lesion):
    remote = RemotePredictor(ServiceClient(server, TOKEN), predictor.bundle)
    assert remote.input_size == predictor.input_size
    assert remote.default_threshold == predictor.default_threshold
    images = [lesion, synthetic_lesion(4, 280), synthetic_lesion(5, 256)]
    for here, there in zip(predictor.predict_batch(images, 0.4), remote.predict_batch(images, 0.4)):
        assert there.probability == pytest.approx(here.probability, abs=1e-6)
        assert there.verdict_code == here.verdict_code and there.threshold == 0.4


def test_the_remote_gradcam_gives_both_maps(server, predictor, lesion):
    from medal_core.data.datasets import resize_for_model
    from medal_core.explain.gradcam import GradCAM

    layer = predictor.bundle.manifest["gradcam_layer"]
    there = RemoteGradCAM(ServiceClient(server, TOKEN), layer).explain_file(png(lesion))
    here = GradCAM(predictor.bundle.model, layer).explain_estimate(
        resize_for_model(lesion, predictor.input_size)
    )
    for direction in ("malignant", "benign"):
        assert there[direction].shape == (predictor.input_size,) * 2
        np.testing.assert_allclose(there[direction], here[direction], atol=1 / 255 + 1e-6)


def test_an_upload_sent_as_its_file_gets_the_in_process_answer(server, predictor, lesion):
    remote = RemotePredictor(ServiceClient(server, TOKEN), predictor.bundle)
    there, here = remote.predict_file(png(lesion), 0.2), predictor.predict(lesion, 0.2)
    assert there.probability == pytest.approx(here.probability, abs=1e-9)
    assert there.verdict_code == here.verdict_code and there.quality == here.quality


def test_the_client_words_refusals_and_outages(server, lesion):
    with pytest.raises(ServiceRefused) as refused:
        ServiceClient(server, "wrong").predict(png(lesion))
    assert refused.value.status == 401
    with pytest.raises(ServiceUnavailable, match="cannot be reached.*try again"):
        ServiceClient(f"http://127.0.0.1:{_free_port()}", timeout=5).health()
    assert ServiceClient(server).health()["status"] == "ok"


def test_images_are_sent_lossless_and_at_most_the_send_size():
    small = synthetic_lesion(1, 300)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_for_sending(small)))), small)
    wide = np.zeros((100, 5000, 3), np.uint8)
    assert Image.open(io.BytesIO(png_for_sending(wide, side=1000))).size == (1000, 20)


# ---------------------------------------------------------------- the app in service mode


def _app(models_dir: Path, monkeypatch, url: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MEDAL_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("MEDAL_SERVICE_URL", url)
    monkeypatch.setenv("MEDAL_API_TOKEN", TOKEN)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_app_triages_through_the_service(server, service_bundle, monkeypatch, lesion):
    at = _app(service_bundle.parent, monkeypatch, server)
    at.file_uploader(key="triage_file").set_value(("lesion.png", png(lesion), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Probability of melanoma"].endswith("%")
    assert len(at.image) >= 2  # original and the service's Grad-CAM


def test_the_app_says_so_when_the_service_serves_another_model(
    server, service_bundle, monkeypatch, lesion, tmp_path
):
    other = tmp_path / "models"
    other.mkdir()
    make_bundle(other / "beta", seed=1)
    at = _app(other, monkeypatch, server)
    at.file_uploader(key="triage_file").set_value(("lesion.png", png(lesion), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("answers with model" in e.value and "not 'beta'" in e.value for e in at.error)
    assert "Probability of melanoma" not in {m.label for m in at.metric}


def test_an_unreachable_service_is_a_clear_message_not_a_traceback(service_bundle, monkeypatch, lesion):
    at = _app(service_bundle.parent, monkeypatch, f"http://127.0.0.1:{_free_port()}")
    at.file_uploader(key="triage_file").set_value(("lesion.png", png(lesion), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("cannot be reached" in e.value for e in at.error)
    assert "Probability of melanoma" not in {m.label for m in at.metric}
