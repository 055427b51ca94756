"""The per-epoch backup (adt_tf.training.callbacks.backup): a multi-worker run restores from
the shared folder and each worker writes to its own. Its kill moments: tests/test_kill_moments.py;
the multi-worker kill and restart: tests/test_multiworker.py."""

from __future__ import annotations

import keras
import numpy as np

from adt_tf.training.callbacks import SharedBackupAndRestore, restored_epoch


def tiny_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def test_shared_backup_restores_from_the_shared_dir_and_writes_to_its_own(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.zeros((8, 2), "float32")
    shared, own = str(tmp_path / "shared"), str(tmp_path / "own")
    chief = tiny_model()
    chief.fit(x, y, epochs=2, verbose=0, callbacks=[SharedBackupAndRestore(
        shared, shared, delete_checkpoint=False)])
    assert restored_epoch(shared) == 2

    other = tiny_model()
    history = other.fit(x, y, epochs=3, verbose=0, callbacks=[SharedBackupAndRestore(
        shared, own, delete_checkpoint=False)])
    assert len(history.epoch) == 1 and history.epoch[0] == 2  # resumed the chief's epoch 2
    assert restored_epoch(own) == 3 and restored_epoch(shared) == 2  # wrote its own copy only
