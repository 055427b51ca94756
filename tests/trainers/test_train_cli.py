import csv
import json
import os
import signal
import subprocess
import time

import keras
import numpy as np
import pytest

from adt_tf.training.callbacks import NonFiniteLossError, StopOnNonFiniteLoss
from adt_tf.training.config import RunConfig
from adt_tf.training.run import run_training
from tests.helpers import run_command, start_command

FAST = ["--max_train_examples=64", "--batch_size=32", "--model_params=width=4",
        "--eval_examples=32", "--method_params=inner_steps=2,mc_samples=2", "--verbose=2",
        "--lr=0.01"]


def history_epochs(workdir):
    with open(os.path.join(workdir, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_cli_trains_saves_reports_and_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    out = run_command("adt-train", f"--workdir={workdir}", "--epochs=1", *FAST, check=True).stdout
    assert "Report: adt_exp on cifar10_sample (test split, 32 inputs" in out
    assert "PGD-20 accuracy" in out
    for name in ("config.json", "classifier.keras", "report.json", "backup", "logs"):
        assert os.path.exists(os.path.join(workdir, name)), name
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["method"]["name"] == "adt_exp"
    assert config["method"]["params"]["inner_steps"] == 2
    assert config["method"]["params"]["entropy_weight"] == 0.01  # resolved default recorded
    report = json.load(open(os.path.join(workdir, "report.json")))
    assert report["num_examples"] == 32
    classifier = keras.saving.load_model(os.path.join(workdir, "classifier.keras"))
    assert classifier.output_shape == (None, 10)
    # No normalisation layer by default: the ADT reference feeds [0, 1] pixels as they are.
    assert config["data"]["normalize"] is False
    assert "normalize" not in [layer.name for layer in classifier.layers]
    # The report's PGD-20 is the evaluation's on the same inputs and seed (adt-evaluate's).
    from adt_tf import data as data_lib
    from adt_tf.evaluation import evaluate

    splits = data_lib.load(config["data"]["dataset"])
    again = evaluate(classifier, splits.x_test[:32], splits.y_test[:32],
                     threat=report["epsilon"],
                     suite="quick", seed=config["run"]["seed"],
                     batch_size=config["report"]["eval_batch_size"],
                     sanity_checks=False, verbose=0)
    assert report["clean_accuracy"] == again.clean_accuracy
    assert report["pgd20_accuracy"] == again.robust_accuracy
    assert os.listdir(os.path.join(workdir, "logs"))  # TensorBoard wrote something

    out = run_command("adt-train", f"--workdir={workdir}", "--epochs=2", *FAST, check=True).stdout
    assert "1 of 2 epochs already done" in out
    assert history_epochs(workdir) == [0, 1]  # epoch 0 was not trained again

    with pytest.raises(AssertionError, match=r"other settings \(.*run\.seed: 0 -> 5"):
        run_command("adt-train", f"--workdir={workdir}", "--epochs=2", "--seed=5", *FAST,
                    check=True)


def classifier_weights(workdir):
    model = keras.saving.load_model(os.path.join(workdir, "classifier.keras"))
    return [np.asarray(w) for w in model.get_weights()]


def _same_command_twice(tmp_path, *extra):
    runs = []
    for name in ("a", "b"):
        workdir = str(tmp_path / name)
        run_command("adt-train", f"--workdir={workdir}", "--epochs=1", *FAST, *extra, check=True)
        with open(os.path.join(workdir, "report.json")) as f:
            report = json.load(f)
        runs.append((classifier_weights(workdir), report))
    (wa, ra), (wb, rb) = runs
    assert all(np.array_equal(a, b) for a, b in zip(wa, wb, strict=True))
    assert (ra["clean_accuracy"], ra["pgd20_accuracy"]) == (rb["clean_accuracy"],
                                                            rb["pgd20_accuracy"])


@pytest.mark.slow
def test_the_same_command_twice_gives_the_same_weights_and_report(tmp_path):
    """A fixed seed, a fixed run: two processes running the same command end with bit-equal
    weights and the same report (on one machine; across CPU models the kernels round
    differently, README "A fixed seed, a fixed run")."""
    _same_command_twice(tmp_path)


@pytest.mark.slow
def test_deterministic_ops_give_a_fixed_run_too(tmp_path):
    """--deterministic_ops (TensorFlow's deterministic kernels, for GPUs) is accepted and
    fixed from process to process."""
    _same_command_twice(tmp_path, "--deterministic_ops")


@pytest.mark.slow
def test_cli_resumes_after_kill_9_and_ends_where_an_uninterrupted_run_ends(tmp_path):
    """kill -9 mid-run, rerun the same command: it resumes from the last completed epoch
    and ends with the uninterrupted run's weights, bit for bit (CPU; the data stream of an
    epoch depends on the seed and the epoch number alone, the noise seed is checkpointed)."""
    epochs = 12
    args = [f"--epochs={epochs}", "--max_train_examples=64", "--batch_size=8",
            "--model_params=width=4", "--eval_examples=16",
            "--method_params=inner_steps=1,mc_samples=1",
            "--verbose=0", "--lr=0.01"]
    workdir = str(tmp_path / "killed")
    proc = start_command("adt-train", f"--workdir={workdir}", *args, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    meta = os.path.join(workdir, "backup", "training_metadata.json")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(meta) and json.load(open(meta)).get("epoch", 0) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.load(open(meta))["epoch"]
    assert 2 <= done < epochs
    out = run_command("adt-train", f"--workdir={workdir}", *args[:-2], "--verbose=2", args[-1],
                      check=True).stdout
    assert f"{done} of {epochs} epochs already done" in out
    assert json.load(open(meta))["epoch"] == epochs
    straight = str(tmp_path / "straight")
    run_command("adt-train", f"--workdir={straight}", *args, check=True)
    for resumed, uninterrupted in zip(classifier_weights(workdir),
                                      classifier_weights(straight), strict=True):
        np.testing.assert_array_equal(resumed, uninterrupted)


@pytest.mark.slow  # the same checks run in-process in test_bad_settings_fail_before_training
def test_cli_rejects_bad_input_with_message(tmp_path):
    proc = run_command("adt-train", f"--workdir={tmp_path}/x", "--epsilon=8")
    assert proc.returncode == 2
    assert "epsilon must be in (0, 1], got 8.0; did you mean 8/255?" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "x", "classifier.keras"))
    proc = run_command("adt-train", f"--workdir={tmp_path}/y", "--model=preact_resnet18",
                       "--model_params=batch_norm=true")
    assert proc.returncode == 2
    assert ("--model_params: --model=preact_resnet18 does not take 'batch_norm'"
            in proc.stderr)
    proc = run_command("adt-train", f"--workdir={tmp_path}/z",
                       "--method_params=inner_gradients=summed")
    assert proc.returncode == 2 and "Unknown inner_gradients 'summed'" in proc.stderr


@pytest.mark.parametrize("kwargs,match", [
    ({"epsilon": 8.0}, "did you mean 8/255"),
    ({"epsilon": 0.0}, r"--epsilon must be > 0, got 0\.0"),
    ({"method_params": {"entropy_weight": -1.0}}, "entropy_weight must be a finite number >= 0"),
    ({"method_params": {"inner_steps": 0}}, "inner_steps must be an integer >= 1, got 0"),
    ({"method_params": {"mc_samples": 0}}, "mc_samples must be an integer >= 1, got 0"),
    ({"method": "madry"}, "Unknown method 'madry'; known: .*adt_exp"),
    ({"dataset": "imagenet"}, "Unknown dataset 'imagenet'; known: .*npz:DIR"),
    ({"model": "vgg"}, "Unknown model 'vgg'; known: .*small_cnn"),
    ({"dataset": "npz:/nonexistent"}, "does not exist"),
    ({"model": "preact_resnet18", "model_params": {"batch_norm": True}},
     "--model_params: --model=preact_resnet18 does not take 'batch_norm'"),
    ({"model_params": {"width": "wide"}}, "--model_params width must be an integer"),
])
def test_bad_settings_fail_before_training(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_training(RunConfig.from_flags(workdir=str(tmp_path / "w"), epochs=1, **kwargs))
    assert not os.path.exists(os.path.join(tmp_path, "w", "backup"))


@pytest.mark.parametrize(("flag", "spelling"), [
    ("--model_width=4", "--model_params=width=VALUE"),
    ("--model_depth=3", "--model_params=depth=VALUE"),
    ("--model_batch_norm", "--model_params=batch_norm=true"),
])
def test_the_removed_model_flags_are_refused_naming_their_new_spelling(flag, spelling):
    from absl import flags
    from absl.testing import flagsaver

    import trainers.train  # noqa: F401  (defines adt-train's flags)

    name = flag.split("=")[0]
    with flagsaver.flagsaver(), pytest.raises(
            flags.IllegalFlagValueError, match=f"{name} was removed; use {spelling} instead"):
        flags.FLAGS(["adt-train", flag])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.zeros(16, "int32")
    backup = str(tmp_path / "backup")

    def callbacks():
        return [StopOnNonFiniteLoss(backup),
                keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)]

    model.fit(x, y, batch_size=4, epochs=1, callbacks=callbacks(), verbose=0, shuffle=False)
    good = [w.copy() for w in model.get_weights()]
    bad = x.copy()
    bad[10] = np.nan  # third batch of the next epoch
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 3"):
        model.fit(bad, y, batch_size=4, epochs=2, callbacks=callbacks(), verbose=0,
                  shuffle=False)
    assert json.load(open(os.path.join(backup, "training_metadata.json")))["epoch"] == 1
    model.load_weights(os.path.join(backup, "latest.weights.h5"))
    for a, b in zip(good, model.get_weights()):
        np.testing.assert_array_equal(a, b)
