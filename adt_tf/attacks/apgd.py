"""Auto-PGD (Croce & Hein, 2020): PGD with momentum and a step size that adapts itself.

APGD-CE, APGD-DLR and the targeted APGD-T (DLR towards each of the top classes) are the
gradient attacks of AutoAttack. They need no step-size tuning: the step starts at 2 epsilon and
is halved, per example, at checkpoints where the loss stopped rising.
"""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.common import batch_shape, misclassified, select, target_classes
from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.core.noise import as_seed, fold
from adt_tf.numerics.losses import get_loss, loss_and_grad, targeted_dlr_loss
from adt_tf.threat import EVERY_NORM, Ball


def checkpoints(steps: int) -> list[int]:
    """The iteration counts w_1 < w_2 < ... < steps after which APGD may halve its step size.

    Mathematical details:
        The intervals are AutoAttack's: h_1 = max(floor(0.22 N), 1) and
        h_{j+1} = max(h_j - max(floor(0.03 N), 1), max(floor(0.06 N), 1)); w_j = h_1 + ... + h_j.
        For N = 100: 22, 41, 57, 70, 80, 87, 93, 99. A check after the N-th iteration would
        change nothing (no step follows it) and is left out.
    """
    steps = checks.check_positive_int(steps, "steps")
    interval = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, done = [], interval
    while done < steps:
        marks.append(done)
        interval = max(interval - shrink, shortest)
        done += interval
    return marks


def _schedule(steps: int):
    """Per iteration index k (0-based): whether a check follows it, and its interval's length."""
    is_mark, length, last = [False] * steps, [1.0] * steps, 0
    for w in checkpoints(steps):
        is_mark[w - 1], length[w - 1], last = True, float(w - last), w
    return tf.constant(is_mark), tf.constant(length, tf.float32)


def _apgd_run(classifier, x, y, ball: Ball, loss_fn, steps: int, rho: float, alpha: float,
              x0):
    """One APGD run from x0. Returns (x_out, found [B], best loss [B], final step size [B])."""
    is_mark, length = _schedule(steps)
    loss0, grad0, logits0 = loss_and_grad(classifier, x0, y, loss_fn)
    found0 = misclassified(logits0, y)
    eta0 = tf.fill(tf.shape(loss0), 2.0 * ball.epsilon)

    def body(k, x_cur, x_prev, loss_last, grad_cur, eta, x_max, f_max, grad_max, increases,
             f_max_mark, reduced_mark, x_adv, found):
        # The first step has no momentum (x_{-1} = x_0 would make it a no-op anyway).
        a = tf.cast(tf.where(k > 0, alpha, 1.0), x.dtype)
        # The steepest step of the norm (sign for L-infinity, g / ||g||_2 for L2) and
        # AutoAttack's projection for it.
        z = ball.autoattack_project(
            ball.step(x_cur, grad_cur, tf.cast(batch_shape(eta, x), x.dtype)), x)
        x_next = ball.autoattack_project(
            x_cur + a * (z - x_cur) + (1.0 - a) * (x_cur - x_prev), x)
        loss_next, grad_next, logits = loss_and_grad(classifier, x_next, y, loss_fn)
        is_adv = misclassified(logits, y)
        x_adv = select(tf.logical_and(is_adv, tf.logical_not(found)), x_next, x_adv)
        found = tf.logical_or(found, is_adv)
        increases = increases + tf.cast(loss_next > loss_last, tf.float32)
        better = loss_next > f_max
        x_max = select(better, x_next, x_max)
        grad_max = select(better, grad_next, grad_max)
        f_max = tf.where(better, loss_next, f_max)
        # Check: halve the step where the loss rose in at most rho of the steps since the
        # last check (condition 1), or where neither the step nor the best loss changed
        # since then (condition 2); those examples go back to their best point and its
        # gradient. The momentum term of the next step is then x_max - x_cur.
        mark = is_mark[k]
        cond1 = increases <= rho * length[k]
        cond2 = tf.logical_and(tf.logical_not(reduced_mark), f_max <= f_max_mark)
        halve = tf.logical_and(mark, tf.logical_or(cond1, cond2))
        eta = tf.where(halve, eta / 2.0, eta)
        x_next = select(halve, x_max, x_next)
        grad_next = select(halve, grad_max, grad_next)
        increases = tf.where(mark, tf.zeros_like(increases), increases)
        f_max_mark = tf.where(mark, f_max, f_max_mark)
        reduced_mark = tf.where(mark, halve, reduced_mark)
        return (k + 1, x_next, x_cur, loss_next, grad_next, eta, x_max, f_max, grad_max,
                increases, f_max_mark, reduced_mark, x_adv, found)

    # AutoAttack compares the first loss with an entry of a zero-initialised history (its
    # index -1), not with the loss at x_0, and counts the first check as following a halving
    # (so condition 2 cannot fire there): both kept, for identical iterates.
    state = (tf.constant(0), x0, x0, tf.zeros_like(loss0), grad0, eta0, x0, loss0, grad0,
             tf.zeros_like(loss0), loss0, tf.ones_like(found0), x0, found0)
    out = tf.while_loop(lambda k, *_: k < steps, body, state, maximum_iterations=steps)
    eta, x_max, f_max, x_adv, found = out[5], out[6], out[7], out[12], out[13]
    return select(found, x_adv, x_max), found, f_max, eta


