"""tf.data pipelines: shapes, dtypes, resizing, and augmentation on training batches only."""

import numpy as np
import pytest
from helpers import write_image

from medal_core.data import datasets as data
from medal_core.data import pipeline

SIZE = 24


def as_arrays(tf_dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in tf_dataset])
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture
def non_square_dataset(tmp_path):
    """Five distinct noise images of 40×24 and 24×40 pixels, PNG and JPEG."""
    paths = [
        write_image(
            tmp_path / f"img{i}{'.png' if i % 2 else '.jpg'}", size=(40, 24) if i % 2 else (24, 40), seed=i
        )
        for i in range(5)
    ]
    return data.Dataset(
        np.array([str(p) for p in paths]), np.array([0, 1, 0, 1, 1], np.int32), np.array([""] * 5)
    )


@pytest.fixture
def identical_images_dataset(tmp_path):
    """Four copies of one asymmetric image: any difference between passes is augmentation,
    not shuffling."""
    path = write_image(tmp_path / "same.png", size=(32, 32), seed=42)
    return data.Dataset(np.array([str(path)] * 4), np.array([0, 1, 0, 1], np.int32), np.array([""] * 4))


def test_evaluation_batches_have_the_documented_shapes_and_dtypes(non_square_dataset):
    batches = list(pipeline.make_pipeline(non_square_dataset, SIZE, batch_size=2))
    assert [len(x) for x, _ in batches] == [2, 2, 1]
    images, labels = as_arrays(pipeline.make_pipeline(non_square_dataset, SIZE, batch_size=2))
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.float32
    assert labels.shape == (5, 1) and labels.dtype == np.float32
    np.testing.assert_array_equal(labels[:, 0], [0, 1, 0, 1, 1])
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 1  # 0–255, not 0–1


def test_evaluation_pipeline_decodes_with_load_image_in_order(non_square_dataset):
    images, _ = as_arrays(pipeline.make_pipeline(non_square_dataset, SIZE, batch_size=3))
    expected = data.load_images(non_square_dataset.paths, SIZE).astype(np.float32)
    np.testing.assert_array_equal(images, expected)


def test_evaluation_pipeline_is_deterministic(non_square_dataset):
    ds = pipeline.make_pipeline(non_square_dataset, SIZE, batch_size=2)
    first, _ = as_arrays(ds)
    second, _ = as_arrays(ds)
    np.testing.assert_array_equal(first, second)


def test_training_batches_are_augmented_and_stay_in_range(identical_images_dataset):
    plain, _ = as_arrays(pipeline.make_pipeline(identical_images_dataset, SIZE, batch_size=4))
    training = pipeline.make_pipeline(identical_images_dataset, SIZE, batch_size=4, training=True, seed=1)
    first, labels = as_arrays(training)
    second, _ = as_arrays(training)

    for augmented in (first, second):
        assert augmented.shape == (4, SIZE, SIZE, 3) and augmented.dtype == np.float32
        assert augmented.min() >= 0.0 and augmented.max() <= 255.0
        assert np.abs(augmented - plain).mean() > 1.0
    assert np.abs(first - second).mean() > 1.0, "every epoch must see new augmentations"
    assert sorted(labels[:, 0]) == [0, 0, 1, 1]


def test_training_pipeline_reshuffles_every_epoch(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", value=i * 10)) for i in range(12)]
    dataset = data.Dataset(np.array(paths), np.array([0, 1] * 6, np.int32), np.array([""] * 12))
    training = pipeline.make_pipeline(dataset, 8, batch_size=12, training=True, seed=0)
    orders = [tuple(labels[:, 0]) for _, labels in (as_arrays(training) for _ in range(4))]
    assert len(set(orders)) > 1


def test_each_image_draws_its_own_view_among_all_eight():
    """Keras' RandomFlip("horizontal_and_vertical") never mirrors (both axes or none) and
    a per-batch quarter turn turns a whole batch alike: each image must draw one of the 8
    dihedral views itself, all of them about equally often."""
    import tensorflow as tf

    image = np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3)  # no symmetry
    expected = {
        np.ascontiguousarray(v).tobytes()
        for k in range(4)
        for v in (np.rot90(image, k), np.fliplr(np.rot90(image, k)))
    }
    assert len(expected) == 8
    rng = tf.random.Generator.from_seed(7)
    views = [
        v.numpy().tobytes()
        for v in tf.data.Dataset.from_tensors(image)
        .repeat(800)
        .map(lambda x: pipeline.random_dihedral(x, rng))
    ]
    counts = {view: views.count(view) for view in set(views)}
    assert set(counts) == expected
    assert min(counts.values()) > 60  # ~100 each; under 61 has p < 1e-4


