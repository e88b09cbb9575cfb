"""The dermoscopic-vs-clinical check: fitting, its per-source limit, storage and the
patient split."""

import csv

import numpy as np
import pytest

from medal_core.screening.modality import ModalityCheck, fit_modality_check
from medal_core.screening.ood import image_statistics
from medal_core.stages.fit_screening import patient_split


def images_like(kind: str, n: int, rng) -> np.ndarray:
    """Dermoscopic-like: dark lesion on a reddish field; clinical-like: pale, flat skin."""
    base = (150, 90, 80) if kind == "dermoscopic" else (210, 180, 160)
    images = np.clip(rng.normal(base, 12, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    if kind == "dermoscopic":
        images[:, 10:22, 10:22] //= 3
    return images


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    derm_f = rng.normal(0, 1, (300, 8))
    clin_f = rng.normal(1.5, 1, (300, 8))
    keep_f = rng.normal(0, 1, (400, 8))
    keep_sources = np.array(["a"] * 300 + ["b"] * 100)
    keep_f[keep_sources == "b"] += 0.5  # source b looks a little more "clinical"
    check = fit_modality_check(
        (derm_f, image_statistics(images_like("dermoscopic", 300, rng))),
        (clin_f, image_statistics(images_like("clinical", 300, rng))),
        (keep_f, image_statistics(images_like("dermoscopic", 400, np.random.default_rng(0))), keep_sources),
    )
    return check, keep_f, keep_sources, rng


def test_the_limit_keeps_the_share_of_each_source_and_refuses_clinical_ones(fitted):
    check, keep_f, keep_sources, rng = fitted
    keep_images = images_like("dermoscopic", 400, np.random.default_rng(0))
    new_clinical = check.looks_dermoscopic(rng.normal(1.5, 1, (200, 8)), images_like("clinical", 200, rng))
    kept = check.looks_dermoscopic(keep_f, keep_images)
    for source in ("a", "b"):  # the limit is the largest of the per-source ones
        assert np.mean(kept[keep_sources == source]) >= 0.99
    assert np.mean(new_clinical) < 0.05
    scores = check.score(keep_f, keep_images)
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(check.score_statistics(keep_f, image_statistics(keep_images)), scores)


def test_the_check_survives_a_round_trip(fitted, tmp_path):
    check, keep_f, _, _ = fitted
    check.save(tmp_path / "m.npz")
    loaded = ModalityCheck.load(tmp_path / "m.npz")
    images = images_like("dermoscopic", 20, np.random.default_rng(3))
    np.testing.assert_allclose(loaded.score(keep_f[:20], images), check.score(keep_f[:20], images))
    assert loaded.limit == check.limit


def test_patient_split_keeps_each_patient_on_one_side(tmp_path):
    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "patient_id"])
        for i in range(60):
            writer.writerow([f"IMG{i}", f"PAT{i // 3}"])
    fit, held = patient_split(path)
    assert fit and held and not fit & held and len(fit | held) == 60
    for patient in range(20):
        members = {f"IMG{i}" for i in range(patient * 3, patient * 3 + 3)}
        assert members <= fit or members <= held
