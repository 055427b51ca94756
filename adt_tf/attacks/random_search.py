"""What both Square searches share (L-infinity and L2): their windows, and the loop that
proposes a candidate, queries the model once, keeps it where it lowers the margin, and stops
querying an input once it is broken."""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.common import batch_shape, misclassified
from adt_tf.numerics.losses import margin_loss


def window_mask(top: tf.Tensor, left: tf.Tensor, side, height, width) -> tf.Tensor:
    """Bool [B, H, W, 1]: the side x side square of each example with corner (top, left) [B]."""
    top, left = tf.reshape(top, [-1, 1, 1, 1]), tf.reshape(left, [-1, 1, 1, 1])
    rows = tf.reshape(tf.range(height), [1, -1, 1, 1])
    cols = tf.reshape(tf.range(width), [1, 1, -1, 1])
    return tf.logical_and(tf.logical_and(rows >= top, rows < top + side),
                          tf.logical_and(cols >= left, cols < left + side))


def margin_search(classifier, x: tf.Tensor, y: tf.Tensor, x_start: tf.Tensor, propose,
                  num_queries: int) -> tf.Tensor:
    """Random search on the margin z_y - max_{j != y} z_j from x_start.

    Args:
        classifier: logits model (called with training=False).
        x, y: the clean inputs (their static shape is the loop's) and labels.
        x_start: the first point (queried once).
        propose: (iteration i, x_best) -> a candidate of x's shape.
        num_queries: iterations, one query each.

    Returns:
        The best point found per input (the first broken one, once broken).
    """

    def query(x_adv):
        logits = classifier(x_adv, training=False)
        return -margin_loss(logits, y), misclassified(logits, y)

    margin, done = query(x_start)

    def body(i, x_best, margin, done):
        candidate = propose(i, x_best)
        new_margin, new_done = query(candidate)
        accept = tf.logical_and(tf.logical_not(done), new_margin < margin)
        x_best = tf.where(batch_shape(accept, x), candidate, x_best)
        margin = tf.where(accept, new_margin, margin)
        done = tf.logical_or(done, tf.logical_and(accept, new_done))
        # A static batch of 1 broadcasts against the dynamic shapes above to an unknown batch
        # size, which tf.while_loop refuses as a changed loop shape: restore the static ones.
        return (i + 1, tf.ensure_shape(x_best, x.shape), tf.ensure_shape(margin, x.shape[:1]),
                tf.ensure_shape(done, x.shape[:1]))

    _, x_best, _, _ = tf.while_loop(
        lambda i, _x, _m, d: tf.logical_and(i < num_queries, tf.logical_not(tf.reduce_all(d))),
        body, (tf.constant(0), x_start, margin, done), maximum_iterations=num_queries)
    return x_best


__all__ = ["margin_search", "window_mask"]
