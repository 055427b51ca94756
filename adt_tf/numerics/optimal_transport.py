"""Entropic optimal transport between two batches of features (the Sinkhorn distance).

Used by feature-scattering adversarial training (`adt_tf.methods.feascatter`), whose
perturbation maximises the transport cost between the clean and perturbed logit
distributions of a batch.
"""

from __future__ import annotations

import tensorflow as tf

from adt_tf.core import checks


def cosine_cost_matrix(x_features: tf.Tensor, y_features: tf.Tensor,
                       eps: float = 1e-6) -> tf.Tensor:
    """C_ij = max(0, 1 - cos(x_i, y_j)) between two batches of vectors ([m, d], [n, d]).

    The cosine uses vectors scaled to unit norm (a norm below sqrt(eps) counts as sqrt(eps),
    so an all-zero vector has cost 1 to everything instead of NaN).

    Returns:
        [m, n] float32 costs in [0, 2].
    """
    x = tf.math.l2_normalize(tf.cast(x_features, tf.float32), axis=-1, epsilon=eps)
    y = tf.math.l2_normalize(tf.cast(y_features, tf.float32), axis=-1, epsilon=eps)
    return tf.nn.relu(1.0 - tf.matmul(x, y, transpose_b=True))


def sinkhorn_plan(cost: tf.Tensor, reg: float = 0.01, iterations: int = 100,
                  tolerance: float = 0.0) -> tf.Tensor:
    """The entropic optimal transport plan between uniform marginals (log-domain Sinkhorn).

    Args:
        cost: [m, n] cost matrix.
        reg: the entropic regularisation (temperature) r > 0.
        iterations: maximum number of Sinkhorn iterations (>= 1).
        tolerance: stop early once sum_i |u_i - u_i_previous| < tolerance (0: never).

    Mathematical details:
        The plan minimises <T, C> - r H(T) subject to T 1 = a, T^T 1 = b, a = 1/m, b = 1/n.
        With dual potentials u [m], v [n] it is T_ij = exp((u_i + v_j - C_ij) / r), and one
        iteration is the pair of exact block updates

            u_i <- r log a_i - r logsumexp_j((v_j - C_ij) / r)
            v_j <- r log b_j - r logsumexp_i((u_i - C_ij) / r),

        i.e. the classic u <- a / (K v), v <- b / (K^T u) with K = exp(-C / r), rewritten in
        the log domain: with r = 0.01 and costs up to 2, K underflows to 0 in float32
        (exp(-200)), while logsumexp stays exact. Gradients flow through the iterations.

    Returns:
        The [m, n] transport plan T (rows sum to 1/m; after the last v update the columns
        sum to 1/n exactly).
    """
    reg = checks.check_positive(reg, "reg")
    iterations = checks.check_positive_int(iterations, "iterations")
    tolerance = checks.check_non_negative(tolerance, "tolerance")
    cost = tf.cast(cost, tf.float32)
    m, n = tf.shape(cost)[0], tf.shape(cost)[1]
    log_a = -tf.math.log(tf.cast(m, tf.float32))
    log_b = -tf.math.log(tf.cast(n, tf.float32))

    def body(i, u, v, _):
        u_new = reg * log_a - reg * tf.reduce_logsumexp((v[tf.newaxis, :] - cost) / reg, axis=1)
        v_new = reg * log_b - reg * tf.reduce_logsumexp((u_new[:, tf.newaxis] - cost) / reg,
                                                        axis=0)
        return i + 1, u_new, v_new, tf.reduce_sum(tf.abs(u_new - u))

    def cond(i, u, v, change):
        return tf.logical_and(i < iterations, change >= tolerance)

    u0 = tf.zeros([m], tf.float32)
    v0 = tf.zeros([n], tf.float32)
    state = (tf.constant(0), u0, v0, tf.constant(float("inf"), tf.float32))
    _, u, v, _ = tf.while_loop(cond, body, state, maximum_iterations=iterations)
    return tf.exp((u[:, tf.newaxis] + v[tf.newaxis, :] - cost) / reg)


def sinkhorn_distance(x_features: tf.Tensor, y_features: tf.Tensor, reg: float = 0.01,
                      iterations: int = 100, tolerance: float = 0.0) -> tf.Tensor:
    """The Sinkhorn distance <T, C> between two batches under the cosine cost (a scalar).

    Args:
        x_features: [m, d], e.g. the clean logits of a batch.
        y_features: [n, d], e.g. the perturbed logits.
        reg, iterations, tolerance: see `sinkhorn_plan`.

    Mathematical details:
        D(x, y) = sum_ij T_ij C_ij with C the cosine cost matrix (`cosine_cost_matrix`) and T
        the entropic plan between the uniform distributions on the two batches
        (`sinkhorn_plan`); it is differentiable in both batches.

    Example:
        >>> d = sinkhorn_distance(classifier(x), classifier(x_adv))

    Reference:
        Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport",
        NeurIPS 2013; Zhang & Wang, "Defense Against Adversarial Attacks Using
        Feature Scattering-based Adversarial Training", NeurIPS 2019, Eq. (4).
    """
    cost = cosine_cost_matrix(x_features, y_features)
    plan = sinkhorn_plan(cost, reg=reg, iterations=iterations, tolerance=tolerance)
    return tf.reduce_sum(plan * cost)
