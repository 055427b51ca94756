"""Stopping at the first non-finite loss: `StopOnNonFiniteLoss` raises (never sets
`stop_training`), so the epoch never ends normally and the backup of the last good epoch is
not overwritten with broken weights; the error it raises is training's `NonFiniteLossError`,
or a search's failed trial (keras-tuner goes on with the next)."""

from __future__ import annotations

import math

import keras


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops `fit` at the first non-finite loss, naming the epoch and the step.

    It raises instead of setting `stop_training`, so the epoch never ends normally and the
    backup of the last good epoch is not overwritten with broken weights.

    Args:
        backup_dir: the run's backup folder (the message says whether an epoch was kept
            there and how to resume); None for a search's trial.
        error: the exception raised: `NonFiniteLossError` (training) or keras-tuner's
            `FailedTrialError` (a search goes on with its next trial).
    """

    def __init__(self, backup_dir: str | None = None,
                 error: type[Exception] = NonFiniteLossError):
        super().__init__()
        self.backup_dir = backup_dir
        self.error = error
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise self.error(f"The training loss became {float(loss)} at epoch "
                             f"{self._epoch + 1}, step {batch + 1}; {self._consequence()}")

    def _consequence(self) -> str:
        if self.backup_dir is None:
            return "trial failed."
        from adt_tf.training.callbacks.backup import restored_epoch

        if restored_epoch(self.backup_dir):
            return (f"training stopped. The checkpoint of the last completed epoch is kept in "
                    f"{self.backup_dir}; rerun with the same settings to resume from it, or "
                    "check the data.")
        return ("training stopped. No epoch was completed, so nothing was kept: lower --lr or "
                "check the data, then rerun (the same --workdir accepts the new settings).")


__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss"]
