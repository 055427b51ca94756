"""Where the methods' random draws come from: a stateless seed by default, recorded draws in tests.

Every random draw a training method makes goes through its `noise_source` (a `NoiseSource`):
the standard-normal noise of ADT_EXP and ADT_EXP-AM, the uniform z of ADT_IMP-AM, the uniform
random starts of AT_PGD, ALP, FastAT and FeaScatter, TRADES's Gaussian start and FGSM-AT's
random budgets. The default,
`SeededNoise`, is a plain stateless TensorFlow draw from the seed the method passes, so it
costs nothing beyond the draw itself. `RecordedNoise` hands out given arrays in the order
they are asked for, which lets a test replay the exact draws of another implementation (the
authors' PyTorch code in `tests/data/adt_reference.npz`) through the project's own training
steps. `as_seed` and `fold` make and derive the stateless seeds every layer passes around.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class NoiseSource:
    """The interface: standard-normal and uniform draws of a given shape.

    Args of both methods: `shape` (a list or 1-D tensor), `seed` (a stateless seed, int
    tensor [2]), `dtype`.
    """

    def normal(self, shape, seed, dtype=tf.float32) -> tf.Tensor:
        raise NotImplementedError

    def uniform(self, shape, seed, minval: float, maxval: float,
                dtype=tf.float32) -> tf.Tensor:
        raise NotImplementedError

    def truncated_normal(self, shape, seed, dtype=tf.float32) -> tf.Tensor:
        """A standard normal truncated to [-2, 2]."""
        raise NotImplementedError


class SeededNoise(NoiseSource):
    """Stateless draws from the seed (the default of every method): a fixed seed gives fixed
    numbers, in eager mode, under `tf.function` and on every replica alike."""

    def normal(self, shape, seed, dtype=tf.float32):
        return tf.random.stateless_normal(shape, seed, dtype=dtype)

    def uniform(self, shape, seed, minval, maxval, dtype=tf.float32):
        return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype)

    def truncated_normal(self, shape, seed, dtype=tf.float32):
        return tf.random.stateless_truncated_normal(shape, seed, dtype=dtype)


class RecordedNoise(NoiseSource):
    """Replays recorded draws in the order they are asked for (for tests).

    Each call to `normal(shape, ...)` takes the next prod(shape) values of the recorded
    normal draws (flattened row-major, as the methods flatten an image: a draw of k samples
    takes k whole rows of an array recorded per sample) and reshapes them to `shape`;
    `uniform` does the same with the uniform draws (the recorded values are returned as
    they are: minval and maxval only document the draw). A call past the end raises.
    The position is a variable, so the order holds in eager mode and under `tf.function`
    alike (TensorFlow runs stateful ops on one resource in program order).

    Args:
        normal: array [N, ...] of standard-normal rows, or None.
        uniform: array [M, ...] of uniform rows, or None.

    Example:
        >>> noise = RecordedNoise(normal=reference["exp/step0/noise"])   # [36, 8, 8, 8, 3]
        >>> trainer.noise = noise      # the next 7 inner steps take 5 rows each, then 1
    """

    def __init__(self, normal: np.ndarray | Sequence | None = None,
                 uniform: np.ndarray | Sequence | None = None,
                 truncated_normal: np.ndarray | Sequence | None = None):
        self._pools = {}
        self._positions = {}
        self._row_sizes = {}
        for kind, values in (("normal", normal), ("uniform", uniform),
                             ("truncated_normal", truncated_normal)):
            if values is None:
                continue
            values = np.asarray(values, dtype=np.float32)
            if values.ndim < 1 or len(values) == 0:
                raise ValueError(f"recorded {kind} draws must be a non-empty array of rows, "
                                 f"got shape {values.shape}.")
            self._pools[kind] = tf.constant(values.reshape(-1))
            self._row_sizes[kind] = int(np.prod(values.shape[1:], dtype=np.int64)) or 1
            self._positions[kind] = tf.Variable(0, dtype=tf.int32, trainable=False,
                                                name=f"recorded_{kind}_position")

    def rows_used(self, kind: str = "normal") -> int:
        """How many rows of that kind have been handed out (whole rows of the recorded
        array's shape)."""
        return int(self._positions[kind].numpy()) // self._row_sizes[kind]

    def _take(self, kind, shape, dtype):
        if kind not in self._pools:
            raise ValueError(f"RecordedNoise has no recorded {kind} draws.")
        pool, position = self._pools[kind], self._positions[kind]
        shape = tf.convert_to_tensor(shape, tf.int32)
        count = tf.reduce_prod(shape)
        start = position.assign_add(count) - count
        tf.debugging.assert_less_equal(
            start + count, tf.shape(pool)[0],
            message=f"RecordedNoise: more {kind} draws were asked for than were recorded")
        values = pool[start:start + count]
        return tf.cast(tf.reshape(values, shape), dtype)

    def normal(self, shape, seed, dtype=tf.float32):
        return self._take("normal", shape, dtype)

    def uniform(self, shape, seed, minval, maxval, dtype=tf.float32):
        return self._take("uniform", shape, dtype)

    def truncated_normal(self, shape, seed, dtype=tf.float32):
        return self._take("truncated_normal", shape, dtype)


DEFAULT_NOISE = SeededNoise()

__all__ = ["DEFAULT_NOISE", "NoiseSource", "RecordedNoise", "SeededNoise"]


def as_seed(seed) -> tf.Tensor:
    """A stateless seed tensor [2] from an int or an existing seed tensor."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.cast(seed, tf.int32)


def fold(seed: tf.Tensor, *values) -> tf.Tensor:
    """A new stateless seed derived from `seed` and the given integers (in order)."""
    for value in values:
        seed = tf.random.experimental.stateless_fold_in(seed, value)
    return seed
