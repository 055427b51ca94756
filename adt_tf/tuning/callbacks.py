"""The callbacks of a search's trials: the robust-accuracy objective scored after every epoch
(`adt_tf.training.callbacks.RobustAccuracyCallback`), and a trial's failure at the first non-finite
loss."""

from __future__ import annotations

import keras_tuner as kt

# The epoch scorer and the stopper are training's.
from adt_tf.training.callbacks.non_finite import StopOnNonFiniteLoss
from adt_tf.training.callbacks.robust_accuracy import (
    CLEAN_NAME,
    OBJECTIVE_NAME,
    RobustAccuracyCallback,
)

ENTROPY_NAME = "entropy"  # the epoch mean of the methods' own `entropy` tracker


def objective() -> kt.Objective:
    """The search objective: PGD-k robust accuracy on the validation split, maximised."""
    return kt.Objective(OBJECTIVE_NAME, direction="max")


def fail_on_non_finite_loss() -> StopOnNonFiniteLoss:
    """Fails the trial (keras-tuner goes on with the next) at the first NaN or inf loss."""
    return StopOnNonFiniteLoss(error=kt.errors.FailedTrialError)


__all__ = ["CLEAN_NAME", "ENTROPY_NAME", "OBJECTIVE_NAME", "fail_on_non_finite_loss",
           "RobustAccuracyCallback", "objective"]
