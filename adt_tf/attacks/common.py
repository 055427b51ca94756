"""Pieces shared by the gradient attacks: per-example losses, input gradients, checks."""

from __future__ import annotations

import keras
import tensorflow as tf

from adt_tf import validation


def per_example_ce(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of each example, in float32 (shape [B])."""
    return keras.losses.sparse_categorical_crossentropy(
        y, tf.cast(logits, tf.float32), from_logits=True)


def margin_loss(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """The C&W margin max_{j != y} z_j - z_y of each example (positive once misclassified)."""
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    onehot = tf.one_hot(tf.cast(y, tf.int32), num_classes, dtype=logits.dtype)
    true_logit = tf.reduce_sum(onehot * logits, axis=-1)
    other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    return other - true_logit


def _true_and_sorted(logits, y):
    logits = tf.cast(logits, tf.float32)
    onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
    true_logit = tf.reduce_sum(onehot * logits, axis=-1)
    best_other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    return logits, true_logit, best_other, tf.sort(logits, axis=-1, direction="DESCENDING")


def dlr_loss(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """The Difference of Logits Ratio of each example (Croce & Hein, 2020, Eq. 4).

    Mathematical details:
        DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), pi sorting the
        logits in decreasing order. It is invariant to a shift and a rescaling of the logits,
        so it cannot be defeated by scaling them up (which saturates the softmax and zeroes
        the cross-entropy gradient). Needs at least 3 classes.
    """
    _, true_logit, best_other, ranked = _true_and_sorted(logits, y)
    return -(true_logit - best_other) / (ranked[:, 0] - ranked[:, 2] + 1e-12)


def targeted_dlr_loss(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """The targeted DLR loss of APGD-T (Croce & Hein, 2020, Eq. 5); needs at least 4 classes.

    Mathematical details:
        -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), t the target class.
    """
    logits, true_logit, _, ranked = _true_and_sorted(logits, y)
    target_logit = tf.gather(logits, tf.cast(target, tf.int32), batch_dims=1)
    scale = ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12
    return -(true_logit - target_logit) / scale


LOSSES = {"ce": per_example_ce, "margin": margin_loss, "dlr": dlr_loss}


def get_loss(name: str):
    """The per-example loss registered under `name` ('ce', 'margin' or 'dlr')."""
    return LOSSES[validation.check_choice(name, "attack loss", LOSSES)]


def loss_and_grad(classifier, x, y, loss_fn, training: bool = False):
    """Per-example loss and its gradient w.r.t. the input (classifier in inference mode,
    unless `training`: then BatchNorm normalises with the batch's statistics and updates its
    running ones, as Fast AT's reference takes its FGSM step).

    A classifier whose output does not depend on its input through differentiable ops (a
    `tf.stop_gradient` inside it) gets a zero gradient, not None: the attack then runs and
    fails visibly, and the gradient check of the evaluation flags the model.

    Returns:
        (loss [B], grad [B, ...], logits [B, classes])
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = classifier(x, training=training)
        loss = loss_fn(logits, y)
    grad = tape.gradient(loss, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, grad, logits


def misclassified(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Bool [B]: the prediction differs from the label."""
    return tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))


def correct(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Bool [B]: the prediction equals the label."""
    return tf.logical_not(misclassified(logits, y))


def target_classes(logits: tf.Tensor, num_targets: int, *, attack: str,
                   min_classes: int = 2) -> tuple[tf.Tensor, int]:
    """The targets of a targeted attack, ranked by the clean logits (AutoAttack's choice).

    Target number r (0-based) of an example is the class of rank r + 2 in its clean logits:
    the highest one is the true class of a correctly classified input, so it is skipped.

    Args:
        logits: clean logits [B, classes].
        num_targets: how many targets are wanted; capped at classes - 1 when the number of
            classes is known statically.
        attack: the attack's name, for the error message.
        min_classes: the fewest classes the attack works with.

    Returns:
        (targets int32 [B, n], n), n = min(num_targets, classes - 1).
    """
    num_targets = validation.check_positive_int(num_targets, "num_targets")
    num_classes = logits.shape[-1]
    if num_classes is not None:
        if num_classes < min_classes:
            raise ValueError(f"{attack} needs at least {min_classes} classes, got "
                             f"{num_classes}.")
        num_targets = min(num_targets, num_classes - 1)
    ranked = tf.argsort(tf.cast(logits, tf.float32), axis=-1, direction="DESCENDING")
    return tf.cast(ranked[:, 1:num_targets + 1], tf.int32), num_targets


def as_seed(seed) -> tf.Tensor:
    """A stateless seed tensor [2] from an int or an existing seed tensor."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.cast(seed, tf.int32)


def fold(seed: tf.Tensor, *values) -> tf.Tensor:
    """A new stateless seed derived from `seed` and the given integers (in order)."""
    for value in values:
        seed = tf.random.experimental.stateless_fold_in(seed, value)
    return seed


def select(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Per example (mask [B]), a where mask else b; a and b of shape [B, ...]."""
    shape = tf.concat([tf.shape(mask), tf.ones(tf.rank(a) - 1, tf.int32)], axis=0)
    return tf.where(tf.reshape(mask, shape), a, b)


def batch_shape(mask: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """mask [B] reshaped to broadcast against `like` [B, ...]."""
    shape = tf.concat([tf.shape(mask), tf.ones(tf.rank(like) - 1, tf.int32)], axis=0)
    return tf.reshape(mask, shape)