def _check(steps, restarts, rho, momentum):
    steps = checks.check_positive_int(steps, "steps")
    restarts = checks.check_positive_int(restarts, "restarts")
    rho = checks.check_in_range(rho, "rho", 0.0, 1.0)
    momentum = checks.check_in_range(momentum, "momentum", 0.0, 1.0)
    return steps, restarts, rho, momentum


def _merge(best, new):
    """Keeps per example an adversarial point if either has one, else the higher loss."""
    best_x, best_found, best_loss = best
    new_x, new_found, new_loss = new
    take = tf.logical_or(tf.logical_and(new_found, tf.logical_not(best_found)),
                         tf.logical_and(tf.equal(new_found, best_found), new_loss > best_loss))
    return (select(take, new_x, best_x), tf.logical_or(best_found, new_found),
            tf.where(take, new_loss, best_loss))


def _run_on_remaining(best, run, x, y, x0, *per_example):
    """A further run (restart or target) on the examples of the batch not yet adversarial
    only, AutoAttack's way; `best` merged with its results (`_merge`).

    `run(x, y, x0, *per_example)` -> (x_out, found, loss) is called on the gathered rows of
    its arguments. The start x0 is drawn for the whole batch beforehand, so each example
    starts where it would in the full batch and follows the same iterates (no operation of a
    run couples the examples): only the examples already broken are left out. Nothing runs
    when every example is broken.
    """

    def on_remaining():
        idx = tf.where(tf.logical_not(best[1]))
        rows = [tf.gather_nd(v, idx) for v in (x, y, x0) + per_example]
        new_x, new_found, new_loss = run(*rows)
        return _merge(best, (tf.tensor_scatter_nd_update(best[0], idx, new_x),
                             tf.scatter_nd(idx, new_found, tf.shape(best[1], out_type=tf.int64)),
                             tf.tensor_scatter_nd_update(
                                 tf.fill(tf.shape(best[2]), float("-inf")), idx, new_loss)))

    return tf.cond(tf.reduce_all(best[1]), lambda: best, on_remaining)


