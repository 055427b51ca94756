"""The callbacks of a search's trials: the robust-accuracy objective scored after every epoch
(`adt_tf.checkpoints.RobustAccuracyCallback`), and a trial's failure at the first non-finite
loss."""

from __future__ import annotations

import math

import keras
import keras_tuner as kt

# The epoch scorer is training's too (held-out robust validation, the best checkpoint).
from adt_tf.checkpoints import CLEAN_NAME, OBJECTIVE_NAME, RobustAccuracyCallback

ENTROPY_NAME = "entropy"  # the epoch mean of the methods' own `entropy` tracker


def objective() -> kt.Objective:
    """The search objective: PGD-k robust accuracy on the validation split, maximised."""
    return kt.Objective(OBJECTIVE_NAME, direction="max")


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Fails the trial (keras-tuner goes on with the next) at the first NaN or inf loss."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise kt.errors.FailedTrialError(
                f"The training loss became {float(loss)} at step {batch + 1}; trial failed.")


__all__ = ["CLEAN_NAME", "ENTROPY_NAME", "OBJECTIVE_NAME", "FailOnNonFiniteLoss",
           "RobustAccuracyCallback", "objective"]
