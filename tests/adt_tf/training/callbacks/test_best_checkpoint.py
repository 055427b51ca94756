"""The training protocol: a held-out, class-stratified validation split, robust
validation every epoch, the best checkpoint (kept across kills and resumes), the optimiser's
weight average, and --checkpoint in the commands that read a workdir."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import keras
import numpy as np
import pytest

from adt_tf import data as data_lib
from adt_tf.artifacts.loading import resolve_model_path
from adt_tf.training.callbacks import BestCheckpoint, read_best
from adt_tf.training.config import RunConfig
from adt_tf.training.record import read_record
from adt_tf.training.run import run_training
from tests.helpers import run_command, start_command, tiny_run

TINY = tiny_run(max_train_examples=192, batch_size=32, eval_examples=32, lr=0.05)






def history(workdir):
    with open(os.path.join(workdir, "history.csv")) as f:
        return list(csv.DictReader(f))


def test_a_run_holds_out_its_split_scores_it_every_epoch_and_keeps_the_best(tmp_path):
    workdir = str(tmp_path / "run")
    config = RunConfig.from_flags(workdir=workdir, epochs=3, validation_examples=40, **TINY)
    report = run_training(config)
    record = read_record(workdir)
    splits = data_lib.load("cifar10_sample", max_train_examples=192)
    expected = data_lib.stratified_split(splits.y_train, 40, config.run.seed)[1]
    assert list(record.validation_indices) == expected.tolist()
    assert record.config.validation.seed == 0
    recorded = json.load(open(os.path.join(workdir, "config.json")))
    assert recorded["resolved"]["validation_indices"] == expected.tolist()
    assert not os.path.exists(os.path.join(workdir, "validation_split.json"))
    rows = history(workdir)
    assert len(rows) == 3
    scores = [(float(r["val_robust_accuracy"]), float(r["val_clean_accuracy"])) for r in rows]
    assert all(0 <= r <= c <= 1 for r, c in scores)
    best = read_best(workdir)
    # The epoch of the highest logged robust accuracy (ties: clean accuracy, then earlier).
    order = sorted(range(3), key=lambda e: (scores[e][0], scores[e][1], -e))
    assert best["epoch"] == order[-1] + 1
    assert report["best"]["epoch"] == best["epoch"]
    assert 0 <= report["best"]["pgd20_accuracy"] <= report["best"]["clean_accuracy"]
    assert os.path.isfile(os.path.join(workdir, "best.keras"))
    # a workdir with a validation split defaults to its best checkpoint
    assert resolve_model_path(workdir).endswith("best.keras")
    assert resolve_model_path(workdir, "last").endswith("classifier.keras")
    # the same run resumed: the same split; another split size or seed: refused
    run_training(RunConfig.from_flags(workdir=workdir, epochs=4, validation_examples=40,
                                      **TINY))
    assert read_record(workdir).validation_indices == record.validation_indices
    with pytest.raises(ValueError, match="validation.examples: 40 -> 50"):
        run_training(RunConfig.from_flags(workdir=workdir, epochs=5, validation_examples=50,
                                          **TINY))
    with pytest.raises(ValueError, match=r"run\.seed: 0 -> 1"):
        run_training(RunConfig.from_flags(workdir=workdir, epochs=5, validation_examples=40,
                                          **dict(TINY, seed=1)))


def test_the_best_checkpoint_is_the_epoch_of_the_highest_robust_accuracy(tmp_path):
    """Faked metric sequence: robust 0.10, 0.30, 0.30 (clean higher), 0.20, then a resumed
    callback (a new process) and a worse epoch: the best stays epoch 3 and best.keras holds
    epoch 3's weights."""
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="d")(inputs))
    sequence = [(0.10, 0.5), (0.30, 0.5), (0.30, 0.6), (0.20, 0.9)]
    callback = BestCheckpoint(str(tmp_path))
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, (robust, clean) in enumerate(sequence):
        model.get_layer("d").kernel.assign(np.full((2, 1), float(epoch + 1), np.float32))
        callback.on_epoch_end(epoch, {"val_robust_accuracy": robust,
                                      "val_clean_accuracy": clean})
    assert read_best(str(tmp_path)) == {"epoch": 3, "val_robust_accuracy": 0.30,
                                        "val_clean_accuracy": 0.6}
    resumed = BestCheckpoint(str(tmp_path))  # the best so far is restored, not reset
    resumed.set_model(model)
    resumed.on_train_begin()
    model.get_layer("d").kernel.assign(np.full((2, 1), 9.0, np.float32))
    resumed.on_epoch_end(4, {"val_robust_accuracy": 0.25, "val_clean_accuracy": 1.0})
    resumed.on_epoch_end(5, {"val_robust_accuracy": float("nan"),
                             "val_clean_accuracy": float("nan")})  # a skipped epoch
    assert read_best(str(tmp_path))["epoch"] == 3
    kept = keras.saving.load_model(str(tmp_path / "best.keras"))
    np.testing.assert_array_equal(kept.get_layer("d").kernel.numpy(), 3.0)
    # A kill after the pending record was written, before the model's rename: the commit
    # is finished (the model renamed, then the record).
    os.replace(tmp_path / "best.keras", tmp_path / "best.keras.tmp.keras")
    os.replace(tmp_path / "best.json", tmp_path / "best.json.pending")
    BestCheckpoint(str(tmp_path)).on_train_begin()
    assert os.path.exists(tmp_path / "best.keras")
    assert read_best(str(tmp_path))["epoch"] == 3
    assert not os.path.exists(tmp_path / "best.keras.tmp.keras")
    assert not os.path.exists(tmp_path / "best.json.pending")
    # A kill while a new best was being saved (no pending record yet): the temporary model,
    # possibly torn, is removed; the earlier best and its record stay.
    (tmp_path / "best.keras.tmp.keras").write_bytes(b"torn")
    BestCheckpoint(str(tmp_path)).on_train_begin()
    assert not os.path.exists(tmp_path / "best.keras.tmp.keras")
    assert read_best(str(tmp_path))["epoch"] == 3
    kept = keras.saving.load_model(str(tmp_path / "best.keras"))
    np.testing.assert_array_equal(kept.get_layer("d").kernel.numpy(), 3.0)


