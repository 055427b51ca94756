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


LOSSES = {"ce": per_example_ce, "margin": margin_loss}


def get_loss(name: str):
    """The per-example loss registered under `name` ('ce' or 'margin')."""
    return LOSSES[validation.check_choice(name, "attack loss", LOSSES)]


def loss_and_grad(classifier, x, y, loss_fn):
    """Per-example loss and its gradient w.r.t. the input (classifier in inference mode).

    Returns:
        (loss [B], grad [B, ...], logits [B, classes])
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = classifier(x, training=False)
        loss = loss_fn(logits, y)
    return loss, tape.gradient(loss, x), logits


def misclassified(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Bool [B]: the prediction differs from the label."""
    return tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(y, tf.int32))


def as_seed(seed) -> tf.Tensor:
    """A stateless seed tensor [2] from an int or an existing seed tensor."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.cast(seed, tf.int32)
