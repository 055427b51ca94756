"""Pieces shared by the attacks: per-example predicates, target ranking, masked selection.

Their per-example losses and input gradients live in `adt_tf.numerics.losses`, their seeds in
`adt_tf.core.noise` (the layers above the attacks use those too).
"""

from __future__ import annotations

import tensorflow as tf

from adt_tf.core import checks


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
    num_targets = checks.check_positive_int(num_targets, "num_targets")
    num_classes = logits.shape[-1]
    if num_classes is not None:
        if num_classes < min_classes:
            raise ValueError(f"{attack} needs at least {min_classes} classes, got "
                             f"{num_classes}.")
        num_targets = min(num_targets, num_classes - 1)
    ranked = tf.argsort(tf.cast(logits, tf.float32), axis=-1, direction="DESCENDING")
    return tf.cast(ranked[:, 1:num_targets + 1], tf.int32), num_targets


def select(mask: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Per example (mask [B]), a where mask else b; a and b of shape [B, ...]."""
    shape = tf.concat([tf.shape(mask), tf.ones(tf.rank(a) - 1, tf.int32)], axis=0)
    return tf.where(tf.reshape(mask, shape), a, b)


def batch_shape(mask: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """mask [B] reshaped to broadcast against `like` [B, ...]."""
    shape = tf.concat([tf.shape(mask), tf.ones(tf.rank(like) - 1, tf.int32)], axis=0)
    return tf.reshape(mask, shape)
