"""The out-of-distribution maths: Mahalanobis distances with Ledoit–Wolf shrinkage, the
image statistics, the detector (larger of two distance/limit ratios), the per-check
keep-share limits and the non-lesion test images. The screen built on them, and the
committed one's figures, are tested in test_screen.py."""

from dataclasses import replace

import numpy as np
import pytest
from app_helpers import synthetic_lesion

from medal_core.screening import ood
from medal_core.screening.ood import FeatureDistribution, OODDetector, image_statistics, threshold_keeping
from medal_core.stages.non_lesion_pictures import sample_photographs, synthetic_non_lesion_images


def gaussian(n: int, d: int = 6, seed: int = 0, shift: float = 0.0):
    """Correlated Gaussian features with a known mean and covariance."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)
    mean = np.linspace(-1, 1, d)
    return mean + shift + rng.normal(size=(n, d)) @ mixing.T, mean, mixing @ mixing.T


# ---------------------------------------------------------------- FeatureDistribution


def test_distance_is_small_in_distribution_and_large_when_shifted():
    features, mean, covariance = gaussian(2000)
    distribution = FeatureDistribution.fit(features)
    assert distribution.mean.shape == (6,) and distribution.precision.shape == (6, 6)
    assert distribution.mean.dtype == distribution.precision.dtype == np.float32
    np.testing.assert_allclose(distribution.mean, features.mean(axis=0), atol=1e-5)
    assert distribution.distance(distribution.mean[None])[0] == pytest.approx(0.0, abs=1e-3)

    inside = distribution.distance(gaussian(500, seed=1)[0])
    shifted = distribution.distance(gaussian(500, seed=2, shift=3.0)[0])
    assert inside.shape == shifted.shape == (500,)
    assert np.all(inside >= 0)
    # Squared Mahalanobis distances of in-distribution samples follow chi²(d): mean d.
    assert np.mean(inside**2) == pytest.approx(6, rel=0.15)
    assert np.median(inside) < np.median(shifted)
    assert np.quantile(inside, 0.95) < np.quantile(shifted, 0.05)
    # Close to the distance under the true covariance (shrinkage is mild at n >> d).
    centred = gaussian(500, seed=1)[0] - mean
    exact = np.sqrt(np.einsum("nd,de,ne->n", centred, np.linalg.inv(covariance), centred))
    np.testing.assert_allclose(inside, exact, rtol=0.1, atol=0.1)


def test_ledoit_wolf_copes_with_fewer_samples_than_dimensions():
    features = np.random.default_rng(0).normal(size=(10, 50))
    assert np.linalg.matrix_rank(np.cov(features, rowvar=False)) < 50  # singular
    distribution = FeatureDistribution.fit(features)
    assert np.all(np.isfinite(distribution.precision))
    assert np.linalg.eigvalsh(distribution.precision.astype(np.float64)).min() > 0
    distances = distribution.distance(np.random.default_rng(1).normal(size=(20, 50)))
    assert np.all(np.isfinite(distances)) and np.all(distances > 0)
    assert distribution.distance(features).mean() < distances.mean()


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((1, 5)), np.zeros((2, 3, 4))])
def test_fit_refuses_unusable_features(bad):
    with pytest.raises(ValueError, match="features"):
        FeatureDistribution.fit(bad)


@pytest.mark.parametrize("n", [1, 7, 40, 41, 100, 999])
@pytest.mark.parametrize("share", [0.5, 0.9, 0.975, 1.0])
def test_threshold_keeping_keeps_at_least_the_share_and_no_more_than_needed(n, share):
    distances = np.random.default_rng(n).exponential(size=n)
    limit = threshold_keeping(distances, share)
    assert np.mean(distances <= limit) >= share
    kept = np.sort(distances[distances <= limit])
    if len(kept) > 1:  # a limit below the last kept distance would keep too few
        assert np.mean(distances <= kept[-2]) < share
    # Midway to the next distance: no kept image sits on the limit.
    above = distances[distances > limit]
    if len(above):
        assert limit == pytest.approx((kept[-1] + above.min()) / 2)
        assert min(limit - kept[-1], above.min() - limit) > 0
    assert threshold_keeping(distances) == threshold_keeping(distances, ood.KEEP_SHARE)


def test_keep_each_check_loses_at_most_half_of_what_both_may_lose():
    assert ood.KEEP_EACH == pytest.approx(0.9875)
    assert 2 * (1 - ood.KEEP_EACH) == pytest.approx(1 - ood.KEEP_SHARE)


# ---------------------------------------------------------------- image statistics


def lesions(seeds, size: int = 64) -> np.ndarray:
    """Textured, dermoscopy-like synthetic lesions, uint8 (n, size, size, 3)."""
    return np.stack([synthetic_lesion(seed, size) for seed in seeds])


def test_image_statistics_are_nine_finite_figures_per_image():
    rng = np.random.default_rng(0)
    images = np.concatenate(
        [
            lesions(range(3)),
            np.zeros((1, 64, 64, 3), np.uint8),  # black: no contrast at all
            np.full((1, 64, 64, 3), 255, np.uint8),  # white
            rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),  # noise
        ]
    )
    statistics = image_statistics(images)
    assert statistics.shape == (7, 9) and statistics.dtype == np.float32
    assert np.all(np.isfinite(statistics))
    # The first three are the mean colour in [0, 1]; flat images have no contrast,
    # edges or colourfulness beyond their mean colour's.
    np.testing.assert_allclose(statistics[:, :3], images.mean(axis=(1, 2)) / 255, atol=1e-5)
    np.testing.assert_array_equal(statistics[3], np.zeros(9))
    np.testing.assert_allclose(statistics[4, :3], 1.0)
    np.testing.assert_array_equal(statistics[4, 3:8], np.zeros(5))
    assert np.all(statistics[5:, 3:8] > statistics[:3, 3:8].max(axis=0))  # noise: busiest
    assert image_statistics(images[:1]).shape == (1, 9)
    np.testing.assert_array_equal(image_statistics(images[:1]), statistics[:1])


def test_flat_images_and_noise_have_statistics_far_from_textured_lesions():
    distribution = FeatureDistribution.fit(image_statistics(lesions(range(80))))
    held_out = distribution.distance(image_statistics(lesions(range(100, 140))))
    rng = np.random.default_rng(0)
    strangers = {
        "flat_skin": np.full((64, 64, 3), (224, 172, 140), np.uint8),
        "flat_grey": np.full((64, 64, 3), 128, np.uint8),
        "noise_uniform": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
    }
    far = distribution.distance(image_statistics(np.stack(list(strangers.values()))))
    # Unseen lesions stay near (a few units); the others are more than ten times farther.
    assert held_out.max() < 10
    assert np.all(far > 10 * held_out.max()), dict(zip(strangers, far))


# ---------------------------------------------------------------- OODDetector


def hand_made_detector(feature_limit: float = 2.0, statistics_limit: float = 4.0) -> OODDetector:
    """Identity precisions: the distances are Euclidean, from zero features and from the
    statistics of a flat mid-grey image."""
    grey_statistics = image_statistics(np.full((1, 16, 16, 3), 128, np.uint8))[0]
    return OODDetector(
        FeatureDistribution(np.zeros(3, np.float32), np.eye(3, dtype=np.float32)),
        FeatureDistribution(grey_statistics, np.eye(9, dtype=np.float32)),
        feature_limit,
        statistics_limit,
    )


def test_detector_score_is_the_larger_of_the_two_distance_ratios():
    detector = hand_made_detector(feature_limit=2.0, statistics_limit=4.0)
    rng = np.random.default_rng(3)
    images = np.concatenate(
        [
            np.full((2, 16, 16, 3), 128, np.uint8),  # statistics at 0
            rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
        ]
    )
    features = np.array([[0, 0, 0], [6, 0, 0], [0, 0, 0], [0.5, 0, 0], [30, 40, 0], [0, 0, 0]], np.float32)
    scores = detector.score(features, images)
    by_features = np.linalg.norm(features, axis=1) / 2.0
    by_statistics = np.linalg.norm(image_statistics(images) - detector.statistics.mean, axis=1) / 4.0
    assert scores.shape == (6,)
    np.testing.assert_allclose(scores, np.maximum(by_features, by_statistics), rtol=1e-5, atol=1e-6)
    assert scores[0] == pytest.approx(0.0, abs=1e-6)  # at both means
    assert scores[1] == pytest.approx(3.0, rel=1e-5)  # features alone decide
    assert by_statistics[3] > by_features[3] and scores[3] == pytest.approx(by_statistics[3], rel=1e-5)
    assert by_features[4] > by_statistics[4] and scores[4] == pytest.approx(25.0, rel=1e-5)
    # Each limit scales its own ratio only.
    wider = replace(detector, statistics_limit=8.0).score(features, images)
    np.testing.assert_allclose(wider, np.maximum(by_features, by_statistics / 2), rtol=1e-5, atol=1e-6)


def test_detector_arrays_round_trip(tmp_path):
    detector = OODDetector(
        FeatureDistribution.fit(gaussian(100)[0]),
        FeatureDistribution.fit(image_statistics(lesions(range(30), 32))),
        3.25,
        4.5,
    )
    np.savez(tmp_path / "detector.npz", **detector.arrays())
    with np.load(tmp_path / "detector.npz") as stored:
        loaded = OODDetector.from_arrays(stored)
    for part in ("features", "statistics"):
        np.testing.assert_array_equal(getattr(loaded, part).mean, getattr(detector, part).mean)
        np.testing.assert_array_equal(getattr(loaded, part).precision, getattr(detector, part).precision)
    assert (loaded.feature_limit, loaded.statistics_limit) == (3.25, 4.5)
    assert isinstance(loaded.feature_limit, float) and isinstance(loaded.statistics_limit, float)
    probe_features, probe_images = gaussian(7, seed=3)[0], lesions(range(200, 207), 32)
    np.testing.assert_array_equal(
        loaded.score(probe_features, probe_images), detector.score(probe_features, probe_images)
    )


# ---------------------------------------------------------------- non-lesion images


def test_synthetic_non_lesion_images_are_seeded_rgb_pictures():
    images = synthetic_non_lesion_images(64, seed=1)
    assert len(images) == 16
    assert {name.split("_")[0] for name in images} == {"flat", "noise", "text", "screenshot"}
    for image in images.values():
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    again = synthetic_non_lesion_images(64, seed=1)
    assert all(np.array_equal(images[k], again[k]) for k in images)


def test_sample_photographs_are_rgb_at_the_asked_size():
    photos = sample_photographs(48)
    assert len(photos) >= 15
    for image in photos.values():
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
