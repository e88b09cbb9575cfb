"""tf.data input pipelines: decode → cache → (draw, shuffle, augment) → batch → prefetch.

Augmentation runs on training images only, one image at a time (each image draws its
own flip, quarter turn, crop and colour change), and is never part of a saved model.
With `cutmix`, a share of the training images also gets a box pasted from another image
of its batch (CutMix), its loss the area-weighted mix of the two images' losses.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from medal_core.data.datasets import Dataset, load_image

AUTOTUNE = tf.data.AUTOTUNE

# Training images are decoded a little larger than the model's input, so that a random
# crop at full scale is the whole image, resized as at evaluation.
CROP_MARGIN = 256 / 224
# Random resized crop: area share and aspect ratio of the crop (as torchvision's, but
# milder: a lesion must stay in view).
CROP_AREA = (0.6, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
# Colour jitter on the 0-1 scale: dermatoscopes and cameras differ in white balance,
# exposure and saturation.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.1, 0.2, 0.2, 0.03


def _seed(rng: tf.random.Generator) -> tf.Tensor:
    """A fresh (2,) seed for a stateless random op, drawn from `rng`."""
    return rng.make_seeds(1)[:, 0]


def random_dihedral(image: tf.Tensor, rng: tf.random.Generator) -> tf.Tensor:
    """One of the 8 rotations/mirror images of an (s, s, c) image, uniformly at random.

    Keras' RandomFlip("horizontal_and_vertical") flips both axes together or neither
    (never a mirror image) and a per-batch quarter turn turns every image of a batch
    alike: lesions have no canonical orientation, so each image draws its own view.
    """
    turns = rng.uniform([], maxval=4, dtype=tf.int32)
    mirror = rng.uniform([]) < 0.5
    image = tf.image.rot90(image, k=turns)
    return tf.cond(mirror, lambda: tf.image.flip_left_right(image), lambda: image)


def random_resized_crop(image: tf.Tensor, size: int, rng: tf.random.Generator) -> tf.Tensor:
    """A random crop (area share in CROP_AREA, aspect in CROP_ASPECT) of an (s, s, 3)
    image, resized to (size, size, 3) float32 with antialiasing."""
    side = tf.cast(tf.shape(image)[0], tf.float32)
    area = rng.uniform([], *CROP_AREA)
    aspect = tf.exp(rng.uniform([], np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1])))
    height = tf.cast(tf.minimum(side, side * tf.sqrt(area / aspect)), tf.int32)
    width = tf.cast(tf.minimum(side, side * tf.sqrt(area * aspect)), tf.int32)
    top = rng.uniform([], maxval=tf.shape(image)[0] - height + 1, dtype=tf.int32)
    left = rng.uniform([], maxval=tf.shape(image)[1] - width + 1, dtype=tf.int32)
    crop = tf.image.crop_to_bounding_box(image, top, left, height, width)
    return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)


def random_colour(image: tf.Tensor, rng: tf.random.Generator) -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter of a float (s, s, 3) image in
    0-255; the result stays in 0-255."""
    unit = image / 255.0
    unit = tf.image.stateless_random_brightness(unit, BRIGHTNESS, _seed(rng))
    unit = tf.image.stateless_random_contrast(unit, 1 - CONTRAST, 1 + CONTRAST, _seed(rng))
    unit = tf.image.stateless_random_saturation(unit, 1 - SATURATION, 1 + SATURATION, _seed(rng))
    unit = tf.image.stateless_random_hue(unit, HUE, _seed(rng))
    return tf.clip_by_value(unit, 0.0, 1.0) * 255.0


def augment_image(image: tf.Tensor, size: int, rng: tf.random.Generator) -> tf.Tensor:
    """The whole training augmentation of one uint8 (s, s, 3) image → float32 (size, size, 3)."""
    image = random_resized_crop(random_dihedral(image, rng), size, rng)
    return random_colour(image, rng)


