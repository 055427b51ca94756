"""`adt_tf.training.callbacks.non_finite`: training stops at the first non-finite loss and
says whether an epoch was kept (the end-to-end case: tests/trainers/test_train_cli.py)."""

import json
import os

import pytest

from adt_tf.training.callbacks import NonFiniteLossError, StopOnNonFiniteLoss


def test_the_message_says_whether_an_epoch_was_kept(tmp_path):
    stopper = StopOnNonFiniteLoss(str(tmp_path))
    stopper.on_epoch_begin(0)
    stopper.on_train_batch_end(0, {"loss": 1.0})
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 2; training stopped. No epoch"):
        stopper.on_train_batch_end(1, {"loss": float("nan")})
    with open(os.path.join(tmp_path, "training_metadata.json"), "w") as f:
        json.dump({"epoch": 3}, f)
    stopper.on_epoch_begin(3)
    with pytest.raises(NonFiniteLossError, match=f"kept in {tmp_path}; rerun"):
        stopper.on_train_batch_end(0, {"loss": float("-inf")})
