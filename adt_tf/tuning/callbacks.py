"""The callbacks of a search's trials: the robust-accuracy objective scored after every epoch,
and a trial's failure at the first non-finite loss."""

from __future__ import annotations

import math

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from adt_tf import validation
from adt_tf.attacks import pgd
from adt_tf.threat import Ball, as_threat

OBJECTIVE_NAME = "val_robust_accuracy"
CLEAN_NAME = "val_clean_accuracy"
ENTROPY_NAME = "entropy"  # the epoch mean of the methods' own `entropy` tracker


def objective() -> kt.Objective:
    """The search objective: PGD-k robust accuracy on the validation split, maximised."""
    return kt.Objective(OBJECTIVE_NAME, direction="max")


class RobustAccuracyCallback(keras.callbacks.Callback):
    """Sets `logs['val_robust_accuracy']` and `logs['val_clean_accuracy']` every epoch.

    Robust accuracy is the fraction of the fixed validation inputs classified correctly both
    clean and under PGD-k (the threat model's: L-inf or L2, step epsilon/4, uniform random
    start, a fixed seed), on
    `model.classifier` (the bare classifier of a method; the model itself otherwise). Put it
    before the callbacks that read these logs (keras-tuner's, History).

    Mathematical details:
        A_rob = (1/N) sum_i 1[f(x_i) = y_i and f(PGD_k(x_i)) = y_i], with PGD_k the
        per-example best of k steps x <- Proj_{B(x_i, eps) cap [0,1]}(x + eps/4 sign grad L)
        from a uniform random start (`adt_tf.attacks.pgd`). A search maximises A_rob of the
        best epoch of each trial: lambda* = argmax_lambda A_rob(theta_lambda).

    Example:
        >>> scorer = RobustAccuracyCallback(x_val, y_val, epsilon=8 / 255, steps=10)
        >>> trainer.fit(train_ds, epochs=5, callbacks=[scorer])  # logs val_robust_accuracy

    Args:
        x, y: validation images (uint8 or float in [0, 1]) and labels.
        epsilon: an L-inf radius, or a threat model (`adt_tf.threat.LinfBall`, `L2Ball`).
        steps: PGD iterations k (10).
        batch_size: inputs per evaluation batch.
        seed: seed of the random start (the same every epoch).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, epsilon: float | Ball, steps: int = 10,
                 batch_size: int = 256, seed: int = 0):
        super().__init__()
        self.x, self.y = x, y
        self.threat = as_threat(epsilon)
        self.epsilon = self.threat.epsilon
        self.steps = validation.check_positive_int(steps, "steps")
        self.batch_size = validation.check_positive_int(batch_size, "batch_size")
        self.seed = int(seed)

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
        for start in range(0, len(self.x), self.batch_size):
            x = self.x[start:start + self.batch_size]
            x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
            y = np.asarray(self.y[start:start + self.batch_size], np.int32)
            clean, adv = (p.numpy() for p in self._predict(tf.constant(x), tf.constant(y)))
            clean_ok += int(np.sum(clean == y))
            robust_ok += int(np.sum((clean == y) & (adv == y)))
        return clean_ok / len(self.x), robust_ok / len(self.x)

    def on_epoch_end(self, epoch, logs=None):
        clean, robust = self.evaluate()
        if logs is not None:
            logs[CLEAN_NAME] = clean
            logs[OBJECTIVE_NAME] = robust


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Fails the trial (keras-tuner goes on with the next) at the first NaN or inf loss."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise kt.errors.FailedTrialError(
                f"The training loss became {float(loss)} at step {batch + 1}; trial failed.")


__all__ = ["CLEAN_NAME", "ENTROPY_NAME", "OBJECTIVE_NAME", "FailOnNonFiniteLoss",
           "RobustAccuracyCallback", "objective"]
