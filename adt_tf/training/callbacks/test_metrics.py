"""The test split's clean numbers in each epoch's logs, for a run without a validation
split."""

from __future__ import annotations

import keras
import tensorflow as tf


class TestSplitMetrics(keras.callbacks.Callback):
    """Adds the classifier's clean loss and accuracy on the test split to each epoch's logs,
    as `test_loss` and `test_accuracy` (a run without a validation split watches the test
    split; its numbers are named for it, never `val_`). It chooses nothing."""

    def __init__(self, dataset: tf.data.Dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        result = self.model.evaluate(self.dataset, verbose=0, return_dict=True)
        logs.update({f"test_{k}": v for k, v in result.items()})


__all__ = ["TestSplitMetrics"]