@pytest.mark.slow
def test_kill_9_after_a_best_epoch_and_resume_keeps_the_best(tmp_path):
    workdir = str(tmp_path / "run")
    args = [f"--workdir={workdir}", "--method=standard", "--max_train_examples=192",
            "--batch_size=32", "--model_params=width=4", "--eval_examples=32", "--lr=0.05",
            "--validation_examples=40", "--verbose=2"]
    proc = start_command("adt-train", *args, "--epochs=30", stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (os.path.exists(os.path.join(workdir, "history.csv"))
               and len(history(workdir)) >= 2 and read_best(workdir)):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_best(workdir)
    done = len(history(workdir))
    run_command("adt-train", *args, f"--epochs={done + 2}", check=True)
    rows = history(workdir)
    scores = [(float(r["val_robust_accuracy"]), float(r["val_clean_accuracy"]),
               -int(r["epoch"])) for r in rows]
    best = read_best(workdir)
    assert best["epoch"] == -max(scores)[2] + 1  # over both sittings
    assert (best["val_robust_accuracy"], best["val_clean_accuracy"]) >= (
        before["val_robust_accuracy"], before["val_clean_accuracy"])






@pytest.mark.parametrize("kwargs,match", [
    ({"validation_examples": -1}, "--validation_examples must be >= 0, got -1"),
    ({"validation_examples": 170}, r"between 10 \(one per class\) and 160 \(a batch"),
    ({"validation_examples": 5}, r"between 10 \(one per class\) and 160 .*got 5"),
    ({"validation_examples": 40, "validation_every": 0}, "--validation_every must be"),
    ({"ema_decay": 1.5}, r"--ema_decay must be > 0 and < 1, got 1\.5"),
    ({"validation_attack": "fgsm"}, "--validation_attack must be pgd<steps>"),
])
def test_bad_protocol_settings_are_errors_naming_the_flag(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_training(RunConfig.from_flags(workdir=str(tmp_path / "run"), epochs=1,
                                          **dict(TINY, **kwargs)))
    assert not os.path.exists(tmp_path / "run" / "config.json")  # nothing written


def test_a_bad_protocol_flag_exits_2_naming_it(tmp_path):
    proc = run_command("adt-train", f"--workdir={tmp_path / 'run'}", "--method=standard",
                       "--max_train_examples=192", "--batch_size=32", "--model_params=width=4",
                       "--epochs=1", "--validation_examples=500")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--validation_examples must be between 10 (one per class) and 160" in proc.stderr


@pytest.mark.slow
def test_checkpoint_reaches_evaluate_and_export_and_best_needs_a_split(tmp_path):
    from trainers.evaluate import run_evaluation

    plain = str(tmp_path / "plain")
    run_training(RunConfig.from_flags(workdir=plain, epochs=1, **TINY))
    with pytest.raises(ValueError, match="--checkpoint=best: .* holds no best.keras"):
        resolve_model_path(plain, "best")
    assert resolve_model_path(plain).endswith("classifier.keras")  # the default without
    split = str(tmp_path / "split")
    run_training(RunConfig.from_flags(workdir=split, epochs=2, validation_examples=40, **TINY))
    for checkpoint, name in (("best", "best.keras"), ("last", "classifier.keras"),
                             (None, "best.keras")):
        result, _ = run_evaluation(split, num_examples=8, suite="fgsm", checkpoint=checkpoint,
                                   out=str(tmp_path / f"eval_{checkpoint}"), verbose=0)
        assert result.model.endswith(name)
    proc = run_command("adt-export", f"--model={split}", f"--export_dir={tmp_path / 'exports'}",
                       "--noverify")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--checkpoint=best" in proc.stdout
    card = json.load(open(tmp_path / "exports" / "split" / "1" / "model_card.json"))
    assert card["checkpoint"] == "best" and card["best_epoch"] == read_best(split)["epoch"]
    from export.sources import load_source

    with pytest.raises(ValueError, match="holds no best.keras"):  # adt-export exits 2 so
        load_source(plain, "best")


def _state_files(workdir, model):
    """A best.keras and its best.json, as a finished best epoch leaves them."""
    model.save(os.path.join(workdir, "best.keras"))
    with open(os.path.join(workdir, "best.json"), "w") as f:
        json.dump({"epoch": 1, "val_robust_accuracy": 0.5, "val_clean_accuracy": 0.6}, f)


def test_a_torn_temporary_best_model_is_never_moved_into_place(tmp_path):
    """A kill while a later best.keras is written leaves a torn best.keras.tmp.keras and no
    pending record: the restart removes it and keeps the whole best.keras of its record (it
    moved the torn file into place)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    _state_files(tmp_path, model)
    with open(tmp_path / "best.keras.tmp.keras", "wb") as f:
        f.write(b"torn")
    callback = BestCheckpoint(str(tmp_path))
    callback.on_train_begin()
    assert callback.best["epoch"] == 1 and not (tmp_path / "best.keras.tmp.keras").exists()
    keras.saving.load_model(tmp_path / "best.keras")  # whole


def test_a_pending_record_finishes_its_commit(tmp_path):
    """Killed after the model was complete and the record pending: the restart renames both
    into place (the record names the new model)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    _state_files(tmp_path, model)
    newer = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    newer.save(tmp_path / "best.keras.tmp.keras")
    with open(tmp_path / "best.json.pending", "w") as f:
        json.dump({"epoch": 2, "val_robust_accuracy": 0.7, "val_clean_accuracy": 0.6}, f)
    callback = BestCheckpoint(str(tmp_path))
    callback.on_train_begin()
    assert callback.best["epoch"] == 2 and read_best(str(tmp_path))["epoch"] == 2
    for got, want in zip(keras.saving.load_model(tmp_path / "best.keras").get_weights(),
                         newer.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_a_record_without_its_model_is_forgotten_with_a_warning(tmp_path, capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    _state_files(tmp_path, model)
    os.remove(tmp_path / "best.keras")
    callback = BestCheckpoint(str(tmp_path))
    callback.on_train_begin()
    assert callback.best is None and not (tmp_path / "best.json").exists()
    assert "best.keras is missing; the record is forgotten" in capsys.readouterr().err


