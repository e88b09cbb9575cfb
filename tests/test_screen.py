"""The screen every bundle shares: the per-source lesion check, the combined no-estimate
rule, its folder (verified on load, tied to the bundles calibrated with it), the roles
check of the calibration stage, and the committed screen on real and non-lesion images."""

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from app_helpers import make_screen, record_screen

from medal_core.bundles import bundle
from medal_core.bundles.bundle import BundleError, load_bundle
from medal_core.bundles.screening import (
    DEFAULT_SCREEN,
    SCREEN_MANIFEST,
    load_screen,
    screen_folder_for,
)
from medal_core.data.datasets import DatasetError, load_images
from medal_core.screening.ood import KEEP_EACH, KEEP_SHARE
from medal_core.screening.screen import LESION_FILE, LesionCheck, ScreenScores
from medal_core.stages.non_lesion_pictures import non_lesion_check

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def two_sources(n: int, seed: int = 0):
    """(features, statistics, sources): source "a" around 0, source "b" around 6."""
    rng = np.random.default_rng(seed)
    sources = np.array(["a"] * n + ["b"] * n)
    features = rng.normal(0, 1, (2 * n, 5)) + np.where(sources == "b", 6.0, 0.0)[:, None]
    statistics = rng.normal(0, 1, (2 * n, 9))
    return features, statistics, sources


@pytest.fixture(scope="module")
def lesion_check():
    return LesionCheck.fit(two_sources(300), two_sources(200, seed=1))


def test_each_source_keeps_its_share_and_an_image_passes_near_any_source(lesion_check):
    assert lesion_check.sources == ("a", "b")
    features, statistics, sources = two_sources(200, seed=1)
    scores = lesion_check.score(features, statistics)
    for source in ("a", "b"):
        assert np.mean(scores[sources == source] <= 1.0) >= KEEP_SHARE
    # The score is the smallest of the sources' own scores.
    own = np.array([d.score_statistics(features, statistics) for d in lesion_check.detectors])
    np.testing.assert_array_equal(scores, own.min(axis=0))
    # Midway between the sources is like neither; far away is like nothing.
    between = np.full((1, 5), 3.0), np.zeros((1, 9))
    far = np.full((1, 5), 40.0), np.zeros((1, 9))
    assert lesion_check.score(*between)[0] > 1.0 and lesion_check.score(*far)[0] > 1.0


def test_each_limit_is_set_on_its_own_sources_calibration_images(lesion_check):
    features, statistics, sources = two_sources(200, seed=1)
    for name, detector in zip(lesion_check.sources, lesion_check.detectors):
        mine = sources == name
        assert np.mean(detector.features.distance(features[mine]) <= detector.feature_limit) >= KEEP_EACH
        assert (
            np.mean(detector.statistics.distance(statistics[mine]) <= detector.statistics_limit) >= KEEP_EACH
        )


def test_a_source_without_calibration_images_is_refused():
    features, statistics, sources = two_sources(50, seed=1)
    only_a = sources == "a"
    with pytest.raises(ValueError, match="source 'b' has training images but no calibration images"):
        LesionCheck.fit(two_sources(50), (features[only_a], statistics[only_a], sources[only_a]))


def test_the_lesion_check_survives_a_round_trip(lesion_check, tmp_path):
    lesion_check.save(tmp_path / LESION_FILE)
    loaded = LesionCheck.load(tmp_path / LESION_FILE)
    assert loaded.sources == lesion_check.sources
    probe = two_sources(20, seed=9)
    np.testing.assert_array_equal(loaded.score(*probe[:2]), lesion_check.score(*probe[:2]))


def test_no_estimate_when_either_check_refuses():
    scores = ScreenScores(np.array([0.5, 1.0, 1.01, 0.2, 3.0]), np.array([0.1, 0.7, 0.1, 0.71, 0.9]), 0.7)
    np.testing.assert_array_equal(scores.no_estimate, [False, False, True, True, True])


# ---------------------------------------------------------------- the folder


@pytest.fixture(scope="module")
def screen_folder(tmp_path_factory) -> Path:
    return make_screen(tmp_path_factory.mktemp("screens") / "screening")


def test_a_tampered_or_missing_screen_file_is_refused(screen_folder, tmp_path):
    folder = Path(shutil.copytree(screen_folder, tmp_path / "screening"))
    assert load_screen(folder).input_size == 56
    loaded = LesionCheck.load(folder / LESION_FILE)
    wider = replace(loaded.detectors[0], feature_limit=loaded.detectors[0].feature_limit * 2)
    replace(loaded, detectors=(wider,)).save(folder / LESION_FILE)  # would accept more
    with pytest.raises(BundleError, match="does not match its manifest"):
        load_screen(folder)
    (folder / LESION_FILE).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_screen(folder)
    (folder / SCREEN_MANIFEST).unlink()
    with pytest.raises(BundleError, match="fit-screening"):
        load_screen(folder)


