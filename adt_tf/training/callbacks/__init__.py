"""The Keras callbacks of a training run, one per module:

- `robust_accuracy`: `RobustAccuracyCallback`, robust validation after an epoch (and the
  logs' names `OBJECTIVE_NAME`, `CLEAN_NAME` that select the best epoch and a search's best);
- `best_checkpoint`: `BestCheckpoint`, best.keras and best.json, committed kill-safe;
- `backup`: `AtomicBackupAndRestore`, `SharedBackupAndRestore`: the per-epoch backup;
- `non_finite`: `StopOnNonFiniteLoss` (training's error, or a search's failed trial);
- `learning_rate`: `LogLearningRate`; `test_metrics`: `TestSplitMetrics`;
  `history`: `HistoryCSV`.

A method's own callbacks (AWP's epoch counter) live with the method
(`Method.training_callbacks()`).
"""

from adt_tf.training.callbacks.backup import (
    AtomicBackupAndRestore,
    SharedBackupAndRestore,
    restored_epoch,
)
from adt_tf.training.callbacks.best_checkpoint import BestCheckpoint, read_best
from adt_tf.training.callbacks.history import HistoryCSV
from adt_tf.training.callbacks.learning_rate import LogLearningRate
from adt_tf.training.callbacks.non_finite import NonFiniteLossError, StopOnNonFiniteLoss
from adt_tf.training.callbacks.robust_accuracy import (
    CLEAN_NAME,
    OBJECTIVE_NAME,
    RobustAccuracyCallback,
)
from adt_tf.training.callbacks.test_metrics import TestSplitMetrics

__all__ = ["CLEAN_NAME", "OBJECTIVE_NAME", "AtomicBackupAndRestore", "BestCheckpoint",
           "HistoryCSV", "LogLearningRate", "NonFiniteLossError", "RobustAccuracyCallback",
           "SharedBackupAndRestore", "StopOnNonFiniteLoss", "TestSplitMetrics", "read_best",
           "restored_epoch"]