def cutmix_batch(
    images: tf.Tensor,
    labels: tf.Tensor,
    weights: tf.Tensor,
    probability: float,
    rng: tf.random.Generator,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """CutMix on one batch: images (n, s, s, 3), labels (n, 1) and sample weights (n,).

    With `probability`, image i gets a box of image i+1's pasted in (the batch rolled by
    one, so no image is its own partner when n > 1). The box's area share is drawn
    uniformly from 0-1 (CutMix's Beta(1, 1)) before it is clipped at the border; what
    counts is the area actually pasted, `share`. The sample's loss is then the mix of
    the two images' weighted losses, (1 - share) * w_i * BCE(y_i) + share * w_j * BCE(y_j),
    which, binary cross-entropy being linear in the label, is one weighted loss
    W * BCE(y) with W = (1 - share) * w_i + share * w_j and
    y = ((1 - share) * w_i * y_i + share * w_j * y_j) / W. Mixing the label by weight
    too keeps the class weights' logit offset the same as without CutMix, which the
    calibration stage removes before fitting the temperature.
    """
    n, side = tf.shape(images)[0], tf.shape(images)[1]
    side_f = tf.cast(side, tf.float32)
    mixed = rng.uniform([n]) < probability
    box_side = tf.sqrt(rng.uniform([n])) * side_f  # area share before clipping: uniform
    centre_y, centre_x = rng.uniform([n]) * side_f, rng.uniform([n]) * side_f
    top = tf.clip_by_value(centre_y - box_side / 2, 0.0, side_f)
    bottom = tf.clip_by_value(centre_y + box_side / 2, 0.0, side_f)
    left = tf.clip_by_value(centre_x - box_side / 2, 0.0, side_f)
    right = tf.clip_by_value(centre_x + box_side / 2, 0.0, side_f)
    grid = tf.cast(tf.range(side), tf.float32) + 0.5  # pixel centres
    rows = (grid[None, :] >= top[:, None]) & (grid[None, :] < bottom[:, None])  # (n, s)
    cols = (grid[None, :] >= left[:, None]) & (grid[None, :] < right[:, None])
    box = rows[:, :, None] & cols[:, None, :] & mixed[:, None, None]  # (n, s, s)
    share = tf.reduce_mean(tf.cast(box, tf.float32), axis=[1, 2])  # (n,), area pasted
    partner = functools.partial(tf.roll, shift=-1, axis=0)  # image i+1 (the first for the last)
    images = tf.where(box[..., None], partner(images), images)
    own_part, partner_part = (1 - share) * weights, share * partner(weights)
    mixed_weights = own_part + partner_part
    labels = tf.math.divide_no_nan(
        own_part[:, None] * labels + partner_part[:, None] * partner(labels), mixed_weights[:, None]
    )
    return images, labels, mixed_weights


def make_pipeline(
    dataset: Dataset,
    image_size: int,
    batch_size: int = 32,
    training: bool = False,
    seed: int = 0,
    draw_probability: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    cutmix: float = 0.0,
) -> tf.data.Dataset:
    """Batches of (images float32 (n, s, s, 3) in 0–255, labels float32 (n, 1)[, weights (n,)]).

    Decoding goes through `data.load_image` (the app's decoder), cached in memory after
    the first pass. With `training=True` the order is reshuffled every epoch, each image
    is augmented on its own, and image i takes part in an epoch with probability
    `draw_probability[i]` (default 1): a source can count for less without being
    dropped. `sample_weights` (n,), when given, is yielded as a third element (e.g.
    class weights). `cutmix` > 0 (training only) applies `cutmix_batch` with that
    probability per image; labels are then soft (0-1) and weights are yielded (1 when
    none are given).
    """
    if cutmix and not training:
        raise ValueError("cutmix is a training augmentation: give training=True")
    if not 0.0 <= cutmix <= 1.0:
        raise ValueError(f"cutmix is a probability per image, in 0-1; got {cutmix}")
    if cutmix and sample_weights is None:
        sample_weights = np.ones(len(dataset), np.float32)
    load_size = int(round(image_size * CROP_MARGIN)) if training else image_size

    def decode(path):
        return load_image(path.decode(), load_size)

    def decode_tf(path, *rest):
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        image.set_shape((load_size, load_size, 3))
        return (image, *rest)

    labels = dataset.labels.astype(np.float32).reshape(-1, 1)
    draw = (
        np.ones(len(dataset), np.float32)
        if draw_probability is None
        else np.asarray(draw_probability, np.float32)
    )
    columns = [dataset.paths, labels, draw]
    if sample_weights is not None:
        columns.append(np.asarray(sample_weights, np.float32))
    pipeline = tf.data.Dataset.from_tensor_slices(tuple(columns))
    pipeline = pipeline.map(decode_tf, num_parallel_calls=AUTOTUNE).cache()
    if training:
        # One generator for the pipeline's whole life: its state lives on across epochs,
        # so every epoch draws new augmentations (op-level random seeds would restart the
        # same sequence with each new iterator, i.e. each epoch).
        rng = tf.random.Generator.from_seed(seed)
        pipeline = pipeline.shuffle(len(dataset), seed=seed, reshuffle_each_iteration=True)
        pipeline = pipeline.filter(lambda image, label, p, *w: rng.uniform([]) < p)
        pipeline = pipeline.map(
            lambda image, label, p, *w: (augment_image(image, image_size, rng), label, *w),
            num_parallel_calls=AUTOTUNE,
        )
    else:
        pipeline = pipeline.map(
            lambda image, label, p, *w: (tf.cast(image, tf.float32), label, *w), num_parallel_calls=AUTOTUNE
        )
    pipeline = pipeline.batch(batch_size)
    if cutmix:
        pipeline = pipeline.map(
            lambda images, labels, weights: cutmix_batch(images, labels, weights, cutmix, rng),
            num_parallel_calls=AUTOTUNE,
        )
    return pipeline.prefetch(AUTOTUNE)


def expected_batches(draw_probability: np.ndarray, batch_size: int) -> int:
    """Batches per epoch on average when image i is drawn with `draw_probability[i]`."""
    return max(1, int(np.ceil(float(np.sum(draw_probability)) / batch_size)))
