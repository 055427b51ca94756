"""Accuracy of a classifier on clean inputs and under an attack, batch by batch."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        if xb.dtype == np.uint8:
            xb = xb.astype(np.float32) / 255.0
        yield start, tf.constant(xb, tf.float32), tf.constant(y[start:start + batch_size],
                                                              tf.int32)


def predict_labels(classifier: keras.Model, x: tf.Tensor) -> np.ndarray:
    return np.argmax(classifier(x, training=False).numpy(), axis=-1)


def correct_under_attack(classifier: keras.Model, x: np.ndarray, y: np.ndarray,
                         attack: Callable | None, *, batch_size: int = 256,
                         jit_compile: bool = False, verbose: bool = True,
                         label: str = "attack") -> np.ndarray:
    """Per-example correctness (bool [N]) of the classifier on attack(classifier, x, y).

    Args:
        classifier: logits model.
        x: images, uint8 (scaled to [0, 1] here) or float in [0, 1]; y: integer labels.
        attack: a function (classifier, x, y) -> x_adv, or None for clean inputs. It is
            traced once with tf.function (XLA if `jit_compile`).
        batch_size: inputs per batch.
        verbose: show a progress bar.
    """
    if attack is None:
        def run(xb, yb):
            return xb
    else:
        run = tf.function(lambda xb, yb: attack(classifier, xb, yb), jit_compile=jit_compile,
                          reduce_retracing=True)
    correct = np.zeros(len(x), dtype=bool)
    bar = keras.utils.Progbar(len(x), unit_name="input") if verbose else None
    for start, xb, yb in _batches(x, y, batch_size):
        x_adv = run(xb, yb)
        correct[start:start + len(yb)] = predict_labels(classifier, x_adv) == yb.numpy()
        if bar is not None:
            bar.add(len(yb), values=[(label + "_acc", float(correct[:start + len(yb)].mean()))])
    return correct
