"""The best-epoch keeper: `BestCheckpoint` keeps `best.keras`, the classifier of the epoch with
the highest `val_robust_accuracy` (ties broken by `val_clean_accuracy`), and its record
`best.json`, both committed so that a kill at any moment leaves them whole, and restored on a
resume, so a kill never resets the best so far."""

from __future__ import annotations

import json
import math
import os
import sys

import keras

from adt_tf.core import files
from adt_tf.numerics.optimizers import averaged_weights
from adt_tf.training.callbacks.robust_accuracy import CLEAN_NAME, OBJECTIVE_NAME
from adt_tf.training.workdir import BEST_FILE, BEST_RECORD


def read_best(workdir: str) -> dict | None:
    """The record of a run's best checkpoint (`best.json`), or None."""
    path = os.path.join(workdir, BEST_RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps `<workdir>/best.keras`, the classifier of the epoch with the highest
    `val_robust_accuracy` (ties: the higher `val_clean_accuracy`, then the earlier epoch),
    and `<workdir>/best.json` ({epoch (counted from 1), val_robust_accuracy,
    val_clean_accuracy}).

    Keras's `ModelCheckpoint(save_best_only=True)` watches one metric and forgets its best
    value on a resume; this one breaks ties by a second metric, saves the bare classifier
    (with the averaged weights when the optimiser keeps an average), and restores the best so
    far from best.json when training starts, so a killed and resumed run keeps its best.

    Writes are a commit that a kill at any moment leaves whole: the model goes to
    `best.keras.tmp.keras` (complete once written), then the record to `best.json.pending`
    (atomically, so it exists only once the model before it is complete), then the model is
    renamed into place, then the pending record. `on_train_begin` finishes a commit whose
    pending record exists (renaming the model first if it has not been) and removes a
    temporary model without one (possibly torn: its epoch was not backed up yet, since this
    callback runs before the backup, so the resumed run redoes and rescores it). A record
    whose `best.keras` is gone (deleted by hand) is forgotten, with a warning: the next best
    epoch writes both again.

    Args:
        workdir: the folder of best.keras and best.json.
    """

    def __init__(self, workdir: str):
        super().__init__()
        self.workdir = workdir
        self.best: dict | None = None

    @property
    def _paths(self):
        model = os.path.join(self.workdir, BEST_FILE)
        record = os.path.join(self.workdir, BEST_RECORD)
        return model, record, model + ".tmp.keras", record + ".pending"

    def on_train_begin(self, logs=None):
        model, record, model_tmp, pending = self._paths
        if os.path.exists(pending):  # a commit whose model was complete: finish it
            if os.path.exists(model_tmp):
                os.replace(model_tmp, model)
            os.replace(pending, record)
        if os.path.exists(model_tmp):  # no record followed it: possibly torn, never used
            os.remove(model_tmp)
        self.best = read_best(self.workdir)
        if self.best is not None and not os.path.exists(model):
            print(f"warning: {record} names epoch {self.best['epoch']} but {model} is "
                  "missing; the record is forgotten and the next best epoch writes both "
                  "again.", file=sys.stderr)
            os.remove(record)
            self.best = None

    @staticmethod
    def _key(entry):
        return (entry["val_robust_accuracy"], entry["val_clean_accuracy"], -entry["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        robust, clean = logs.get(OBJECTIVE_NAME), logs.get(CLEAN_NAME)
        if robust is None or clean is None or math.isnan(robust) or math.isnan(clean):
            return
        entry = {"epoch": epoch + 1, OBJECTIVE_NAME: float(robust), CLEAN_NAME: float(clean)}
        if self.best is not None and self._key(entry) <= self._key(self.best):
            return
        model, record, model_tmp, pending = self._paths
        classifier = getattr(self.model, "classifier", self.model)
        with averaged_weights(self.model):
            classifier.save(model_tmp)
        files.write_json(pending, entry)  # exists only once the model is whole
        os.replace(model_tmp, model)
        os.replace(pending, record)
        self.best = entry


__all__ = ["BestCheckpoint", "read_best"]
