"""The Square attack (Andriushchenko et al., 2020): a score-based random search, no gradients.

The L-infinity search is here; the L2 one is `adt_tf.attacks.square_l2`."""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.common import batch_shape
from adt_tf.attacks.random_search import margin_search, window_mask
from adt_tf.attacks.registry import register_attack
from adt_tf.attacks.square_l2 import square_l2_search
from adt_tf.core import checks
from adt_tf.core.noise import as_seed, fold
from adt_tf.threat import EVERY_NORM, Ball, L2Ball

# Iterations after which the square's area fraction p is halved (the paper's schedule, for
# 10,000 queries).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(iteration, num_queries: int, p_init: float,
                    rescale_schedule: bool = False) -> tf.Tensor:
    """The fraction p of the image a square covers at `iteration` (a float32 scalar tensor).

    Mathematical details:
        i' = i, or floor(10000 i / num_queries) if `rescale_schedule`;
        p = p_init / 2^(number of halving points < i'), the halving points being 10, 50, 200,
        500, 1000, 2000, 4000, 6000 and 8000. AutoAttack's standard version does not rescale
        (its Square has `resc_schedule=False`): with 5,000 queries p halves seven times.
    """
    if rescale_schedule:
        scaled = tf.cast(tf.cast(iteration, tf.float32) / num_queries * 10000.0, tf.int32)
    else:
        scaled = tf.cast(iteration, tf.int32)
    halvings = tf.reduce_sum(tf.cast(scaled > tf.constant(_HALVINGS), tf.float32))
    return tf.cast(p_init, tf.float32) / tf.pow(2.0, halvings)


def square_window(shape, p, seed) -> tf.Tensor:
    """Where the squares of one iteration lie: a bool mask [B, H, W, 1], one square each.

    Args:
        shape: the batch's shape [B, H, W, C] (a tensor or a list).
        p: the fraction of the image a square covers (`square_fraction`).
        seed: stateless seed of the positions.

    Mathematical details:
        side s = max(round(sqrt(p H W)), 1), at most min(H, W); the top-left corner is uniform
        in [0, max(H - s, 1)) x [0, max(W - s, 1)), AutoAttack's range (the last position is
        never drawn unless the square spans the image).
    """
    batch, height, width = shape[0], shape[1], shape[2]
    area = tf.cast(height * width, tf.float32)
    side = tf.cast(tf.round(tf.sqrt(tf.cast(p, tf.float32) * area)), tf.int32)
    side = tf.clip_by_value(side, 1, tf.minimum(height, width))
    seeds = tf.random.experimental.stateless_split(seed, 2)
    top = tf.random.stateless_uniform([batch], seeds[0], maxval=tf.maximum(height - side, 1),
                                      dtype=tf.int32)
    left = tf.random.stateless_uniform([batch], seeds[1], maxval=tf.maximum(width - side, 1),
                                       dtype=tf.int32)
    return window_mask(top, left, side, height, width)


@register_attack("square", title="Square", norms=EVERY_NORM, black_box=True)
def square(classifier, x, y, threat: Ball, *, num_queries: int = 5000, p_init: float = 0.8,
           rescale_schedule: bool = False, seed=0) -> tf.Tensor:
    """Untargeted Square attack on the margin loss, L-infinity or L2.

    Args:
        classifier: logits model (called with training=False); only its outputs are used.
        x: clean inputs [B, H, W, C] in [0, 1]; y: integer labels.
        threat: a threat model (`LinfBall`; `L2Ball` runs the L2
            search of `adt_tf.attacks.square_l2`, Algorithm 3 of the paper).
        num_queries: iterations, one model evaluation each, after the one of the initial
            stripes (5000 in AutoAttack's standard version, which counts the same way).
        p_init: the initial fraction of pixels a square covers (0.8, AutoAttack's setting for
            both norms).
        rescale_schedule: stretch the halving schedule to `num_queries` as if they were
            10,000 (the Square paper's code); False is AutoAttack's standard version.
        seed: int or stateless seed tensor.

    Mathematical details:
        (L-infinity; the L2 search is described in `square_l2_search`.)
        Minimise the margin m(x') = z_y(x') - max_{j != y} z_j(x') over the vertices of the
        threat. Start from vertical stripes: delta[:, w, c] = +-epsilon, one random sign per column
        and channel. At iteration i = 0, ..., num_queries - 1 draw a square of side
        s = max(round(sqrt(p_i H W)), 1) (at most min(H, W); p_i from `square_fraction`, the
        position from `square_window`) and set delta on it to +-epsilon, one random sign per
        channel; keep the candidate if it lowers the margin. An input stops being queried once
        misclassified.
        One addition to AutoAttack's copy, from the Square paper's own code: a square that
        would leave the image unchanged has its signs flipped rather than waste a query.

    Example:
        >>> x_adv = square(model, x, y, 8 / 255, num_queries=1000)

    Reference:
        Andriushchenko, Croce, Flammarion, Hein. "Square Attack: a query-efficient black-box
        adversarial attack via random search", ECCV 2020, Algorithms 1 and 2.

    Returns:
        x_adv, same shape and dtype as x.
    """
    num_queries = checks.check_positive_int(num_queries, "num_queries")
    p_init = checks.check_in_range(p_init, "p_init", 1e-6, 1.0)
    rescale_schedule = bool(rescale_schedule)
    x = tf.convert_to_tensor(x)
    base = as_seed(seed)
    if isinstance(threat, L2Ball):
        return square_l2_search(
            classifier, x, y, threat, num_queries,
            lambda i: square_fraction(i, num_queries, p_init, rescale_schedule), base)
    shape = tf.shape(x)
    batch, width, channels = shape[0], shape[2], shape[3]
    eps = tf.cast(threat.epsilon, x.dtype)

    def signs(shape_, seed_):
        bits = tf.random.stateless_uniform(shape_, seed=seed_, maxval=2, dtype=tf.int32)
        return tf.cast(2 * bits - 1, x.dtype)

    delta = eps * signs(tf.stack([batch, 1, width, channels]), fold(base, 0))
    delta = delta * tf.ones_like(x)

    def propose(i, x_best):
        p = square_fraction(i, num_queries, p_init, rescale_schedule)
        seeds = tf.random.experimental.stateless_split(fold(base, 1, i), 2)
        window = tf.broadcast_to(square_window(shape, p, seeds[0]), tf.shape(x))
        corner = eps * signs(tf.stack([batch, 1, 1, channels]), seeds[1])
        candidate = threat.project(tf.where(window, x + corner, x_best), x)
        # A square that repeats the current values would waste a query: flip its signs.
        unchanged = tf.reduce_all(tf.logical_or(tf.logical_not(window),
                                                tf.abs(candidate - x_best) < 1e-7),
                                  axis=[1, 2, 3])
        corner = tf.where(batch_shape(unchanged, corner), -corner, corner)
        return threat.project(tf.where(window, x + corner, x_best), x)

    return margin_search(classifier, x, y, threat.project(x + delta, x), propose, num_queries)
