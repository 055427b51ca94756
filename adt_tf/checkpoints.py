"""Robust validation during training and the checkpoint it selects (the training protocol of
Rice, Wong, Kolter, "Overfitting in adversarially robust deep learning", ICML 2020).

- `RobustAccuracyCallback` scores the classifier on held-out inputs at the end of an epoch
  (clean accuracy and accuracy under the evaluation's own PGD) and puts both in the epoch's
  Keras logs, so they reach the progress bar, history.csv, TensorBoard and keras-tuner.
- `BestCheckpoint` keeps `best.keras`, the classifier of the epoch with the highest
  `val_robust_accuracy` (ties broken by `val_clean_accuracy`), and its record `best.json`,
  both written atomically and restored on a resume, so a kill never resets the best so far.
- `averaged_weights` swaps the optimiser's exponential moving average of the weights
  (Keras's `use_ema`) into the model for the duration of a `with` block: validation and the
  best checkpoint then see the averaged weights, as the exports do (Keras writes the average
  into the model when `fit` ends).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from adt_tf import checks, files
from adt_tf.attacks import pgd
from adt_tf.data import as_unit_float
from adt_tf.threat import Ball, as_threat

OBJECTIVE_NAME = "val_robust_accuracy"
CLEAN_NAME = "val_clean_accuracy"
BEST_FILE, BEST_RECORD = "best.keras", "best.json"


@contextlib.contextmanager
def averaged_weights(model):
    """Within the block, `model`'s trainable weights are its optimiser's moving averages
    (when the optimiser keeps them: `use_ema=True`; otherwise nothing changes); after it,
    the weights being trained again. BatchNorm's running statistics are not averaged (Keras
    averages trainable variables only), see docs/methods.md."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "use_ema", False) or not getattr(
            optimizer, "built", False):
        yield
        return
    # The classifier's: what the optimiser trains (an amortised method's generator and
    # encoder have optimisers of their own, without an average).
    variables = list(getattr(model, "classifier", model).trainable_variables)
    saved = [v.numpy() for v in variables]
    optimizer.finalize_variable_values(variables)
    try:
        yield
    finally:
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(value)


class RobustAccuracyCallback(keras.callbacks.Callback):
    """Sets `logs['val_robust_accuracy']` and `logs['val_clean_accuracy']` at the end of
    every `every`-th epoch and of the last one (NaN on the others, so every row of
    history.csv has the columns; a run shorter than `every` epochs is still scored once).

    Robust accuracy is the fraction of the fixed validation inputs classified correctly both
    clean and under PGD-k (the threat model's: L-inf or L2, step epsilon/4, uniform random
    start, a fixed seed; `adt_tf.attacks.pgd`, the evaluation's), on `model.classifier` (the
    bare classifier of a method; the model itself otherwise) in inference mode, with the
    averaged weights when the optimiser keeps an average (`averaged_weights`). Put it before
    the callbacks that read these logs (keras-tuner's, `BestCheckpoint`, CSVLogger).

    Mathematical details:
        A_rob = (1/N) sum_i 1[f(x_i) = y_i and f(PGD_k(x_i)) = y_i], with PGD_k the
        per-example best of k steps x <- Proj_{B(x_i, eps) cap [0,1]}(x + eps/4 sign grad L)
        from a uniform random start. A search maximises A_rob of the best epoch of each
        trial: lambda* = argmax_lambda A_rob(theta_lambda); training keeps the epoch of the
        highest A_rob (`BestCheckpoint`).

    Example:
        >>> scorer = RobustAccuracyCallback(x_val, y_val, LinfBall(8 / 255), steps=10)
        >>> trainer.fit(train_ds, epochs=5, callbacks=[scorer])  # logs val_robust_accuracy

    Args:
        x, y: validation images (uint8 or float in [0, 1]) and labels.
        threat: the ball (`adt_tf.threat.LinfBall`, `L2Ball`); a number is an L-inf radius.
        steps: PGD iterations k (10).
        batch_size: inputs per evaluation batch.
        seed: seed of the random start (the same every epoch).
        every: score every this many epochs (1), counted from 1.
        prefix: the logs' names are `<prefix>clean_accuracy` and `<prefix>robust_accuracy`
            ("val_"; a benchmark monitoring other inputs, e.g. "test_", uses its own, never
            read by `BestCheckpoint` or a search).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, threat: Ball | float, steps: int = 10,
                 batch_size: int = 256, seed: int = 0, every: int = 1, prefix: str = "val_"):
        super().__init__()
        self.x, self.y = x, y
        self.threat = as_threat(threat)
        self.epsilon = self.threat.epsilon
        self.steps = checks.check_positive_int(steps, "steps")
        self.batch_size = checks.check_positive_int(batch_size, "batch_size")
        self.seed = int(seed)
        self.every = checks.check_positive_int(every, "validation_every")
        self.names = (f"{prefix}clean_accuracy", f"{prefix}robust_accuracy")

    def on_train_begin(self, logs=None):
        # Traced once per training (not once per epoch): the classifier is fixed during fit.
        classifier = getattr(self.model, "classifier", self.model)

        def predict(x, y):
            clean = tf.argmax(classifier(x, training=False), -1, output_type=tf.int32)
            x_adv = pgd(classifier, x, y, self.threat, steps=self.steps,
                        step_size=self.epsilon / 4, random_start=True, seed=self.seed)
            adv = tf.argmax(classifier(x_adv, training=False), -1, output_type=tf.int32)
            return clean, adv

        self._predict = tf.function(predict, reduce_retracing=True)

    def evaluate(self) -> tuple[float, float]:
        """(clean accuracy, robust accuracy) of the current model on the validation inputs."""
        if getattr(self, "_predict", None) is None:
            self.on_train_begin()
        clean_ok = robust_ok = 0
        with averaged_weights(self.model):
            for start in range(0, len(self.x), self.batch_size):
                x = self.x[start:start + self.batch_size]
                x = as_unit_float(x)
                y = np.asarray(self.y[start:start + self.batch_size], np.int32)
                clean, adv = (p.numpy() for p in self._predict(tf.constant(x), tf.constant(y)))
                clean_ok += int(np.sum(clean == y))
                robust_ok += int(np.sum((clean == y) & (adv == y)))
        return clean_ok / len(self.x), robust_ok / len(self.x)

    def on_epoch_end(self, epoch, logs=None):
        last = (self.params or {}).get("epochs")
        if (epoch + 1) % self.every and epoch + 1 != last:  # the last epoch is always scored
            clean = robust = float("nan")
        else:
            clean, robust = self.evaluate()
        if logs is not None:
            logs[self.names[0]] = clean
            logs[self.names[1]] = robust


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


__all__ = ["BEST_FILE", "BEST_RECORD", "CLEAN_NAME", "OBJECTIVE_NAME", "BestCheckpoint",
           "RobustAccuracyCallback", "averaged_weights", "read_best"]
