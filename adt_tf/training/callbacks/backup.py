"""The per-epoch backup a killed run resumes from: `AtomicBackupAndRestore` (Keras's
`BackupAndRestore` with a backup that a kill at any moment leaves whole) and
`SharedBackupAndRestore` (a multi-worker run: the chief's backup, restored by every worker);
`restored_epoch`, the epochs a backup folder holds."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from adt_tf.training.strategies import worker_role


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore`, with a backup that a kill at any moment leaves whole.

    Keras writes `latest.weights.h5` in place and then `training_metadata.json`: a kill
    while the weights are written leaves a torn file (and, in the first epoch, no earlier
    copy to fall back to: every rerun fails), and a kill between the two files leaves the
    next epoch's weights with the last epoch's count (the rerun trains that epoch twice).
    Here each backup is one weights file per epoch, written under a temporary name and
    renamed into place (`adt_tf.core.files.atomic_path`), and the metadata, written atomically
    after it, names the weights file it goes with; the previous weights file is removed
    only then. Whatever moment a kill hits, the metadata names a complete weights file of
    the epoch it counts (or there is no metadata, and the run starts afresh). A backup of
    Keras's own layout (`latest.weights.h5`) is still restored.
    """

    def _metadata(self) -> dict:
        return backup_metadata(self.backup_dir)

    def _save_model(self):
        from adt_tf.core import files

        os.makedirs(self.backup_dir, exist_ok=True)
        previous = self._metadata().get("weights")
        name = f"epoch{self._current_epoch}-batch{self._last_batch_seen}.weights.h5"
        with files.atomic_path(os.path.join(self.backup_dir, name)) as tmp:
            self.model.save_weights(tmp, overwrite=True)
        files.write_json(self._training_metadata_path,
                         {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                          "weights": name})
        for stale in (previous, os.path.basename(self._weights_path)):
            if stale and stale != name:
                path = os.path.join(self.backup_dir, stale)
                if os.path.exists(path):
                    os.remove(path)

    def _load_model(self):
        from adt_tf.core import files

        files.remove_leftovers(self.backup_dir)
        metadata = self._metadata()
        if "weights" not in metadata:  # nothing yet, or Keras's own layout
            return super()._load_model()
        if not self.model.built:
            raise ValueError("BackupAndRestore needs a built model; call it on a batch first.")
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, metadata["weights"]))
        self.model._initial_epoch = metadata["epoch"]

    def on_train_begin(self, logs=None):
        self._load_model()


class SharedBackupAndRestore(keras.callbacks.Callback):
    """Keras `BackupAndRestore` for multi-worker runs: one backup, written by the chief.

    Every worker restores from `backup_dir` (which must therefore be on a file system all
    workers see, e.g. NFS or a gs:// bucket); each saves at the end of each epoch to
    `write_dir`, which is `backup_dir` for the chief and a folder of its own for the other
    workers. After restoring, the workers check that they resume the same epoch (a worker
    that cannot see the chief's backup would otherwise desynchronise the collectives).

    A killed worker, restarted, resumes the epoch after the last one completed; under
    `MultiWorkerMirroredStrategy` the surviving workers fail once they notice the lost peer
    (an `UnavailableError`) and are restarted the same way.

    Args:
        backup_dir: the shared backup folder (read by all, written by the chief).
        write_dir: where this worker saves.
        **kwargs: passed to `keras.callbacks.BackupAndRestore` (save_freq, double_checkpoint,
            delete_checkpoint).
    """

    def __init__(self, backup_dir: str, write_dir: str | None = None, **kwargs):
        super().__init__()
        self.backup_dir = backup_dir
        self.write_dir = write_dir or backup_dir
        self._reader = AtomicBackupAndRestore(backup_dir, **kwargs)
        self._writer = (self._reader if self.write_dir == backup_dir else
                        AtomicBackupAndRestore(self.write_dir, **kwargs))

    def set_model(self, model):
        super().set_model(model)
        self._reader.set_model(model)
        self._writer.set_model(model)

    def on_train_begin(self, logs=None):
        self._reader.on_train_begin(logs)
        self._check_same_epoch(restored_epoch(self.backup_dir))

    def on_epoch_end(self, epoch, logs=None):
        self._writer.on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._writer.on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        self._writer.on_train_end(logs)

    def _check_same_epoch(self, epoch: int) -> None:
        strategy = self.model.distribute_strategy
        if worker_role(strategy).num_workers < 2:
            return
        # Only SUM and MEAN exist: the epochs agree iff n * sum(e^2) == sum(e)^2.
        local = strategy.run(lambda: tf.constant([1, epoch, epoch * epoch], tf.int64))
        n, total, squares = (int(v) for v in strategy.reduce("SUM", local, axis=None).numpy())
        if n * squares != total * total:
            raise ValueError(
                f"workers resumed from different epochs (this one: {epoch}); every worker "
                f"must see the chief's backup in {self.backup_dir} (put the workdir on a file "
                "system shared by all workers).")


def backup_metadata(backup_dir: str) -> dict:
    """A backup folder's metadata ({} if none): the completed epochs (`epoch`) and, in the
    atomic layout, the weights file that goes with them (`weights`; Keras's own layout has
    `latest.weights.h5`)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def backup_weights_path(backup_dir: str) -> str:
    """The weights file of a backup folder's last completed epoch (either layout)."""
    return os.path.join(backup_dir,
                        backup_metadata(backup_dir).get("weights", "latest.weights.h5"))


def restored_epoch(backup_dir: str) -> int:
    """Number of completed epochs recorded in a `BackupAndRestore` folder (0 if none)."""
    return int(backup_metadata(backup_dir).get("epoch", 0))


__all__ = ["AtomicBackupAndRestore", "SharedBackupAndRestore", "backup_metadata",
           "backup_weights_path", "restored_epoch"]
