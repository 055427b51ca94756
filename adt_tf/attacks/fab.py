"""FAB-T (Croce & Hein, 2020): the targeted Fast Adaptive Boundary attack, L-infinity and L2.

FAB looks for the adversarial example closest to the input: it linearises the decision
boundary between the true class and a target class at the current point, steps onto that
hyperplane (mixing in a step from the original input so that the point stays close to it),
and, each time it lands on the adversarial side, steps back towards the input. It is the third
attack of AutoAttack's standard version, run towards each of the top 9 classes.
"""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.common import batch_shape, misclassified, select, target_classes
from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.core.noise import as_seed, fold
from adt_tf.numerics.losses import loss_and_grad
from adt_tf.threat import EVERY_NORM, Ball, L2Ball, LinfBall

#: Newton iterations of the hyperplane projections before the sorted solution takes over.
NEWTON_ITERATIONS = 50


def solve_breakpoints(need: tf.Tensor, breakpoints: tf.Tensor, saturated: tf.Tensor,
                      slope: tf.Tensor, max_iterations: int = NEWTON_ITERATIONS):
    """Per row, the smallest t >= 0 with g(t) = need for g(t) = sum_j min(t slope_j, sat_j).

    Args:
        need: [N] targets, >= 0.
        breakpoints: [N, D] the t_j = sat_j / slope_j where term j saturates (any value,
            inf included, where slope_j = sat_j = 0: a term that never moves).
        saturated: [N, D] the terms' limits sat_j >= 0; slope: [N, D] their slopes >= 0.
        max_iterations: Newton steps at most.

    Returns:
        (t [N], converged [N] bool). Where g never reaches `need` (every term saturated
        below it), t is the largest finite breakpoint and the row counts as converged.

    Mathematical details:
        g is continuous, piecewise linear, non-decreasing and concave (its slope
        F(t) = sum_{t_j > t} slope_j only falls as terms saturate), with g(0) = 0. Newton's
        step from t_k <= t*, t_{k+1} = t_k + (need - g(t_k)) / F(t_k)
        = (need - S(t_k)) / F(t_k) with S(t) = sum_{t_j <= t} sat_j, solves the tangent
        at t_k, which lies above the concave g: so t_{k+1} <= t*, the iterates rise
        monotonically, and a step that starts on the segment holding t* lands on it
        exactly. Each other step crosses at least one breakpoint, so at most D + 1 steps are
        needed; on FAB's hyperplanes (real gradients, D = 3,072) 4-6 were. The result is
        the sorted solution's up to rounding (the sums are taken in another order).
    """
    need = tf.cast(need, tf.float32)
    finite = tf.math.is_finite(breakpoints)
    top = tf.reduce_max(tf.where(finite, breakpoints, 0.0), axis=1)

    def body(k, t, done):
        sat = breakpoints <= t[:, None]
        total = tf.reduce_sum(tf.where(sat, saturated, 0.0), axis=1)
        free = tf.reduce_sum(tf.where(sat, 0.0, slope), axis=1)
        exhausted = free <= 0.0  # every moving term saturated: g stays at `total`
        nxt = tf.where(exhausted, tf.maximum(t, top),
                       tf.maximum((need - total) / tf.where(exhausted, 1.0, free), t))
        stalled = nxt <= t  # no progress: t is on t*'s segment (the step computed t* again)
        return k + 1, tf.where(done, t, nxt), done | stalled | exhausted

    _, t, done = tf.while_loop(
        lambda k, t, done: tf.logical_and(k < max_iterations,
                                          tf.logical_not(tf.reduce_all(done))),
        body, (tf.constant(0), tf.zeros_like(need), need <= 0.0),
        maximum_iterations=max_iterations)
    return t, done


def _hyperplane_terms(x, w, b):
    """(r, direction, capacity): the residual -(w.x + b), the move of each coordinate towards
    the hyperplane and how far it can move inside [0, 1]."""
    x, w = tf.cast(x, tf.float32), tf.cast(w, tf.float32)
    r = -(tf.reduce_sum(w * x, axis=1) + tf.cast(b, tf.float32))
    direction = tf.sign(w) * tf.sign(r)[:, None]
    return r, direction, tf.where(direction > 0, 1.0 - x, x)


