"""The L2 Square attack (Andriushchenko et al., 2020, Algorithm 3): random search over pairs
of windows that move L2 mass from one square of the image to another.

`adt_tf.attacks.square` calls `square_l2_search` when its threat model is an `L2Ball`; this
module holds the L2 search and its perturbation patterns, every draw stateless and every
shape dynamic so that the whole search is one `tf.while_loop`.
"""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.random_search import margin_search, window_mask
from adt_tf.core.noise import fold
from adt_tf.threat import L2Ball


def _rectangles(rows: tf.Tensor, cols: tf.Tensor, height, width) -> tf.Tensor:
    """The unnormalised concentric-rectangle bump of a height x width block at (rows, cols).

    Mathematical details:
        The Square paper's pseudo-Gaussian block adds 1 / (k + 1)^2 on the rectangle of
        half-size k around the centre (height // 2, width // 2), for k = 0, ..., K - 1 with
        K = max(height // 2, width // 2) + 1, each rectangle cut to the block. A cell at
        Chebyshev distance m = max(|row - height // 2|, |col - width // 2|) from the centre
        lies in the rectangles k >= m, so its value is sum_{k=m}^{K-1} 1 / (k + 1)^2; cells
        outside the block are 0.
    """
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    dist = tf.maximum(tf.abs(rows[:, None] - height // 2), tf.abs(cols[None, :] - width // 2))
    count = tf.maximum(height // 2, width // 2) + 1
    weights = 1.0 / tf.square(tf.cast(tf.range(1, count + 1), tf.float32))
    tails = tf.concat([tf.cumsum(weights, reverse=True), [0.0]], 0)  # tails[m] = sum_{k>=m}
    inside = ((rows[:, None] >= 0) & (rows[:, None] < height)
              & (cols[None, :] >= 0) & (cols[None, :] < width))
    return tf.where(inside, tf.gather(tails, tf.minimum(dist, count)), 0.0)


def _unit(block: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(block, tf.sqrt(tf.reduce_sum(tf.square(block))))


def eta_pattern(side, size: int) -> tf.Tensor:
    """The L2 Square attack's perturbation of a side x side square, in the top-left corner of a
    size x size grid (zeros elsewhere); unit L2 norm; float32 [size, size].

    Mathematical details:
        The top side // 2 rows hold a unit-norm `_rectangles` bump of that block, the other
        side - side // 2 rows minus a unit-norm bump of theirs, the whole scaled to unit norm:
        a positive and a negative blob side by side, so that the square moves mass without
        changing its total (AutoAttack's `eta`). The attack uses it as it is or transposed,
        with equal probability.
    """
    side = tf.cast(side, tf.int32)
    grid = tf.range(size)
    top = _unit(_rectangles(grid, grid, side // 2, side))
    bottom = _unit(_rectangles(grid - side // 2, grid, side - side // 2, side))
    return _unit(top - bottom)


def _place(patterns: tf.Tensor, top: tf.Tensor, left: tf.Tensor, height, width) -> tf.Tensor:
    """patterns [B, S, S] (content in the top-left corner) moved to per-example offsets
    (top, left) [B] of an image [B, height, width]; the rest of the image is 0."""
    size = tf.shape(patterns)[1]
    rows = tf.range(height)[None, :] - top[:, None]
    cols = tf.range(width)[None, :] - left[:, None]
    rows_ok = (rows >= 0) & (rows < size)
    cols_ok = (cols >= 0) & (cols < size)
    picked = tf.gather(patterns, tf.clip_by_value(rows, 0, size - 1), batch_dims=1)
    picked = tf.gather(picked, tf.clip_by_value(cols, 0, size - 1), axis=2, batch_dims=1)
    return tf.where(rows_ok[:, :, None] & cols_ok[:, None, :], picked, 0.0)


def _signs(shape, seed, dtype) -> tf.Tensor:
    bits = tf.random.stateless_uniform(shape, seed=seed, maxval=2, dtype=tf.int32)
    return tf.cast(2 * bits - 1, dtype)


def _oriented(side, size: int, flip: tf.Tensor) -> tf.Tensor:
    """`eta_pattern(side)` per example, transposed where flip [B] is true: [B, size, size]."""
    pattern = eta_pattern(side, size)
    return tf.where(flip[:, None, None], tf.transpose(pattern)[None], pattern[None])


def _l2(t: tf.Tensor, axis) -> tf.Tensor:
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=axis, keepdims=True))


def initial_perturbation(shape, seed: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
    """The L2 search's start before scaling: a grid of `eta_pattern` tiles, [B, H, W, C].

    Mathematical details:
        Tiles of side s = max(H // 5, 1) start at row and column o = (H - 5 s) // 2, H // s
        down and W // s across (cut at the image's border); each holds the pattern (transposed
        with probability 1/2) times a random sign per example and channel. The search scales
        it to the sphere of radius epsilon (AutoAttack's L2 initialisation).
    """
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    side = tf.maximum(height // 5, 1)
    offset = (height - 5 * side) // 2
    across, down = width // side, height // side
    size = tf.minimum(height, width)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    pattern = eta_pattern(side, size)
    both = tf.stack([pattern, tf.transpose(pattern)])  # [2, S, S]

    def tiles(n, extent):
        pos = tf.range(extent) - offset
        index = tf.math.floordiv(pos, side)
        valid = (pos >= 0) & (index < n)
        return tf.where(valid, index, 0), tf.where(valid, pos - index * side, 0), valid

    tile_r, local_r, ok_r = tiles(down, height)
    tile_c, local_c, ok_c = tiles(across, width)
    values = tf.gather(tf.gather(both, local_r, axis=1), local_c, axis=2)  # [2, H, W]
    flips = tf.random.stateless_uniform(tf.stack([batch, down, across]), seeds[0], maxval=2,
                                        dtype=tf.int32)
    flip = tf.gather(tf.gather(flips, tile_r, axis=1), tile_c, axis=2)  # [B, H, W]
    chosen = tf.where(flip > 0, values[1][None], values[0][None])
    signs = _signs(tf.stack([batch, down, across, channels]), seeds[1], tf.float32)
    signs = tf.gather(tf.gather(signs, tile_r, axis=1), tile_c, axis=2)  # [B, H, W, C]
    ok = tf.cast(ok_r[:, None] & ok_c[None, :], tf.float32)[None, :, :, None]
    return tf.cast(chosen[..., None] * signs * ok, dtype)


def _side(p, height, width) -> tf.Tensor:
    """The window side of the L2 search at fraction p: round(sqrt(p H W)), at least 3, made odd,
    at most min(H, W)."""
    area = tf.cast(height * width, tf.float32)
    side = tf.maximum(tf.cast(tf.round(tf.sqrt(p * area)), tf.int32), 3)
    side = side + 1 - side % 2
    return tf.minimum(side, tf.minimum(height, width))


def square_l2_search(classifier, x: tf.Tensor, y: tf.Tensor, ball: L2Ball, num_queries: int,
                     fraction, base: tf.Tensor) -> tf.Tensor:
    """The L2 Square attack's random search (see `adt_tf.attacks.square.square`).

    Args:
        classifier, x, y: as `square`; x is [B, H, W, C].
        ball: the L2 threat model.
        num_queries: iterations after the initial query.
        fraction: iteration -> the window's area fraction p (`square_fraction`).
        base: stateless seed.

    Mathematical details:
        delta is kept on the sphere of radius epsilon before clipping to [0, 1]:
        x' = clip(x + epsilon delta / ||delta||). At iteration i draw a window W1 of side s
        (`_side`) and a second window W2 of the same side, uniformly placed (top-left corner
        in [0, H - s) x [0, W - s)). With d = x_best - x, per channel,
            u = eta +- (one sign per channel) + d|W1 / ||d|W1||,
            d|W1 <- u / ||u|| * sqrt(max(epsilon^2 - ||d||^2, 0) / C + ||d|W1 u W2||^2),
        d|W2 <- 0 outside W1, and the candidate is clip(x + epsilon d / ||d||): mass moves
        from W2 into a fresh bump on W1. A candidate is kept if it lowers the margin
        z_y - max_{j != y} z_j; an input stops being queried once misclassified.
        AutoAttack draws one window position and orientation for the whole batch; here each
        input draws its own (independent of its batch companions), as in our L-infinity
        search.
    """
    x_in = x
    x = tf.cast(x, tf.float32)
    shape = tf.shape(x)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    size = tf.minimum(height, width)
    dtype = x.dtype
    eps = tf.cast(ball.epsilon, dtype)

    def on_sphere(delta):
        return ball.clip(x + eps * delta / (_l2(delta, [1, 2, 3]) + 1e-12))

    def propose(i, x_best):
        side = _side(fraction(i), height, width)
        seeds = tf.random.experimental.stateless_split(fold(base, 1, i), 6)
        span_h, span_w = tf.maximum(height - side, 1), tf.maximum(width - side, 1)

        def corner(seed, span):
            return tf.random.stateless_uniform([batch], seed, maxval=span, dtype=tf.int32)

        top1, left1 = corner(seeds[0], span_h), corner(seeds[1], span_w)
        top2, left2 = corner(seeds[2], span_h), corner(seeds[3], span_w)
        flip = tf.random.stateless_uniform([batch], seeds[4], maxval=2, dtype=tf.int32) > 0
        in1 = window_mask(top1, left1, side, height, width)
        in2 = window_mask(top2, left2, side, height, width)
        bump = tf.cast(_place(_oriented(side, size, flip), top1, left1, height, width),
                       dtype)[..., None]
        delta = x_best - x
        old = tf.where(in1, delta, 0.0)
        old = old / (1e-12 + _l2(old, [1, 2]))
        fresh = bump * _signs(tf.stack([batch, 1, 1, channels]), seeds[5], dtype) + old
        fresh = tf.where(in1, fresh, 0.0)
        room = tf.maximum(tf.square(eps) - tf.square(_l2(delta, [1, 2, 3])), 0.0)
        windows = _l2(tf.where(in1 | in2, delta, 0.0), [1, 2, 3])
        target = tf.sqrt(room / tf.cast(channels, dtype) + tf.square(windows))
        fresh = fresh / (1e-12 + _l2(fresh, [1, 2])) * target
        delta = tf.where(in1, fresh, tf.where(in2, 0.0, delta))
        return on_sphere(delta)

    x_best = margin_search(classifier, x, y,
                           on_sphere(initial_perturbation(shape, fold(base, 0), dtype)),
                           propose, num_queries)
    return tf.cast(x_best, x_in.dtype)


__all__ = ["eta_pattern", "initial_perturbation", "square_l2_search"]
