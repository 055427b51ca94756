"""The learning rate in each epoch's logs (history.csv, TensorBoard)."""

from __future__ import annotations

import keras


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate each epoch trained with to its logs (`learning_rate` in
    history.csv and TensorBoard), read at the epoch's first step."""

    def __init__(self):
        super().__init__()
        self._rate = None

    def on_epoch_begin(self, epoch, logs=None):
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._rate is not None:
            logs["learning_rate"] = self._rate


__all__ = ["LogLearningRate"]