def test_a_training_batch_mixes_orientations(identical_images_dataset):
    """Within one batch, copies of the same image come out in different views."""
    training = pipeline.make_pipeline(identical_images_dataset, SIZE, batch_size=4, training=True, seed=3)
    distinct = [
        len({np.round(x, 0).tobytes() for x in batch.numpy()})
        for batch, _ in (next(iter(training)) for _ in range(5))
    ]
    assert max(distinct) > 1


def test_draw_probability_thins_a_source_per_epoch(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", value=i * 2)) for i in range(100)]
    dataset = data.Dataset(np.array(paths), np.array([0, 1] * 50, np.int32), np.array([""] * 100))
    draw = np.where(np.arange(100) < 50, 1.0, 0.2)
    training = pipeline.make_pipeline(
        dataset, 8, batch_size=100, training=True, seed=0, draw_probability=draw
    )
    sizes = [len(labels) for _ in range(10) for _, labels in training]
    assert 50 + 3 <= np.mean(sizes) <= 50 + 17  # 50 always + ~10 of the other 50
    assert pipeline.expected_batches(draw, 32) == 2  # 60 images on average


def test_sample_weights_ride_along_as_a_third_element(non_square_dataset):
    weights = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    batches = list(pipeline.make_pipeline(non_square_dataset, SIZE, batch_size=5, sample_weights=weights))
    ((_, labels, got),) = batches
    np.testing.assert_array_equal(got.numpy(), weights)


def test_cutmix_pastes_a_box_of_the_partner_and_mixes_label_and_weight_by_its_area():
    """Two flat images, 0 and 255: every pixel of a mixed image is one of the two, the
    255 pixels form one rectangle, and label and weight move by exactly their share."""
    import tensorflow as tf

    n, side = 64, 16
    values = np.where(np.arange(n) < n // 2, 0.0, 255.0).astype(np.float32)
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (n, side, side, 3)).copy())
    labels = tf.constant((values > 0).astype(np.float32)[:, None])
    weights = tf.constant(np.where(values > 0, 4.0, 1.0).astype(np.float32))
    rng = tf.random.Generator.from_seed(5)
    outputs = pipeline.cutmix_batch(images, labels, weights, 0.5, rng)
    mixed, got_labels, got_weights = (t.numpy() for t in outputs)

    assert set(np.unique(mixed)) <= {0.0, 255.0}
    changed = 0
    for i in range(n):
        partner = n - 1 - i
        own = values[i]
        pasted = mixed[i, :, :, 0] != own
        share = pasted.mean()
        if share:
            changed += 1
            rows, cols = np.nonzero(pasted.any(axis=1))[0], np.nonzero(pasted.any(axis=0))[0]
            assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # one box
            assert values[partner] != own  # the pasted pixels are the partner's
        partner_label = float(values[partner] > 0)
        expected_label = (1 - share) * float(own > 0) + share * partner_label
        assert got_labels[i, 0] == pytest.approx(expected_label, abs=1e-6)
        expected_weight = (1 - share) * (4.0 if own else 1.0) + share * (4.0 if values[partner] else 1.0)
        assert got_weights[i] == pytest.approx(expected_weight, abs=1e-5)
    assert 16 <= changed <= 48  # about half the images, at probability 0.5


def test_cutmix_in_the_training_pipeline_yields_soft_labels_and_weights(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", value=0 if i % 2 else 250)) for i in range(16)]
    dataset = data.Dataset(np.array(paths), np.array([0, 1] * 8, np.int32), np.array([""] * 16))
    training = pipeline.make_pipeline(dataset, 8, batch_size=16, training=True, seed=2, cutmix=1.0)
    labels = np.concatenate([y.numpy() for _ in range(3) for _, y, _ in training])
    assert ((labels > 0) & (labels < 1)).any()  # some labels mixed
    assert labels.min() >= 0 and labels.max() <= 1


@pytest.mark.parametrize("kwargs", [{"cutmix": 0.5}, {"cutmix": 1.5, "training": True}])
def test_cutmix_is_refused_outside_training_or_outside_0_1(non_square_dataset, kwargs):
    with pytest.raises(ValueError, match="cutmix"):
        pipeline.make_pipeline(non_square_dataset, SIZE, **kwargs)
