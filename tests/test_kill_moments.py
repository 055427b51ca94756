"""A kill at any moment loses at most the current epoch: `kill -9` of a training process at
the moments where a file of the run is half-written, then the rerun of the same command.

Each case runs a short adt-train in a subprocess whose save function is wrapped to send
itself SIGKILL at the named moment (a real kill, nothing cleans up), reruns the same command,
and checks that the rerun finishes with the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal

import keras
import numpy as np
import pytest

from tests.helpers import run_command, run_python

ARGS = ["--dataset=cifar10_sample", "--max_train_examples=96", "--eval_examples=16",
        "--batch_size=32", "--model_params=width=4,dense_units=16,dropout=0", "--lr=0.02",
        "--method=pgd_at", "--method_params=attack_steps=1", "--verbose=0"]

#: Python run before adt-train's main: wraps one function so that its Nth call (counted
#: over the process) kills the process at the named point.
KILLER = """
import os, signal, sys
import keras
from adt_tf.core import files

moment, count = os.environ["KILL_AT"], int(os.environ["KILL_CALL"])
calls = {"n": 0}

def torn_then_killed(original, matches):
    # At the Nth call that `matches`: a torn file where the writer was, then SIGKILL.
    def wrapper(*args, **kwargs):
        path = matches(*args)
        if path:
            calls["n"] += 1
            if calls["n"] == count:
                if moment != "backup_metadata":
                    with open(path, "wb") as f:
                        f.write(b"torn")
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    return wrapper

if moment == "backup_weights":       # while an epoch's backup weights are written
    keras.Model.save_weights = torn_then_killed(keras.Model.save_weights,
                                                lambda model, path, *a: str(path))
elif moment == "backup_metadata":    # after an epoch's weights file, before its metadata
    files.write_json = torn_then_killed(
        files.write_json,
        lambda path, *a: path if str(path).endswith("training_metadata.json") else None)
elif moment == "best_model":         # while best.keras is written
    keras.Model.save = torn_then_killed(
        keras.Model.save, lambda model, path, *a: path if "best" in str(path) else None)
from trainers import train
sys.argv = ["adt-train", *sys.argv[1:]]
train.run()
"""


def _train(workdir, *extra, moment=None, call=1):
    if moment:
        return run_python(KILLER, *ARGS, *extra, f"--workdir={workdir}",
                          env={"KILL_AT": moment, "KILL_CALL": str(call)})
    return run_command("adt-train", *ARGS, *extra, f"--workdir={workdir}")


def _weights(workdir, name="classifier.keras"):
    return keras.saving.load_model(os.path.join(workdir, name)).get_weights()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("whole") / "run"
    proc = _train(workdir, "--epochs=2", "--validation_examples=32")
    assert proc.returncode == 0, proc.stderr
    return workdir


@pytest.mark.parametrize("moment, call", [
    ("backup_weights", 1),   # the first epoch's backup: no earlier copy to fall back to
    pytest.param("backup_weights", 2, marks=pytest.mark.slow),  # the first must survive
    pytest.param("backup_metadata", 2, marks=pytest.mark.slow),  # weights, no metadata yet
    pytest.param("best_model", 1, marks=pytest.mark.slow),  # while best.keras is written
])
def test_a_kill_at_this_moment_loses_at_most_the_epoch(uninterrupted, tmp_path, moment,
                                                        call):
    workdir = tmp_path / "run"
    killed = _train(workdir, "--epochs=2", "--validation_examples=32", moment=moment,
                    call=call)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rerun = _train(workdir, "--epochs=2", "--validation_examples=32")
    assert rerun.returncode == 0, rerun.stderr
    for got, want in zip(_weights(workdir), _weights(uninterrupted)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(_weights(workdir, "best.keras"), _weights(uninterrupted, "best.keras")):
        np.testing.assert_array_equal(got, want)
    leftovers = [n for n in os.listdir(workdir / "backup") if ".tmp-" in n]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_a_best_keras_deleted_by_hand_is_forgotten_with_a_warning(tmp_path):
    workdir = tmp_path / "run"
    assert _train(workdir, "--epochs=1", "--validation_examples=32").returncode == 0
    os.remove(workdir / "best.keras")
    proc = _train(workdir, "--epochs=2", "--validation_examples=32")
    assert proc.returncode == 0, proc.stderr
    assert "best.keras is missing; the record is forgotten" in proc.stderr
    assert (workdir / "best.keras").exists() and (workdir / "best.json").exists()
