"""Robust validation during training (the protocol of Rice, Wong, Kolter, "Overfitting in
adversarially robust deep learning", ICML 2020): `RobustAccuracyCallback` scores the
classifier on held-out inputs at the end of an epoch (clean accuracy and accuracy under the
evaluation's own PGD) and puts both in the epoch's Keras logs, so they reach the progress
bar, history.csv, TensorBoard, the best checkpoint and keras-tuner."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from adt_tf.attacks import pgd
from adt_tf.core import checks
from adt_tf.data import as_unit_float
from adt_tf.numerics.optimizers import averaged_weights
from adt_tf.threat import Ball, as_threat

#: The logs' names of the validation split's robust and clean accuracy (what selects the
#: best epoch and what a search maximises).
OBJECTIVE_NAME = "val_robust_accuracy"
CLEAN_NAME = "val_clean_accuracy"


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


__all__ = ["CLEAN_NAME", "OBJECTIVE_NAME", "RobustAccuracyCallback"]
