"""The tf.data pipeline: uint8 images to float32 batches in [0, 1] (the project's pixel
convention), with the augmentation of the ADT reference code (random crop with 4-pixel zero
padding and horizontal flip for CIFAR, none for SVHN and MNIST), each epoch's order and
augmentation a function of the seed and the epoch (exact resumes)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adt_tf.core import checks


def as_unit_float(x) -> np.ndarray:
    """Images as float32 in the [0, 1] scale: uint8 pixels divided by 255, any other array
    cast to float32 with its values kept (the one place this conversion is written)."""
    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def unit_float_image(image: tf.Tensor) -> tf.Tensor:
    """`as_unit_float` inside a tf.data pipeline: uint8 pixels as float32 in [0, 1]."""
    return tf.cast(image, tf.float32) / 255.0


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in the [0, 1] scale."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return flat.mean(axis=0).tolist(), np.maximum(flat.std(axis=0), 1e-3).tolist()


def _crop_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad by 4 pixels, crop back at a random offset, flip left-right at random."""
    shape = tf.shape(image)
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cropped = tf.image.stateless_random_crop(padded, shape, seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(cropped, seed=seeds[1])


def _reshuffled_epochs(images, labels, batch_size: int, augment: str, seed: int):
    """One epoch, drawn anew on each pass: tf.data's seeded reshuffle for the order and a
    seeded random stream re-drawn on each pass for the augmentation."""
    n = int(images.shape[0])
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)

    def example(index, draw):
        image = unit_float_image(tf.gather(images, index))
        if augment == "crop_flip":
            image = _crop_flip(image, tf.stack([draw, index]))
        return image, tf.gather(labels, index)

    ds = tf.data.Dataset.zip((order, draws)).map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, training: bool,
                 augment: str = "none", seed: int = 0, first_epoch: int = 0,
                 num_epochs: int | None = None) -> tf.data.Dataset:
    """A tf.data pipeline of (float32 images in [0, 1], int32 labels) batches.

    For training there are two forms:
    - `num_epochs=None` (the default): one epoch, drawn anew on each pass over the dataset
      (tf.data's seeded reshuffling: `fit(ds, epochs=5)` sees five orders and five
      augmentations, the same ones in every process for the same seed);
    - `num_epochs=k`: the batches of epochs `first_epoch` .. `first_epoch + k - 1` follow
      one another (pass `steps_per_epoch` to `fit`), each epoch's order and augmentation a
      function of (`seed`, epoch number) alone, so a run resumed at epoch e sees exactly the
      batches an uninterrupted run sees from epoch e on (what `adt-train` uses).

    Args:
        x: uint8 images; y: integer labels.
        batch_size: examples per batch (an epoch's last batch may be smaller).
        training: shuffle (another order every epoch) and augment.
        augment: "crop_flip" (CIFAR) or "none"; used only when training.
        seed: seed of the order and of the augmentation.
        first_epoch, num_epochs: the epochs the training stream holds (see above).
    """
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    checks.check_choice(augment, "augmentation", ("crop_flip", "none"))
    if not training:
        ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
        ds = ds.map(lambda image, label: (unit_float_image(image), label),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if first_epoch < 0:
        raise ValueError(f"first_epoch must be >= 0, got {first_epoch}.")
    images, labels = tf.constant(x), tf.constant(y.astype(np.int32))
    n = len(x)
    if num_epochs is None:
        if first_epoch:
            raise ValueError("first_epoch applies to a stream of epochs: give num_epochs.")
        return _reshuffled_epochs(images, labels, batch_size, augment, int(seed))
    checks.check_positive_int(num_epochs, "num_epochs")
    run_key = tf.constant([int(seed) % 2**63, 0x5EED], tf.int64)

    def epoch_batches(epoch):
        keys = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(run_key, epoch), 2)
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=keys[0])

        def example(index, position):
            image = unit_float_image(tf.gather(images, index))
            if augment == "crop_flip":
                image = _crop_flip(image, tf.random.experimental.stateless_fold_in(
                    keys[1], position))
            return image, tf.gather(labels, index)

        ds = tf.data.Dataset.from_tensor_slices((order, tf.range(n)))
        return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

    epochs = tf.data.Dataset.range(first_epoch, first_epoch + num_epochs)
    return epochs.flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)
