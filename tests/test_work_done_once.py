"""Work the app does once, not on every call: a model file's sha256 per process, an
upload's resize, a bundle's signature."""

from __future__ import annotations

import os

import numpy as np
import pytest
from app_helpers import copy_bundle, make_bundle, synthetic_lesion

from medal_core.bundles import bundle as bundles
from medal_core.bundles import files
from medal_core.bundles.screening import FEATURES_FILE
from medal_views import catalog


@pytest.fixture(scope="module")
def alpha(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("once") / "alpha")


def test_an_unchanged_file_is_hashed_once_per_process(alpha, monkeypatch):
    calls = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: calls.append(path) or real(path))
    files._verified.clear()
    expected = bundles.read_manifest(alpha)["model_sha256"]
    for _ in range(3):
        bundles.verify_sha256(alpha / bundles.MODEL_FILE, expected)
    assert len(calls) == 1


def test_a_file_changed_after_its_check_is_hashed_again_and_refused(tmp_path, alpha):
    copy = copy_bundle(alpha, tmp_path / "alpha")
    expected = bundles.read_manifest(copy)["model_sha256"]
    bundles.verify_sha256(copy / bundles.MODEL_FILE, expected)
    with open(copy / bundles.MODEL_FILE, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(bundles.BundleError, match="does not match"):
        bundles.verify_sha256(copy / bundles.MODEL_FILE, expected)
    # Same size, another modification time: still hashed again.
    data = (copy / bundles.MODEL_FILE).read_bytes()
    (copy / bundles.MODEL_FILE).write_bytes(data[:-2] + b"yz")
    os.utime(copy / bundles.MODEL_FILE, ns=(1, 1))
    with pytest.raises(bundles.BundleError):
        bundles.verify_sha256(copy / bundles.MODEL_FILE, expected)


def test_the_app_path_loads_a_bundle_hashing_its_model_once(alpha, monkeypatch):
    from medal_core.serving.predictor import Predictor

    files._verified.clear()
    hashed = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    catalog.check_bundle(alpha)  # the catalog lists it ...
    Predictor.from_folder(alpha)  # ... then the page loads its model
    assert hashed.count(bundles.MODEL_FILE) == 1
    assert hashed.count(FEATURES_FILE) == 1  # the shared screen's model too


def test_a_prediction_from_a_resized_copy_is_the_same(alpha):
    from medal_core.data.datasets import resize_for_model
    from medal_core.serving.predictor import Predictor

    predictor = Predictor.from_folder(alpha)
    image = synthetic_lesion(7, 300)
    given = predictor.predict(image, resized=resize_for_model(image, predictor.input_size))
    assert given.probability == predictor.predict(image).probability
    with pytest.raises(ValueError, match="one"):
        predictor.predict(image, resized=np.zeros((10, 10, 3), np.uint8))


def test_a_bundles_signature_is_computed_once(alpha, monkeypatch):
    loaded = bundles.load_bundle(alpha, load_model=False)
    first = catalog.signature(loaded)
    monkeypatch.setattr(catalog.json, "dumps", lambda *a, **k: pytest.fail("computed again"))
    assert catalog.signature(loaded) == first
    monkeypatch.undo()
    other = bundles.load_bundle(alpha, load_model=False)  # another object: its own entry
    assert catalog.signature(other) == first
