"""Failure paths of the app (AppTest) that `test_app.py` does not cover already. Each
checks the message the user gets and that the session goes on: the next action works
and raises nothing.

Already in test_app.py: no bundle at all (empty and missing folder, every page), one
bundle with a tampered model file next to a good one, an upload that is not an image.
Here: bundles broken in the other ways (manifest fields missing, no
val_predictions.csv, a Lambda-layer model whose sha256 matches its manifest), a
damaged upload followed by a good one, and an upload above the size limit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from app_helpers import make_bundle, png, synthetic_lesion  # noqa: E402
from test_app import all_text, goto, metric_values, start, upload  # noqa: E402

from medal_core.bundles import bundle as bundles  # noqa: E402
from medal_core.data.intake import MAX_BYTES  # noqa: E402

PROBABILITY = "Probability of melanoma"


def lambda_model(input_size: int):
    """A model with a Python lambda inside (code that would run on load), named like a
    bundle's model so that only the Lambda layer is wrong with it."""
    import keras
    from app_helpers import BUNDLE_FILTERS

    from medal_core.modeling import architectures as models

    base = models.build_custom_cnn(input_size=input_size, filters=BUNDLE_FILTERS)
    inputs = keras.Input((input_size, input_size, 3))
    scaled = keras.layers.Lambda(lambda t: t * 1.0, name="smuggled_code")(inputs)
    return keras.Model(inputs, base(scaled), name="lambda_model")


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory) -> Path:
    """'alpha' (good) beside three broken bundles:

    * 'no_fields': manifest without 'gradcam_layer' and 'threshold';
    * 'no_predictions': val_predictions.csv deleted;
    * 'zz_lambda': a model with a Lambda layer, saved by `save_bundle` (its sha256 in
      the manifest is right), so only loading the model can find it out.
    """
    root = tmp_path_factory.mktemp("models_broken")
    make_bundle(root / "alpha", seed=0)

    shutil.copytree(root / "alpha", root / "no_fields")
    manifest = json.loads((root / "no_fields" / "manifest.json").read_text())
    del manifest["gradcam_layer"], manifest["threshold"]
    (root / "no_fields" / "manifest.json").write_text(json.dumps(manifest))

    shutil.copytree(root / "alpha", root / "no_predictions")
    (root / "no_predictions" / bundles.PREDICTIONS_FILE).unlink()

    good = bundles.load_bundle(root / "alpha", load_model=False)
    manifest = {k: v for k, v in good.manifest.items() if k not in ("format_version", "model_sha256", "ood")}
    bundles.save_bundle(
        root / "zz_lambda",
        lambda_model(manifest["input_size"]),
        {**manifest, "name": "zz_lambda"},
        good.predictions,
    )
    return root


def lesion_png(seed: int = 1) -> bytes:
    return png(synthetic_lesion(seed))


# ---------------------------------------------------------------- broken bundles


def test_each_broken_bundle_is_listed_with_its_reason(broken_models, monkeypatch):
    at = start(broken_models, monkeypatch)
    # The Lambda bundle passes every check that does not load the model (its files
    # match its manifest), so it is offered; the other two are listed as broken.
    assert at.selectbox(key="sidebar_bundle").options == ["alpha", "zz_lambda"]
    assert at.selectbox(key="sidebar_bundle").value == "alpha"
    text = all_text(at)
    assert "2 model bundles could not be loaded" in text
    assert "no_fields" in text and "missing field 'gradcam_layer'" in text
    assert "missing field 'threshold'" in text
    assert "no_predictions" in text and "has no val_predictions.csv" in text

    upload(at, "lesion.png", lesion_png())  # the good bundle works
    assert PROBABILITY in metric_values(at)
    goto(at, "pages/threshold_explorer.py")  # and so do the other pages
    assert "Sensitivity" in metric_values(at)
    goto(at, "pages/compare_models.py")
    assert "missing field 'gradcam_layer'" in all_text(at)


def test_a_lambda_model_is_refused_on_load_and_the_session_goes_on(broken_models, monkeypatch):
    at = start(broken_models, monkeypatch)
    at.selectbox(key="sidebar_bundle").set_value("zz_lambda").run()
    assert not at.exception, [e.value for e in at.exception]
    upload(at, "lesion.png", lesion_png(2))
    errors = " ".join(e.value for e in at.error)
    assert "The model bundle **zz_lambda** could not be loaded" in errors
    assert "could not be loaded safely" in errors and "Lambda" in errors
    assert PROBABILITY not in metric_values(at)

    at.selectbox(key="sidebar_bundle").set_value("alpha").run()  # back to a good one
    assert not at.exception, [e.value for e in at.exception]
    assert PROBABILITY in metric_values(at)  # the same upload, now triaged
    assert not any("could not be loaded" in e.value for e in at.error)


# ---------------------------------------------------------------- refused uploads


def test_a_damaged_upload_then_a_good_one(broken_models, monkeypatch):
    at = start(broken_models, monkeypatch)
    good = lesion_png(3)
    upload(at, "cut.png", good[: len(good) // 2])  # a PNG cut in half
    assert any("damaged or incomplete" in e.value for e in at.error), [e.value for e in at.error]
    assert PROBABILITY not in metric_values(at)

    upload(at, "lesion.png", good)
    assert PROBABILITY in metric_values(at)
    assert not any("damaged" in e.value for e in at.error)
    assert len(at.image) >= 2  # image and Grad-CAM


def test_an_upload_over_the_size_limit(broken_models, monkeypatch):
    # AppTest does not enforce server.maxUploadSize (the browser and the server do):
    # the file reaches the page, whose intake refuses it with its own message.
    oversized = lesion_png(4)
    oversized += b"\0" * (MAX_BYTES + 1 - len(oversized))
    assert len(oversized) == MAX_BYTES + 1
    at = start(broken_models, monkeypatch)
    upload(at, "huge.png", oversized)
    errors = [e.value for e in at.error]
    assert any("above the 20 MB limit" in e and "smaller photo" in e for e in errors), errors
    assert PROBABILITY not in metric_values(at)

    upload(at, "lesion.png", lesion_png(5))  # the session goes on
    assert PROBABILITY in metric_values(at)

    goto(at, "pages/batch_triage.py")  # batch: one refused, one done
    at.file_uploader(key="batch_files").set_value(
        [("huge.png", oversized, "image/png"), ("ok.png", lesion_png(6), "image/png")]
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(at.dataframe[0].value["file"]) == ["ok.png"]
    assert metric_values(at)["Refused files"] == "1"
    refusals = [w.value.replace("\\", "") for w in at.warning]
    assert any("huge.png" in w and "above the 20 MB limit" in w for w in refusals), refusals
