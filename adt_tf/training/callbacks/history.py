"""history.csv, one row per epoch with the columns the logs have."""

from __future__ import annotations

import keras


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras's CSVLogger with the columns the logs have: Keras's own adds a `val_` copy of
    every column (empty throughout) when the first epoch logs no `val_` entry, which would
    put a `val_test_accuracy` column in a run that has no validation split."""

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and logs:
            self.keys = sorted(logs)
        super().on_epoch_end(epoch, logs)


__all__ = ["HistoryCSV"]
