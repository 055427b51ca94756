"""Helpers shared by the tests: tiny real data and tiny classifiers."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

SHARED_CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10")


def make_tiny_images(n: int = 64, size: int = 16, channels: int = 3, num_classes: int = 10,
                     seed: int = 0):
    """Real CIFAR-10 test images (resized to size x size) when ../shared is there, else a
    synthetic but learnable set (class-dependent colour means plus noise)."""
    path = os.path.join(SHARED_CIFAR, "test.npz")
    if os.path.exists(path) and channels == 3 and num_classes == 10:
        with np.load(path) as data:
            x = data["x"][:n].astype("float32") / 255.0
            y = data["y"][:n].astype("int32")
        if size != 32:
            x = tf.image.resize(x, (size, size), antialias=True).numpy().clip(0, 1)
        return x, y
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n).astype("int32")
    means = rng.uniform(0.2, 0.8, (num_classes, 1, 1, channels))
    x = np.clip(means[y] + 0.1 * rng.standard_normal((n, size, size, channels)), 0, 1)
    return x.astype("float32"), y


def tiny_classifier(input_shape=(16, 16, 3), num_classes: int = 10, **kwargs):
    """A SmallCNN narrow enough for fast CPU tests (and fast XLA compilation)."""
    from adt_tf.models import build_model

    params = {"width": 4, "dense_units": 16, "dropout": 0.0}
    params.update(kwargs)
    return build_model("small_cnn", input_shape, num_classes, **params)


def ce_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


_TRAINED: dict = {}


def trained_tiny_classifier(n: int = 256, epochs: int = 15):
    """A tiny classifier trained on n real 16x16 images (built once per process), with the
    images and labels: (model, x, y). Training accuracy is well above chance, so attacks have
    something to break."""
    key = (n, epochs)
    if key not in _TRAINED:
        keras.utils.set_random_seed(1)
        x, y = make_tiny_images(n)
        model = tiny_classifier(width=8, dense_units=32)
        model.compile(keras.optimizers.Adam(3e-3), ce_loss())
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
        _TRAINED[key] = (model, x, y)
    return _TRAINED[key]