@register_attack("apgd", title="APGD", norms=EVERY_NORM)
def apgd(classifier, x, y, threat: Ball, *, steps: int = 100, loss: str = "ce",
         restarts: int = 1, rho: float = 0.75, momentum: float = 0.75, seed=0) -> tf.Tensor:
    """APGD-CE (loss='ce') or APGD-DLR (loss='dlr'), untargeted, L-infinity or L2.

    Args:
        classifier: logits model (called with training=False).
        x: clean inputs in [0, 1]; y: integer labels.
        threat: a threat model (`adt_tf.threat`): with an
            `L2Ball` the steps are g / ||g||_2, the projection and the start AutoAttack's L2
            ones (scale then clip; a point of the sphere).
        steps: iterations N (100 in AutoAttack).
        loss: 'ce', 'dlr' (needs >= 3 classes) or 'margin'.
        restarts: independent runs from random starts; the best per example is kept
            (AutoAttack's standard version uses 1).
        rho: the fraction of rising steps below which the step is halved (0.75).
        momentum: alpha, the weight of the new step against the last one (0.75).
        seed: int or stateless seed tensor for the random starts.

    Mathematical details:
        x_1 = P(x_0 + eta sign(grad f(x_0))), and for k >= 1
            z_{k+1} = P(x_k + eta sign(grad f(x_k)))
            x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1})),
        P the projection onto the ball and [0, 1], eta = 2 epsilon at the start. At the
        checkpoints w_j (see `checkpoints`) eta is halved, per example, and the iterate restarts
        from the best point so far if (1) the loss rose in at most rho (w_j - w_{j-1}) of the
        steps since w_{j-1}, or (2) neither eta nor the best loss changed since w_{j-1}. After a
        restart the momentum term is x_best - x_{w_j - 1}, as in AutoAttack's code. x_0 is
        AutoAttack's start (`LinfBall.autoattack_start`: a uniform draw t in [-1, 1]^D
        stretched per example to max_i |t_i| = 1, x + eps t, clipped to [0, 1]). The
        output is, per example, the first misclassified iterate if any, else the best-loss one.

    Example:
        >>> x_adv = apgd(model, x, y, 8 / 255, loss="dlr")

    Reference:
        Croce, Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks", ICML 2020, Algorithm 1.

    Returns:
        x_adv, same shape and dtype as x.
    """
    steps, restarts, rho, momentum = _check(steps, restarts, rho, momentum)
    loss_fn = get_loss(loss)
    x = tf.convert_to_tensor(x)
    base = as_seed(seed)
    def run(xs, ys, x0):
        return _apgd_run(classifier, xs, ys, threat, loss_fn, steps, rho, momentum, x0)[:3]

    best = None
    for r in range(restarts):
        x0 = threat.autoattack_start(x, fold(base, r))
        best = run(x, y, x0) if best is None else _run_on_remaining(best, run, x, y, x0)
    return best[0]


@register_attack("apgd_t", title="APGD-T", norms=EVERY_NORM)
def apgd_targeted(classifier, x, y, threat: Ball, *, steps: int = 100, num_targets: int = 9,
                  restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
                  seed=0) -> tf.Tensor:
    """APGD-T: APGD on the targeted DLR loss towards each of the `num_targets` top classes.

    Args:
        classifier: logits model; needs at least 4 classes.
        x: clean inputs in [0, 1]; y: integer labels.
        threat: a threat model (`adt_tf.threat`): with an
            `L2Ball` the steps are g / ||g||_2, the projection and the start AutoAttack's L2
            ones (scale then clip; a point of the sphere).
        steps: iterations per target (100).
        num_targets: how many of the classes ranked highest by the clean logits (the true one
            excluded) are tried in turn (9 in AutoAttack; capped at classes - 1).
        restarts: runs per target.
        rho, momentum: as in `apgd`.
        seed: int or stateless seed tensor.

    Mathematical details:
        For r = 1..num_targets the target t_r is the class of rank r + 1 in the clean logits,
        and APGD maximises -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2). An input is broken when
        it is misclassified (as any class). Each further target runs only on the inputs not
        broken yet (AutoAttack's way; their random starts as in the full batch), and none once
        every input of the batch is broken.

    Example:
        >>> x_adv = apgd_targeted(model, x, y, 8 / 255)

    Reference:
        Croce, Hein, ICML 2020, Sec. 4 (APGD-T in AutoAttack's standard version).

    Returns:
        x_adv, same shape and dtype as x.
    """
    steps, restarts, rho, momentum = _check(steps, restarts, rho, momentum)
    num_targets = checks.check_positive_int(num_targets, "num_targets")
    x = tf.convert_to_tensor(x)
    base = as_seed(seed)
    targets, num_targets = target_classes(classifier(x, training=False), num_targets,
                                          attack="apgd_targeted", min_classes=4)
    def run(xs, ys, x0, target):
        def loss_fn(z, labels):
            return targeted_dlr_loss(z, labels, target)

        return _apgd_run(classifier, xs, ys, threat, loss_fn, steps, rho, momentum, x0)[:3]

    best = None
    for t in range(num_targets):
        for r in range(restarts):
            x0 = threat.autoattack_start(x, fold(base, t, r))
            best = (run(x, y, x0, targets[:, t]) if best is None
                    else _run_on_remaining(best, run, x, y, x0, targets[:, t]))
    return best[0]