def linf_projection_to_hyperplane(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """The smallest L-infinity step from x onto the hyperplane w.z + b = 0 inside [0, 1]^D.

    Args, returns and the mathematics as `sorted_linf_projection_to_hyperplane`, which gives
    the same step (up to rounding); here t solves h(t) = |r| by Newton's method
    (`solve_breakpoints`: a few passes over the coordinates instead of a sort, 10x faster
    on CIFAR-10 batches on a CPU), the sorted solution taking over for a batch where a row
    has not converged within `NEWTON_ITERATIONS` steps.
    """
    r, direction, capacity = _hyperplane_terms(x, w, b)
    magnitude = tf.abs(tf.cast(w, tf.float32))
    t, done = solve_breakpoints(tf.abs(r), capacity, magnitude * capacity, magnitude,
                                NEWTON_ITERATIONS)
    return tf.cond(tf.reduce_all(done),
                   lambda: direction * tf.minimum(t[:, None], capacity),
                   lambda: sorted_linf_projection_to_hyperplane(x, w, b))


def l2_projection_to_hyperplane(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """The smallest L2 step from x onto the hyperplane w.z + b = 0 inside [0, 1]^D.

    Args, returns and the mathematics as `sorted_l2_projection_to_hyperplane`, which gives
    the same step (up to rounding); here the KKT multiplier solves g(lambda) = |r| by
    Newton's method (`solve_breakpoints`), the sorted solution taking over for a batch where
    a row has not converged within `NEWTON_ITERATIONS` steps.
    """
    r, direction, capacity = _hyperplane_terms(x, w, b)
    magnitude = tf.abs(tf.cast(w, tf.float32))
    moves = magnitude > 0
    breakpoint = tf.where(moves, capacity / tf.where(moves, magnitude, 1.0), float("inf"))
    lam, done = solve_breakpoints(tf.abs(r), breakpoint, magnitude * capacity,
                                  tf.square(magnitude), NEWTON_ITERATIONS)
    return tf.cond(tf.reduce_all(done),
                   lambda: direction * tf.minimum(lam[:, None] * magnitude,
                                                  tf.where(moves, capacity, 0.0)),
                   lambda: sorted_l2_projection_to_hyperplane(x, w, b))


def sorted_linf_projection_to_hyperplane(x: tf.Tensor, w: tf.Tensor,
                                         b: tf.Tensor) -> tf.Tensor:
    """The smallest L-infinity step from x onto the hyperplane w.z + b = 0 inside [0, 1]^D,
    from the sorted breakpoints (exact, AutoAttack's way; `linf_projection_to_hyperplane`
    gives the same step faster).

    Args:
        x: points [N, D] in [0, 1].
        w: normals [N, D].
        b: offsets [N].

    Returns:
        d [N, D]: per row, a step of minimal ||d||_inf with w.(x + d) + b = 0 and
        0 <= x + d <= 1. Where no such step exists (the hyperplane misses the box), d is the
        corner of the box that brings w.(x + d) + b closest to 0.

    Mathematical details:
        With r = -(w.x + b) the step must satisfy w.d = r. Moving coordinate j in the
        direction s_j = sign(w_j) sign(r) changes w.d towards r, by at most c_j = 1 - x_j
        (s_j > 0) or x_j (s_j < 0) before leaving the box. Under ||d||_inf <= t the largest
        reachable progress is h(t) = sum_j |w_j| min(t, c_j), attained by d_j = s_j min(t, c_j);
        h is continuous, piecewise linear and non-decreasing, so the minimal norm is the
        smallest t with h(t) = |r|. Sorting c (c_(1) <= ... <= c_(D)) gives h at the breakpoints,
        h(c_(k)) = sum_{i<k} |w|_(i) c_(i) + c_(k) sum_{i>=k} |w|_(i); on the segment that
        crosses |r|, t = (|r| - sum_{i<k} |w|_(i) c_(i)) / sum_{i>=k} |w|_(i) (exact, no
        bisection). Without the box this is t = |r| / ||w||_1, every coordinate moving by t.
        If h(max_j c_j) < |r| the plane misses the box and every coordinate moves to its limit.

    Example:
        >>> d = linf_projection_to_hyperplane(x_flat, grad_flat, offset)
    """
    r, direction, capacity = _hyperplane_terms(x, w, b)
    w = tf.cast(w, tf.float32)
    order = tf.argsort(capacity, axis=1)
    cap_sorted = tf.gather(capacity, order, batch_dims=1)
    w_sorted = tf.gather(tf.abs(w), order, batch_dims=1)
    saturated = tf.cumsum(w_sorted * cap_sorted, axis=1, exclusive=True)
    free = tf.cumsum(w_sorted, axis=1, reverse=True)
    reach = saturated + cap_sorted * free  # h at each breakpoint, non-decreasing
    need = tf.abs(r)[:, None]
    segment = tf.reduce_sum(tf.cast(reach < need, tf.int32), axis=1)  # first k with h >= |r|
    dim = tf.shape(x)[1]
    feasible = segment < dim
    k = tf.minimum(segment, dim - 1)[:, None]
    t = (tf.gather(need - saturated, k, batch_dims=1)[:, 0]
         / tf.maximum(tf.gather(free, k, batch_dims=1)[:, 0], 1e-30))
    t = tf.where(feasible, tf.maximum(t, 0.0), tf.reduce_max(capacity, axis=1))
    return direction * tf.minimum(t[:, None], capacity)


def sorted_l2_projection_to_hyperplane(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """The smallest L2 step from x onto the hyperplane w.z + b = 0 inside [0, 1]^D, from the
    sorted breakpoints of the KKT multiplier (exact; `l2_projection_to_hyperplane` gives the
    same step faster).

    Args, returns and the infeasible case as `sorted_linf_projection_to_hyperplane`.

    Mathematical details:
        With r = -(w.x + b), minimise ||d||^2 subject to w.d = r and 0 <= x + d <= 1. As
        there, coordinate j moves in the direction s_j = sign(w_j) sign(r) by at most c_j. The
        KKT conditions give |d_j| = min(lambda |w_j|, c_j) for one multiplier lambda >= 0, and
        the progress g(lambda) = sum_j |w_j| min(lambda |w_j|, c_j) is continuous, piecewise
        linear and non-decreasing, with breakpoints lambda_j = c_j / |w_j| (none where
        w_j = 0: that coordinate never moves). Sorting them,
        g(lambda_(k)) = sum_{i<k} |w|_(i) c_(i) + lambda_(k) sum_{i>=k} w_(i)^2, and on the
        segment that crosses |r|, lambda = (|r| - sum_{i<k} |w|_(i) c_(i)) / sum_{i>=k} w_(i)^2
        (exact; the problem is strictly convex, so this is AutoAttack's `projection_l2` point).
        Without the box, d = r w / ||w||^2. If g(max_j lambda_j) < |r| the plane misses the
        box and every coordinate with w_j != 0 moves to its limit.
    """
    r, direction, capacity = _hyperplane_terms(x, w, b)
    w = tf.cast(w, tf.float32)
    magnitude = tf.abs(w)
    moves = magnitude > 0
    breakpoint = tf.where(moves, capacity / tf.where(moves, magnitude, 1.0), float("inf"))
    order = tf.argsort(breakpoint, axis=1)
    bp_sorted = tf.gather(breakpoint, order, batch_dims=1)
    w_sorted = tf.gather(magnitude, order, batch_dims=1)
    cap_sorted = tf.gather(capacity, order, batch_dims=1)
    saturated = tf.cumsum(w_sorted * cap_sorted, axis=1, exclusive=True)
    free = tf.cumsum(tf.square(w_sorted), axis=1, reverse=True)
    reach = tf.where(tf.math.is_finite(bp_sorted), saturated + bp_sorted * free, float("inf"))
    need = tf.abs(r)[:, None]
    segment = tf.reduce_sum(tf.cast(reach < need, tf.int32), axis=1)
    dim = tf.shape(x)[1]
    feasible = segment < dim
    k = tf.minimum(segment, dim - 1)[:, None]
    lam = (tf.gather(need - saturated, k, batch_dims=1)[:, 0]
           / tf.maximum(tf.gather(free, k, batch_dims=1)[:, 0], 1e-30))
    lam = tf.where(feasible, tf.maximum(lam, 0.0), float("inf"))
    return direction * tf.minimum(lam[:, None] * magnitude, tf.where(moves, capacity, 0.0))


#: The minimal step onto a linearised boundary, per threat model.
_PROJECTIONS = {LinfBall.norm: linf_projection_to_hyperplane,
                L2Ball.norm: l2_projection_to_hyperplane}


def _gap(logits, y, target):
    """f_t - f_c per example: negative while the true class beats the target."""
    logits = tf.cast(logits, tf.float32)
    return (tf.gather(logits, target, batch_dims=1)
            - tf.gather(logits, tf.cast(y, tf.int32), batch_dims=1))


def _fab_run(classifier, x, y, target, x_start, best, ball: Ball, steps: int,
             alpha_max: float, eta: float, beta: float):
    """One FAB run towards `target` from x_start; updates best = (x [B, ...], dist [B]).

    Stops early once every example has an adversarial point within epsilon.
    """
    shape = tf.shape(x)
    flat = tf.reshape(x, [shape[0], -1])
    project_to_hyperplane, epsilon = _PROJECTIONS[ball.norm], ball.epsilon

    def loss_fn(logits, labels):
        return _gap(logits, labels, target)

    def body(k, x_cur, best_x, best_dist):
        gap, grad, _ = loss_and_grad(classifier, x_cur, y, loss_fn)
        w = tf.reshape(tf.cast(grad, tf.float32), tf.shape(flat))
        cur = tf.reshape(x_cur, tf.shape(flat))
        # The boundary linearised at x_cur: w.(z - x_cur) + gap = 0, i.e. w.z + b = 0.
        b = gap - tf.reduce_sum(w * cur, axis=1)
        steps_both = project_to_hyperplane(
            tf.concat([cur, flat], 0), tf.concat([w, w], 0), tf.concat([b, b], 0))
        d_cur, d_orig = tf.split(steps_both, 2, axis=0)
        n_cur, n_orig = ball.size(d_cur), ball.size(d_orig)
        alpha = tf.minimum(n_cur / tf.maximum(n_cur + n_orig, 1e-12), alpha_max)[:, None]
        nxt = ball.clip((1.0 - alpha) * (cur + eta * d_cur) + alpha * (flat + eta * d_orig))
        x_next = tf.reshape(nxt, shape)
        is_adv = misclassified(classifier(x_next, training=False), y)
        dist = ball.size(nxt - flat)
        better = tf.logical_and(is_adv, dist < best_dist)
        best_x = select(better, x_next, best_x)
        best_dist = tf.where(better, dist, best_dist)
        # On the adversarial side: step back towards the input, to find a closer point.
        x_next = select(is_adv, (1.0 - beta) * x + beta * x_next, x_next)
        return k + 1, x_next, best_x, best_dist

    def cond(k, x_cur, best_x, best_dist):
        return tf.logical_and(k < steps, tf.logical_not(tf.reduce_all(best_dist <= epsilon)))

    out = tf.while_loop(cond, body, (tf.constant(0), x_start, best[0], best[1]),
                        maximum_iterations=steps)
    return out[2], out[3]


def _random_start(x, best_dist, ball: Ball, seed):
    """A random point around x at distance min(best distance, epsilon) / 2 in the ball's norm
    (AutoAttack's: a uniform direction of the L-infinity cube, a Gaussian one for L2)."""
    noise = ball.random_direction(tf.shape(x), seed)
    radius = 0.5 * tf.minimum(best_dist, ball.epsilon) / tf.maximum(ball.size(noise), 1e-12)
    return ball.clip(x + batch_shape(radius, x) * noise)


@register_attack("fab_t", title="FAB-T", norms=EVERY_NORM)
def fab_targeted(classifier, x, y, threat: Ball, *, steps: int = 100, num_targets: int = 9,
                 restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05,
                 beta: float = 0.9, seed=0) -> tf.Tensor:
    """FAB-T: the targeted Fast Adaptive Boundary attack, L-infinity or L2.

    Args:
        classifier: logits model (called with training=False); at least 2 classes.
        x: clean inputs in [0, 1]; y: integer labels.
        threat: the budget, a threat model (`LinfBall`, `L2Ball`):
            a point found within it is returned.
        steps: iterations per target and restart (100 in AutoAttack).
        num_targets: how many of the classes ranked highest by the clean logits (the true one
            excluded) are tried in turn (9 in AutoAttack; capped at classes - 1).
        restarts: runs per target; the first starts at x, later ones at a random point at
            distance min(best distance found, epsilon) / 2 (AutoAttack's standard version
            uses 1, which makes the attack deterministic).
        alpha_max: the largest weight of the step taken from the original input (0.1).
        eta: overshoot of the projection steps (1.05).
        beta: backward step towards the input after an adversarial iterate (0.9).
        seed: int or stateless seed tensor for the random restarts.

    Mathematical details:
        For a target t and the true class c let g(z) = f_t(z) - f_c(z) and, at the iterate
        x_i, w = grad g(x_i). The boundary linearised at x_i is the hyperplane
        {z : w.(z - x_i) + g(x_i) = 0}. With delta_i and delta_o the minimal steps (in the
        threat model's norm ||.||) onto it inside [0, 1]^D from x_i and from the original input
        x_o (`linf_projection_to_hyperplane`, `l2_projection_to_hyperplane`),
            alpha   = min(||delta_i|| / (||delta_i|| + ||delta_o||), alpha_max)
            x_{i+1} = clip_[0,1]((1 - alpha)(x_i + eta delta_i) + alpha (x_o + eta delta_o)).
        If x_{i+1} is misclassified it is kept when closer to x_o than every earlier
        adversarial point, and x_{i+1} <- (1 - beta) x_o + beta x_{i+1}. Targets are tried
        in turn; a run stops, and later ones are skipped, once every input of the batch has an
        adversarial point within epsilon. The output is that point (projected onto the ball
        and [0, 1], and checked to be still misclassified) where one was found, else x; inputs
        already misclassified are returned unchanged. One gradient and two forward passes per
        iteration.

    Example:
        >>> x_adv = fab_targeted(model, x, y, 8 / 255)

    Reference:
        Croce, Hein. "Minimally distorted adversarial examples with a fast adaptive boundary
        attack", ICML 2020; the targeted version as used by AutoAttack (Croce, Hein,
        "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", ICML 2020).

    Returns:
        x_adv, same shape and dtype as x.
    """
    steps = checks.check_positive_int(steps, "steps")
    restarts = checks.check_positive_int(restarts, "restarts")
    alpha_max = checks.check_in_range(alpha_max, "alpha_max", 0.0, 1.0)
    eta = checks.check_positive(eta, "eta")
    beta = checks.check_in_range(beta, "beta", 0.0, 1.0)
    num_targets = checks.check_positive_int(num_targets, "num_targets")
    x_in = tf.convert_to_tensor(x)
    x = tf.cast(x_in, tf.float32)
    y = tf.cast(y, tf.int32)
    base = as_seed(seed)
    logits = classifier(x, training=False)
    targets, num_targets = target_classes(logits, num_targets, attack="fab_targeted")
    # Inputs misclassified already are done, at distance 0.
    dist0 = tf.where(misclassified(logits, y), 0.0, float("inf"))
    best = (x, dist0)
    for t in range(num_targets):
        for r in range(restarts):
            def run(t=t, r=r, best=best):
                x_start = x if r == 0 else _random_start(x, best[1], threat, fold(base, t, r))
                return _fab_run(classifier, x, y, targets[:, t], x_start, best, threat,
                                steps, alpha_max, eta, beta)

            best = tf.cond(tf.reduce_all(best[1] <= threat.epsilon), lambda best=best: best, run)
    x_adv = threat.project(select(best[1] <= threat.epsilon, best[0], x), x)
    x_adv = select(misclassified(classifier(x_adv, training=False), y), x_adv, x)
    return tf.cast(x_adv, x_in.dtype)
