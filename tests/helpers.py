"""The test kit: what the tests share.

- Commands: `run_command` / `start_command` run a command (`adt-train`, ... or any module)
  in a fresh process as a user's shell would (`command_env`).
- Data: `make_tiny_images` (the bundled sample's images, or a learnable synthetic set),
  `npz_dataset` (a dataset folder of train.npz / test.npz, from the sample or at random).
- Runs: `tiny_run` (the settings of a run that trains in seconds, for `RunConfig.from_flags`),
  `as_flags` (the same as command-line flags), `CHEAP_PARAMS` (each method's cheap inner
  settings).
- Models: `tiny_classifier`, `trained_tiny_classifier`, `ce_loss`.
- Execution: `EXECUTION_REGIMES` / `in_regime` (eager, `tf.function`, XLA), for tests that
  mean all three.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
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


def npz_dataset(folder, n_train: int, n_test: int, source: str = "random",
                size: int = 32) -> str:
    """A dataset folder as `--data` / `npz:<folder>` name it (train.npz and test.npz).

    `source="sample"`: the first `n_train` / `n_test` images of the bundled CIFAR-10 sample
    (real images, for what has to learn). `source="random"`: uint8 images of size x size x 3
    drawn at random, labels 0..9 in turn, for what reads a dataset's shape and size but
    learns nothing from it (records resolved against it, bad-input checks)."""
    os.makedirs(folder, exist_ok=True)
    if source == "sample":
        with np.load(SAMPLE) as data:
            splits = {"train": (data["x_train"][:n_train], data["y_train"][:n_train]),
                      "test": (data["x_test"][:n_test], data["y_test"][:n_test])}
    elif source == "random":
        rng = np.random.default_rng(0)
        splits = {split: (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                          np.arange(n) % 10)
                  for split, n in (("train", n_train), ("test", n_test))}
    else:
        raise ValueError(f"source must be 'sample' or 'random', got {source!r}")
    return write_npz_dataset(folder, **splits)


def write_npz_dataset(folder, train: tuple, test: tuple) -> str:
    """Writes (x, y) arrays as the dataset folder `npz:<folder>` reads: train.npz, test.npz."""
    os.makedirs(folder, exist_ok=True)
    for split, (x, y) in (("train", train), ("test", test)):
        np.savez(os.path.join(folder, f"{split}.npz"), x=x, y=y)
    return str(folder)


#: A run that trains in seconds (`RunConfig.from_flags` keyword arguments); `tiny_run`
#: changes what a test needs.
TINY_RUN: dict[str, Any] = dict(method="standard", max_train_examples=32, batch_size=16,
                                model_params={"width": 4}, eval_examples=16, verbose=0,
                                lr=0.01)

#: Each method's cheap inner settings (fewer inner steps, smaller generators than the
#: paper's), for tests that train every method.
CHEAP_PARAMS: dict[str, dict[str, Any]] = {
    "standard": {}, "fgsm_at": {}, "fast_at": {}, "feascatter": {},
    "adt_exp": {"inner_steps": 2, "mc_samples": 2},
    "adt_exp_am": {"generator_width": 4, "generator_blocks": 1},
    "adt_imp_am": {"generator_width": 4, "generator_blocks": 1, "z_dim": 8, "encoder_width": 4},
    "pgd_at": {"attack_steps": 3}, "alp": {"attack_steps": 3}, "trades": {"attack_steps": 3},
    "awp_at": {"attack_steps": 3}, "awp_trades": {"attack_steps": 3, "awp_warmup": 0},
    "awp_adt_exp": {"inner_steps": 2, "mc_samples": 2},
}


def tiny_run(**changes) -> dict[str, Any]:
    """`TINY_RUN` with `changes`."""
    return dict(TINY_RUN, **changes)


def as_flags(settings: dict[str, Any]) -> list[str]:
    """Run settings (`tiny_run`'s keyword arguments) as adt-train's flags: a dict value is
    `key=value,...`."""
    def text(value):
        if isinstance(value, dict):
            return ",".join(f"{k}={v}" for k, v in value.items())
        return str(value)

    return [f"--{name}={text(value)}" for name, value in settings.items()]


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


#: The console scripts' modules (what `python -m` runs for each).
COMMANDS = {"adt-train": "trainers.train", "adt-evaluate": "trainers.evaluate",
            "adt-tune": "trainers.tune_lambda", "adt-export": "export.export_saved_model",
            "adt-analyze": "trainers.analyze"}


def command_line(command: str, *args: str) -> list[str]:
    """`python -m <module> args...` for a console script's name (`COMMANDS`) or a module."""
    return [sys.executable, "-m", COMMANDS.get(command, command), *map(str, args)]


def run_command(command: str, *args, env: dict | None = None, timeout: float = 600,
                check: bool = False) -> subprocess.CompletedProcess:
    """Runs a command (a console script's name or a module, `command_line`) to its end in a
    fresh process from the repository's root, its output captured as text; `env` adds to
    `command_env()`. `check`: an AssertionError with the output when it exits non-zero."""
    proc = subprocess.run(command_line(command, *args), cwd=ROOT, env=command_env(**(env or {})),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_command(command: str, *args, env: dict | None = None, stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT, **popen) -> subprocess.Popen:
    """Starts a command as `run_command` runs it and returns at once (to kill it, run
    several side by side, or read its output as it comes); text output to `stdout`."""
    return subprocess.Popen(command_line(command, *args), cwd=ROOT,
                            env=command_env(**(env or {})), stdout=stdout, stderr=stderr,
                            text=True, **popen)


def run_python(script: str, *args, env: dict | None = None, timeout: float = 600,
               check: bool = False) -> subprocess.CompletedProcess:
    """`python -c script args...`, as `run_command` runs a command."""
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=ROOT,
                          env=command_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_python(script: str, *args, env: dict | None = None, stdout=None,
                 stderr=subprocess.PIPE) -> subprocess.Popen:
    """`python -c script args...` started as `start_command` starts a command (text output;
    by default its stderr piped, its stdout this process's)."""
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT,
                            env=command_env(**(env or {})), stdout=stdout, stderr=stderr,
                            text=True)


def slow_cases(values, slow=(), *, fast=None) -> list:
    """`values` for `pytest.mark.parametrize`, those in `slow` (or, given `fast`, those not in
    it) marked slow: the fast set (CI) runs the others, the slow set every one."""
    return [pytest.param(v, marks=pytest.mark.slow)
            if (v not in fast if fast is not None else v in slow) else v for v in values]


#: The ways a step can run, for tests that mean all three (as TFP's
#: `test_all_tf_execution_regimes`): eagerly, traced by `tf.function`, compiled by XLA.
EXECUTION_REGIMES = ("eager", "tf_function", "xla")


def in_regime(fn: Callable, regime: str) -> Callable:
    """`fn` run the `regime` way (`EXECUTION_REGIMES`)."""
    if regime == "eager":
        return fn
    if regime == "tf_function":
        return tf.function(fn)
    if regime == "xla":
        return tf.function(fn, jit_compile=True)
    raise ValueError(f"regime must be one of {EXECUTION_REGIMES}, got {regime!r}")


def command_env(**extra) -> dict:
    """The environment of a command run in a subprocess: this one's, the repository on the
    path, and TensorFlow's log level left to the command as a user's shell leaves it (the
    test process sets it for its own imports: conftest.py); `extra` adds variables, and
    removes those it sets to None."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