def test_a_bundle_refuses_a_screen_other_than_the_one_it_was_calibrated_with(
    trained_tiny_bundle, screen_folder, tmp_path
):
    folder = tmp_path / "models" / "tiny"
    shutil.copytree(trained_tiny_bundle, folder)
    screen = Path(shutil.copytree(screen_folder, tmp_path / "models" / "screening"))
    assert screen_folder_for(folder) == screen  # the one beside it comes first
    record_screen(folder, screen)
    assert load_bundle(folder).screen.folder == screen
    manifest = json.loads((screen / SCREEN_MANIFEST).read_text())
    manifest["note"] = "refitted"
    (screen / SCREEN_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not the screen this bundle was calibrated with"):
        load_bundle(folder)
    assert load_bundle(folder, load_screen_too=False).screen is None


def test_calibration_refuses_a_screen_fitted_on_other_roles(trained_tiny_bundle, screen_folder, tmp_path):
    from medal_core.data import roles
    from medal_core.stages.calibrate import with_current_screen

    folder = tmp_path / "models" / "tiny"
    shutil.copytree(trained_tiny_bundle, folder)
    screen = Path(shutil.copytree(screen_folder, tmp_path / "models" / "screening"))
    loaded = load_bundle(folder, load_screen_too=False)
    data_dir = Path(loaded.manifest["training"]["config"]["data"][0])
    assignment = roles.bundle_roles(loaded.manifest, data_dir.parent)
    summary = {role: assignment.summary()[role]["ids_sha256"] for role in ("train", "calibration", "report")}
    manifest = json.loads((screen / SCREEN_MANIFEST).read_text())
    manifest["data"]["roles"] = summary
    (screen / SCREEN_MANIFEST).write_text(json.dumps(manifest))
    assert with_current_screen(loaded, assignment).screen.folder == screen.resolve()
    manifest["data"]["roles"] = {**summary, "report": "0" * 64}
    (screen / SCREEN_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="fitted on other train/calibration/report images"):
        with_current_screen(loaded, assignment)


def test_the_catalog_does_not_take_the_screen_for_a_bundle(screen_folder, tmp_path):
    from medal_views.catalog import candidate_folders

    shutil.copytree(screen_folder, tmp_path / "screening")
    (tmp_path / "alpha").mkdir()
    assert [p.name for p in candidate_folders(tmp_path)] == ["alpha"]


def test_evaluating_a_folder_gives_no_estimate_where_the_app_gives_none(tmp_path):
    """`evaluate --data DIR` scores a folder as the app would: the screen's refusals
    are counted, and sent onwards at the threshold, like the Predictor's."""
    from app_helpers import make_bundle, synthetic_lesion
    from PIL import Image, ImageFilter

    from medal_core.serving.predictor import Predictor
    from medal_core.stages import evaluate

    (tmp_path / "models").mkdir()
    folder = make_bundle(tmp_path / "models" / "b")
    rng = np.random.default_rng(3)
    photos = [
        np.asarray(
            Image.fromarray(rng.integers(60, 200, (300, 300, 3), dtype=np.uint8)).filter(
                ImageFilter.GaussianBlur(2)
            )
        )
        for _ in range(3)
    ]
    images = {
        "benign": [synthetic_lesion(s, 256) for s in (1, 2)] + photos[:1],
        "malignant": [synthetic_lesion(3, 256), *photos[1:]],
    }
    for label, pictures in images.items():
        (tmp_path / "data" / label).mkdir(parents=True)
        for i, rgb in enumerate(pictures):
            Image.fromarray(rgb).save(tmp_path / "data" / label / f"{label}_{i}.png")
    out = tmp_path / "report.json"
    evaluate.main(["--bundle", str(folder), "--data", str(tmp_path / "data"), "--json", str(out)])
    report = json.loads(out.read_text())
    predictor = Predictor.from_folder(folder)
    refused = {
        label: sum(not predictor.predict(rgb).has_estimate for rgb in pictures)
        for label, pictures in images.items()
    }
    assert refused["malignant"] >= 1, "the test screen should refuse a blurred-noise photo"
    assert report["no_estimate"]["images"] == sum(refused.values())
    assert report["no_estimate"]["melanomas"] == refused["malignant"]
    assert report["no_estimate"]["screen"] == "screening"
    # At threshold 1 no estimate reaches it: only the no-estimate melanomas go onwards.
    evaluate.main(
        ["--bundle", str(folder), "--data", str(tmp_path / "data"), "--threshold", "1.0", "--json", str(out)]
    )
    sensitivity = json.loads(out.read_text())["at_threshold"]["sensitivity"]
    assert (sensitivity["successes"], sensitivity["total"]) == (
        refused["malignant"],
        len(images["malignant"]),
    )


# ---------------------------------------------------------------- the committed screen


@pytest.fixture(scope="module")
def real_screen():
    if not (DEFAULT_SCREEN / SCREEN_MANIFEST).is_file():
        pytest.skip(f"no screen at {DEFAULT_SCREEN} (python -m medal_core fit-screening)")
    return load_screen(DEFAULT_SCREEN)


def test_the_committed_bundles_were_calibrated_with_the_committed_screen(real_screen):
    for folder in bundle.find_bundles(REPO / "models"):
        manifest = bundle.read_manifest(folder)
        assert manifest["screening"]["sha256"] == real_screen.manifest_sha256, folder.name


def test_the_committed_screen_refuses_every_non_lesion_picture(real_screen):
    report = non_lesion_check(real_screen.scores, real_screen.input_size)
    assert report["images"] >= 30
    assert report["no_estimate"] == report["images"], f"given an estimate: {report['given_an_estimate']}"


def binomial_allowance(n: int, loss: float) -> int:
    """The largest number of refusals a true refusal rate of `loss` produces with
    probability >= 1% among n images: a healthy screen stays within it 99% of the time."""

    def tail(k):
        return sum(math.comb(n, j) * loss**j * (1 - loss) ** (n - j) for j in range(k, n + 1))

    return max(k for k in range(n + 1) if tail(k) >= 0.01)


@pytest.mark.real_data
def test_the_committed_screen_keeps_real_calibration_lesions(real_screen):
    """60 images spread over the calibration set: the screen keeps about 98.9% of it
    (both checks, `figures` in screening.json); a stale or mismatched screen far fewer."""
    if not DATA.is_dir():
        pytest.skip(f"datasets not found at {DATA}")
    from medal_core.data import roles

    manifest = bundle.read_manifest(REPO / "models" / "mobilenet")
    calibration = roles.bundle_roles(manifest, DATA).role("calibration")
    chosen = np.linspace(0, len(calibration) - 1, 60).round().astype(int)
    images = load_images(calibration.paths[chosen], real_screen.input_size)
    refused = int(real_screen.scores(images).no_estimate.sum())
    assert refused <= binomial_allowance(60, 1 - KEEP_SHARE), f"{refused} of 60 refused"


@pytest.mark.real_data
def test_the_committed_screen_refuses_held_out_phone_photos(real_screen):
    """60 photos of the PAD-UFES-20 patients the screen was not fitted on: it refuses about
    96% of them (screening.json); fewer than 85% would mean it no longer tells them apart."""
    from medal_core.data.datasets import load_dataset
    from medal_core.stages.fit_screening import patient_split

    clinical_root = DATA / "pad_ufes20_clinical"
    if not clinical_root.is_dir():
        pytest.skip(f"clinical photos not found at {clinical_root}")
    clinical = load_dataset(clinical_root)
    _, held = patient_split(clinical_root / "labels.csv")
    held_out = clinical.subset(np.isin(clinical.image_ids, sorted(held)))
    chosen = np.linspace(0, len(held_out) - 1, 60).round().astype(int)
    images = load_images(held_out.paths[chosen], real_screen.input_size)
    refused = real_screen.scores(images).no_estimate
    assert refused.mean() >= 0.85, f"{int(refused.sum())} of 60 refused"


# ---------------------------------------------------------------- the stage


def write_labelled_folder(root: Path, images: list[np.ndarray], patients: list[str] | None = None) -> Path:
    """An ISIC-layout folder (labels.csv with path, label, split[, patient_id]), half of
    the images labelled malignant."""
    from PIL import Image

    root.mkdir(parents=True)
    rows = ["image_id,path,label,split" + (",patient_id" if patients else "")]
    for i, rgb in enumerate(images):
        Image.fromarray(rgb).save(root / f"img_{i}.png")
        label = "malignant" if i % 2 else "benign"
        rows.append(f"img_{i},img_{i}.png,{label},train" + (f",{patients[i]}" if patients else ""))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_fit_screening_writes_a_screen_the_bundles_can_load(tmp_path):
    """The whole stage on synthetic data (random-init features at 32 px: the mechanics,
    not the quality): two dermoscopic sources, phone-photo-like pictures by patient."""
    from app_helpers import synthetic_lesion
    from PIL import Image, ImageFilter

    from medal_core.bundles.screening import save_screen
    from medal_core.data import roles
    from medal_core.stages import fit_screening

    rng = np.random.default_rng(0)
    data_root = tmp_path / "data"
    write_labelled_folder(data_root / "derm_a", [synthetic_lesion(i, 96) for i in range(40)])
    write_labelled_folder(data_root / "derm_b", [synthetic_lesion(100 + i, 160)[::-1] for i in range(40)])
    phone = [
        np.asarray(
            Image.fromarray(rng.integers(90, 230, (80, 80, 3), dtype=np.uint8)).filter(
                ImageFilter.GaussianBlur(3)
            )
        )
        for _ in range(24)
    ]
    write_labelled_folder(data_root / "pad_ufes20_clinical", phone, [f"PAT_{i // 2}" for i in range(24)])
    assignment = roles.assign_roles(roles.default_recipe(["derm_a", "derm_b"]), data_root)

    model, screen, manifest = fit_screening.fit_screen(
        assignment, data_root, "none", per_source=20, input_size=32
    )
    assert manifest["input_size"] == 32 and screen.lesion.sources == ("derm_a", "derm_b")
    assert manifest["data"]["fit"]["dermoscopic"] == {"derm_a": 20, "derm_b": 20}
    assert manifest["data"]["roles"] == {
        role: assignment.summary()[role]["ids_sha256"] for role in ("train", "calibration", "report")
    }
    figures = manifest["figures"]
    calibration_kept = figures["calibration_given_an_estimate (chose the limits)"]
    assert set(calibration_kept) == {"all", "derm_a", "derm_b"}
    assert 0 < figures["clinical_held_out"]["images"] < 24  # the other half of the patients
    assert figures["non_lesion_pictures"]["images"] >= 16
    folder = save_screen(tmp_path / "models" / "screening", model, screen, manifest)
    loaded = load_screen(folder)
    images = load_images(assignment.role("report").paths, 32)
    np.testing.assert_allclose(
        loaded.scores(images).ood, screen.scores(loaded.runner(images), images).ood, rtol=1e-5
    )


def test_calibration_without_a_screen_records_none_and_never_drops_one_silently(
    trained_tiny_bundle, screen_folder, tmp_path, monkeypatch
):
    from medal_core.data import roles
    from medal_core.stages import calibrate

    folder = tmp_path / "runs" / "tiny"
    shutil.copytree(trained_tiny_bundle, folder)
    loaded = load_bundle(folder, load_screen_too=False)
    data_dir = Path(loaded.manifest["training"]["config"]["data"][0])
    assignment = roles.bundle_roles(loaded.manifest, data_dir.parent)
    stale = replace(loaded, manifest={**loaded.manifest, "screening": {"sha256": "0" * 64}})
    # No screen anywhere: a stale record is dropped, not kept for a threshold it never counted.
    monkeypatch.setattr(calibrate, "screen_folder_for", lambda _: tmp_path / "nowhere")
    assert "screening" not in calibrate.with_current_screen(stale, assignment).manifest
    # The app's own screen, fitted on other roles, for a run elsewhere: used not, said so.
    other = Path(shutil.copytree(screen_folder, tmp_path / "app_screen"))
    manifest = json.loads((other / SCREEN_MANIFEST).read_text())
    manifest["data"]["roles"] = {role: "0" * 64 for role in ("train", "calibration", "report")}
    (other / SCREEN_MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setattr(calibrate, "screen_folder_for", lambda _: other)
    unscreened = calibrate.with_current_screen(loaded, assignment)
    assert unscreened.screen is None and "screening" not in unscreened.manifest
    # ... but a bundle that was calibrated with a screen is never silently left without one.
    with pytest.raises(DatasetError, match="fitted on other"):
        calibrate.with_current_screen(stale, assignment)


def test_a_bundle_from_before_the_shared_screen_is_refused(trained_tiny_bundle, tmp_path):
    folder = Path(shutil.copytree(trained_tiny_bundle, tmp_path / "old"))
    manifest = json.loads((folder / bundle.MANIFEST_FILE).read_text())
    manifest["ood"] = {"file": "ood.npz", "sha256": "0" * 64}
    (folder / bundle.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="predates the shared screen"):
        load_bundle(folder)
