"""Helpers shared by the tests: tiny real data and tiny classifiers."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

#: The repository's root (where setup.py is) and the tests' data folder.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")

#: The CIFAR-10 sample the package ships (its test images are the first 500 official ones).
SAMPLE = os.path.join(ROOT, "adt_tf", "data_files", "cifar10_sample.npz")


def make_tiny_images(n: int = 64, size: int = 16, channels: int = 3, num_classes: int = 10,
                     seed: int = 0):
    """Real CIFAR-10 test images (resized to size x size) from the bundled sample (at most
    500), else a synthetic but learnable set (class-dependent colour means plus noise).
    Never ../shared: the suite runs on a clone of the repository alone."""
    if channels == 3 and num_classes == 10 and n <= 500:
        with np.load(SAMPLE) as data:
            x = data["x_test"][:n].astype("float32") / 255.0
            y = data["y_test"][:n].astype("int32")
        if size != 32:
            x = tf.image.resize(x, (size, size), antialias=True).numpy().clip(0, 1)
        return x, y
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n).astype("int32")
    means = rng.uniform(0.2, 0.8, (num_classes, 1, 1, channels))
    x = np.clip(means[y] + 0.1 * rng.standard_normal((n, size, size, channels)), 0, 1)
    return x.astype("float32"), y


def random_npz_dataset(folder, n_train: int, n_test: int, size: int = 32) -> str:
    """A dataset folder as `--data` / `npz:` name it (train.npz and test.npz; uint8 images of
    size x size x 3 drawn at random, labels 0..9 in turn), for what reads a dataset's shape
    and size but learns nothing from it (records resolved against it, bad-input checks)."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        np.savez(os.path.join(folder, f"{split}.npz"), y=np.arange(n) % 10,
                 x=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    return str(folder)


def tiny_classifier(input_shape=(16, 16, 3), num_classes: int = 10, **kwargs):
    """A SmallCNN narrow enough for fast CPU tests (and fast XLA compilation)."""
    from adt_tf.models import build_model

    params = {"width": 4, "dense_units": 16, "dropout": 0.0}
    params.update(kwargs)
    return build_model("small_cnn", input_shape, num_classes, **params)


def ce_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


_TRAINED: dict = {}


def trained_tiny_classifier(n: int = 256, epochs: int = 15, seed: int = 1):
    """A tiny classifier trained on n real 16x16 images (built once per process and seed),
    with the images and labels: (model, x, y). Training accuracy is well above chance, so
    attacks have something to break. Another seed gives an independently trained copy (the
    source of transfer attacks)."""
    key = (n, epochs, seed)
    if key not in _TRAINED:
        keras.utils.set_random_seed(seed)
        x, y = make_tiny_images(n)
        model = tiny_classifier(width=8, dense_units=32)
        model.compile(keras.optimizers.Adam(3e-3), ce_loss())
        model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
        _TRAINED[key] = (model, x, y)
    return _TRAINED[key]


def attack_settings(adversaries=None, source=None, **replace) -> dict:
    """Settings small enough for CPU tests, one entry per registered attack (`replace`
    overrides whole entries). The transfer attack's source is `source` (give an
    independently trained copy, never the target)."""
    adversaries = adversaries or {}
    settings = {
        "exp_am": {"adversary": adversaries.get("exp_am"), "check_samples": 4},
        "imp_am": {"adversary": adversaries.get("imp_am"), "check_samples": 4},
        "fgsm": {}, "pgd": {"steps": 5}, "mim": {"steps": 5}, "cw": {"steps": 5},
        "fea": {"steps": 5, "num_targets": 2, "step_size": 2 / 255},
        "spsa": {"steps": 5, "samples": 16, "sample_chunk": 8},
        "transfer": {"source": source, "attack": "pgd", "steps": 3},
        "exp": {"steps": 3, "samples": 2, "check_samples": 2},
        "apgd": {"steps": 5}, "apgd_t": {"steps": 3, "num_targets": 2},
        "fab_t": {"steps": 5, "num_targets": 2},
        "square": {"num_queries": 60},
    }
    settings.update(replace)
    return settings


def flat_record(record: dict, drop: tuple[str, ...] = ()) -> dict:
    """A run's record (config.json's nested dict) in the flat layout of version 1, as
    config.json held it before the run schema (every setting by its flag name, no
    schema_version, no resolved section), without the fields `drop` (a record written before
    they existed)."""
    from adt_tf.training.config import FLAT_FIELDS, flag_paths

    paths = flag_paths()
    flat = {}
    for name in FLAT_FIELDS:
        section, key = paths[name].split(".")
        flat[name] = record[section][key]
    flat["algorithm_version"] = record["algorithm_version"]
    return {k: v for k, v in flat.items() if k not in drop}


def assert_normal_init(weights, stddev: float, mean: float = 0.0, truncated: bool = False):
    """The sample of initial weights looks like N(mean, stddev^2): mean and standard deviation
    within 5 standard errors, and (for 2,000+ values) the share beyond two standard
    deviations that of an untruncated normal (4.6%), or none for a truncated one."""
    w = np.asarray(weights, np.float64).ravel()
    n = w.size
    assert abs(w.mean() - mean) < 5 * stddev / np.sqrt(n) + 1e-12, (w.mean(), mean)
    assert abs(w.std() / stddev - 1) < 5 / np.sqrt(2 * n) + 0.01, (w.std(), stddev)
    if n >= 2000:
        tails = np.mean(np.abs(w - mean) > 2 * stddev)
        assert (tails < 0.005) if truncated else (0.03 < tails < 0.065), tails


def assert_uniform_init(weights, bound: float):
    """The sample of initial weights looks like U(-bound, bound): inside the interval, its
    ends reached, and the standard deviation bound / sqrt(3) within 5 standard errors."""
    w = np.asarray(weights, np.float64).ravel()
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > bound * (1 - 10 / w.size) - 1e-9
    assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 5 / np.sqrt(w.size) + 0.01


def command_env(**extra) -> dict:
    """The environment of a command run in a subprocess: this one's, the repository on the
    path, and TensorFlow's log level left to the command as a user's shell leaves it (the
    test process sets it for its own imports: conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env
