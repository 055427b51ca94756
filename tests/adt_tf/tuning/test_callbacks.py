"""`adt_tf.tuning.callbacks`: the search's objective and a trial's failure at a non-finite
loss."""

import keras_tuner as kt
import pytest

from adt_tf.tuning.callbacks import fail_on_non_finite_loss, objective


def test_the_objective_is_validation_robust_accuracy_maximised():
    goal = objective()
    assert goal.name == "val_robust_accuracy" and goal.direction == "max"


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_non_finite_loss_fails_the_trial_and_a_finite_one_does_not(loss):
    stopper = fail_on_non_finite_loss()
    stopper.on_epoch_begin(1)
    stopper.on_train_batch_end(0, {"loss": 2.3})  # finite: nothing happens
    with pytest.raises(kt.errors.FailedTrialError, match=r"epoch 2, step 4; trial failed"):
        stopper.on_train_batch_end(3, {"loss": loss})
