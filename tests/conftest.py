"""Shared test set-up: two logical CPU devices (for MirroredStrategy tests) and tiny data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
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

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests, excluded from CI's fast set")
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        _import_art_once()


def _import_art_once():
    """adversarial-robustness-toolbox writes ~/.art/config.json on its first import, and two
    xdist workers importing it at once on a fresh machine race: one sees no file, the
    other's file appears before the next check, and `art.config` raises NameError ('_config'
    is not defined; CI, 2026-12-07), which `pytest.importorskip` does not catch. The
    controller has it imported first, alone, so the file exists before the workers start (in
    a child process: importing ART here closes a stream pytest's capture still holds). No
    ART, or a failing import: nothing (the modules that need it skip)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "import art.config"], capture_output=True,
                   timeout=300, check=False)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Every test body starts from the same seeds, whatever order it runs in. pytest-randomly
    reseeds Python's and NumPy's generators with the run's random seed in its
    `pytest_runtest_call` hook, and Keras creates its global SeedGenerator lazily from
    Python's generator: without this, every untrained model's initial weights changed with
    `--randomly-seed`, so the order seed also drew new initialisations. This hook runs inside
    `item.runtest()`, after every `pytest_runtest_call` hook and just before the body (a
    `pytest_runtest_call` hook of our own ran before pytest-randomly's: conftest hooks are
    registered last and called first). Returning None lets pytest call the function."""
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def two_device_strategy():
    """One 2-replica MirroredStrategy for the whole session: two strategies in one process
    can issue collectives with clashing instance keys (seen as shape-mismatch aborts)."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    if len(devices) < 2:
        pytest.fail("conftest could not split the CPU into two logical devices")
    return tf.distribute.MirroredStrategy(devices)


@pytest.fixture(scope="module")
def trained(request):
    """(model, x, y): the tiny classifier trained on real 16x16 images
    (`helpers.trained_tiny_classifier`, built once per process), with the first
    `TRAINED_EXAMPLES` images and labels (a module's constant; all 256 without it)."""
    from tests.helpers import trained_tiny_classifier

    model, x, y = trained_tiny_classifier()
    n = getattr(request.module, "TRAINED_EXAMPLES", None)
    return (model, x[:n], y[:n]) if n else (model, x, y)


@pytest.fixture
def tiny_data():
    from tests.helpers import make_tiny_images

    return make_tiny_images()
