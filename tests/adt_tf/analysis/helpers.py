"""What the analysis tests share: a smooth model with an exact Hessian, and PNG checks."""

import os

import keras
import numpy as np
import tensorflow as tf
from matplotlib.image import imread

EPS = 8 / 255


def smooth_model(seed=1, dtype="float32"):
    """A tiny conv + dense net with smooth activations: its input Hessian is non-trivial."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 1), dtype=dtype)
    h = keras.layers.Conv2D(3, 3, activation="softplus", dtype=dtype)(inputs)
    h = keras.layers.Dense(8, activation="tanh", dtype=dtype)(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(3, dtype=dtype)(h))


def explicit_hessian(model, x, y):
    """The 16 x 16 input Hessian of one example's cross-entropy, by nested tapes."""
    x = tf.constant(x[None])
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                tf.constant([y]), model(x), from_logits=True))
        grad = inner.gradient(loss, x)
    return tf.reshape(outer.jacobian(grad, x), [16, 16]).numpy().astype(np.float64)


def check_png(picture):
    assert os.path.getsize(picture.path) > 1000
    assert imread(picture.path).shape[:2] == (picture.height, picture.width)
