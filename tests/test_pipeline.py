"""tf.data pipelines: shapes, dtypes, resizing, and augmentation on training batches only."""

import numpy as np
import pytest
import tensorflow as tf
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


def cutmix_once(values, labels, weights, probability=0.5, seed=5, side=16):
    """`cutmix_batch` on flat images, image i of grey level values[i]; NumPy out."""
    n = len(values)
    images = np.broadcast_to(np.asarray(values, np.float32)[:, None, None, None], (n, side, side, 3))
    outputs = pipeline.cutmix_batch(
        tf.constant(images.copy()),
        tf.constant(np.asarray(labels, np.float32)[:, None]),
        tf.constant(np.asarray(weights, np.float32)),
        probability,
        tf.random.Generator.from_seed(seed),
    )
    return tuple(t.numpy() for t in outputs)


@pytest.mark.parametrize("n", [63, 64])
def test_cutmix_pastes_one_box_of_the_next_image_and_mixes_the_two_losses(n):
    """Flat images of distinct grey levels: a mixed image holds its own level and its
    partner's (the next image's) only, the partner's pixels form one rectangle, and
    weight and label are those of the mixed loss (1-s)·w_i·BCE(y_i) + s·w_j·BCE(y_j)."""
    values = np.arange(n, dtype=np.float32) * 4  # 0, 4, ..., distinct levels
    labels = (np.arange(n) % 3 == 0).astype(np.float32)
    weights = np.where(labels > 0, 4.0, 1.0)
    mixed, got_labels, got_weights = cutmix_once(values, labels, weights)

    changed = 0
    for i in range(n):
        j = (i + 1) % n  # the partner
        pasted = mixed[i, :, :, 0] != values[i]
        assert set(np.unique(mixed[i])) <= {values[i], values[j]}
        share = pasted.mean()
        if share:
            changed += 1
            rows, cols = np.nonzero(pasted.any(axis=1))[0], np.nonzero(pasted.any(axis=0))[0]
            assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # one box
        own, other = (1 - share) * weights[i], share * weights[j]
        assert got_weights[i] == pytest.approx(own + other, abs=1e-5)
        assert got_labels[i, 0] == pytest.approx(
            (own * labels[i] + other * labels[j]) / (own + other), abs=1e-6
        )
    assert n / 4 <= changed <= 3 * n / 4  # about half the images, at probability 0.5


def test_cutmix_keeps_the_class_weighted_optimum_of_the_unmixed_loss():
    """With the weighted label, a benign image carrying a fraction s of a melanoma (class
    weight w) is best predicted at odds w·s / (1 - s): the class weights' logit offset,
    log w, as without CutMix (the calibration stage removes it)."""
    values, labels, weights = [0.0, 255.0], [0.0, 1.0], [1.0, 5.0]
    mixed, got_labels, _ = cutmix_once(values, labels, weights, probability=1.0, seed=3, side=32)
    share = (mixed[0, :, :, 0] != 0).mean()
    assert 0 < share < 1
    odds = got_labels[0, 0] / (1 - got_labels[0, 0])
    assert odds == pytest.approx(5.0 * share / (1 - share), rel=1e-4)


def test_a_batch_of_one_is_left_as_it_is():
    mixed, labels, weights = cutmix_once([8.0], [1.0], [3.0], probability=1.0)
    assert (mixed == 8.0).all() and labels[0, 0] == pytest.approx(1.0) and weights[0] == pytest.approx(3.0)


def test_cutmix_in_the_training_pipeline_yields_soft_labels_and_mixed_weights(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", value=0 if i % 2 else 250)) for i in range(16)]
    dataset = data.Dataset(np.array(paths), np.array([0, 1] * 8, np.int32), np.array([""] * 16))
    weights = np.where(dataset.labels == 1, 3.0, 1.0)
    training = pipeline.make_pipeline(
        dataset, 8, batch_size=16, training=True, seed=2, sample_weights=weights, cutmix=1.0
    )
    batches = [(y.numpy(), w.numpy()) for _ in range(3) for _, y, w in training]
    labels = np.concatenate([y for y, _ in batches])
    got_weights = np.concatenate([w for _, w in batches])
    assert ((labels > 0) & (labels < 1)).any()  # some labels mixed
    assert labels.min() >= 0 and labels.max() <= 1
    assert ((got_weights > 1) & (got_weights < 3)).any() and got_weights.min() >= 1 and got_weights.max() <= 3
    unweighted = pipeline.make_pipeline(dataset, 8, batch_size=16, training=True, seed=2, cutmix=1.0)
    assert all(len(batch) == 3 for batch in unweighted)  # weights of 1 come along


@pytest.mark.parametrize("kwargs", [{"cutmix": 0.5}, {"cutmix": 1.5, "training": True}])
def test_cutmix_is_refused_outside_training_or_outside_0_1(non_square_dataset, kwargs):
    with pytest.raises(ValueError, match="cutmix"):
        pipeline.make_pipeline(non_square_dataset, SIZE, **kwargs)
