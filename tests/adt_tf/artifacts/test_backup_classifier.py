"""load_backup_classifier (adt_tf/artifacts/loading.py): a workdir's classifier with the
weights of its per-epoch backup, which under weight averaging are the raw weights."""

from __future__ import annotations

import os

import numpy as np
import pytest

from adt_tf.artifacts.loading import load_backup_classifier, load_classifier
from adt_tf.training.config import RunConfig
from adt_tf.training.run import run_training
from tests.helpers import tiny_run

TINY = tiny_run(max_train_examples=192, batch_size=32, eval_examples=32, lr=0.05)


def test_the_backup_is_the_final_classifier_without_ema_and_the_raw_weights_with_it(tmp_path):
    plain = str(tmp_path / "plain")
    run_training(RunConfig.from_flags(workdir=plain, epochs=2, **TINY))
    raw, epoch = load_backup_classifier(plain)
    final = load_classifier(plain)
    assert epoch == 2
    # Without EMA the last epoch's backup is the saved classifier, layer by layer: every
    # variable found its layer (an off-by-one between same-class layers would differ).
    assert [w.path for w in raw.weights] == [w.path for w in final.weights]
    for a, b in zip(raw.weights, final.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)

    averaged = str(tmp_path / "ema")
    run_training(RunConfig.from_flags(workdir=averaged, epochs=2, validation_examples=40,
                                      ema_decay=0.9, **TINY))
    raw, _ = load_backup_classifier(averaged)
    average = load_classifier(averaged)
    moved = [a.path for a, b in zip(raw.trainable_weights, average.trainable_weights,
                                    strict=True) if not np.array_equal(a.numpy(), b.numpy())]
    assert len(moved) == len(raw.trainable_weights)  # the average is not the raw weights
    for a, b in zip(raw.non_trainable_weights, average.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # EMA averages trainables only


def test_a_workdir_without_a_backup_names_the_file(tmp_path):
    plain = str(tmp_path / "plain")
    run_training(RunConfig.from_flags(workdir=plain, epochs=1, **TINY))
    for name in os.listdir(os.path.join(plain, "backup")):
        os.remove(os.path.join(plain, "backup", name))
    with pytest.raises(ValueError, match="no per-epoch backup"):
        load_backup_classifier(plain)
