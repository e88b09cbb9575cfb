"""tf.data input pipelines: decode → resize → cache → shuffle → batch → augment → prefetch.

Augmentation runs on training batches only and is never part of a saved model.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from medal_core.data import Dataset, load_image

AUTOTUNE = tf.data.AUTOTUNE


def make_augmenter(seed: int = 0) -> keras.Sequential:
    """Random flips, rotation (±10% of a turn), zoom (±10%) and contrast, as in MedAL,
    plus a random quarter turn and mild brightness/saturation jitter: lesions have no
    canonical orientation and dermatoscopes differ in colour."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(0.1, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomContrast(0.2, seed=seed + 3),
            keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 4),
        ],
        name="augmentation",
    )


def random_quarter_turns(images: tf.Tensor) -> tf.Tensor:
    """Rotate a (n, s, s, 3) batch by one random multiple of 90°."""
    return tf.image.rot90(images, k=tf.random.uniform([], maxval=4, dtype=tf.int32))


def make_pipeline(dataset: Dataset, image_size: int, batch_size: int = 32,
                  training: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of (images float32 (n, s, s, 3) in 0–255, labels float32 (n, 1)).

    Decoding goes through `data.load_image` (Pillow), cached in memory after the first
    pass. With `training=True` the order is reshuffled every epoch and batches are
    augmented.
    """
    def decode(path):
        return load_image(path.decode(), image_size)

    def decode_tf(path, label):
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        image.set_shape((image_size, image_size, 3))
        return image, label

    labels = dataset.labels.astype(np.float32).reshape(-1, 1)
    pipeline = tf.data.Dataset.from_tensor_slices((dataset.paths, labels))
    pipeline = pipeline.map(decode_tf, num_parallel_calls=AUTOTUNE).cache()
    if training:
        pipeline = pipeline.shuffle(len(dataset), seed=seed, reshuffle_each_iteration=True)
    pipeline = pipeline.batch(batch_size)
    pipeline = pipeline.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)
    if training:
        augmenter = make_augmenter(seed)

        def augment(images, y):
            augmented = augmenter(random_quarter_turns(images), training=True)
            return tf.clip_by_value(augmented, 0.0, 255.0), y

        pipeline = pipeline.map(augment, num_parallel_calls=1)
    return pipeline.prefetch(AUTOTUNE)
