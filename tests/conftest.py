"""Shared test set-up: two logical CPU devices (for MirroredStrategy tests) and tiny data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Split the CPU into two logical devices before TensorFlow initialises them, so that a
# MirroredStrategy over two replicas can be tested on a machine without accelerators.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # devices already initialised by an earlier import
    pass

SHARED_CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests, excluded from CI's fast set")


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def two_device_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.fail("conftest could not split the CPU into two logical devices")
    return tf.distribute.MirroredStrategy(devices)


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


@pytest.fixture
def tiny_data():
    return make_tiny_images()


def tiny_classifier(input_shape=(16, 16, 3), num_classes: int = 10, **kwargs):
    """A SmallCNN narrow enough for fast CPU tests (and fast XLA compilation)."""
    from adt_tf.models import build_model

    params = {"width": 4, "dense_units": 16, "dropout": 0.0}
    params.update(kwargs)
    return build_model("small_cnn", input_shape, num_classes, **params)


def ce_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
