"""Projected gradient descent (Madry et al., 2018), with restarts and per-example best."""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.common import misclassified
from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource, as_seed
from adt_tf.numerics.losses import get_loss, loss_and_grad
from adt_tf.threat import EVERY_NORM, Ball


def _better(new_loss, new_adv, best_loss, best_adv):
    """Bool [B]: the new iterate beats the best so far.

    An iterate that misclassifies beats one that does not; among two of the same kind the
    higher loss wins (so a found adversarial example is never lost to a later iterate).
    """
    return tf.logical_or(
        tf.logical_and(new_adv, tf.logical_not(best_adv)),
        tf.logical_and(tf.equal(new_adv, best_adv), new_loss > best_loss),
    )


def _select(mask, a, b):
    shape = tf.concat([tf.shape(mask), tf.ones(tf.rank(a) - 1, tf.int32)], axis=0)
    return tf.where(tf.reshape(mask, shape), a, b)


@register_attack("pgd", title="PGD", norms=EVERY_NORM)
def pgd(classifier, x, y, threat: Ball, *, steps: int = 20, step_size: float | None = None,
        random_start: bool = True, restarts: int = 1, loss: str = "ce", targeted: bool = False,
        momentum: float | None = None, seed=0, noise: NoiseSource = DEFAULT_NOISE,
        best_iterate: bool = True) -> tf.Tensor:
    """PGD (L-infinity, or the given threat model) keeping, per example, the best iterate
    over all steps and restarts (or returning the last iterate, as training does).

    Args:
        classifier: logits model (called with training=False).
        x: clean inputs in [0, 1]; y: integer labels (targets if `targeted`).
        threat: the budget: a threat model (`adt_tf.threat`,
            e.g. `L2Ball(0.5)`: steps, projection and random start are then its own).
        steps: iterations per restart (20 for PGD-20).
        step_size: defaults to epsilon / 4 (the ADT paper's setting).
        random_start: start from a uniform point of the ball.
        restarts: independent runs; the best per example is kept.
        loss: 'ce' or 'margin' (C&W's margin optimised with PGD).
        targeted: descend the loss towards the labels y.
        momentum: if set, the MIM update (Dong et al., 2018) with this decay factor: the
            gradient is L1-normalised per example and accumulated, and the step follows
            the sign of the accumulator.
        seed: int or stateless seed tensor for the random starts.
        noise: where the random starts' draws come from (`adt_tf.core.noise`; default: the seed).
        best_iterate: True (an attack's job, the default): return each example's best
            iterate. False: return the last iterate, as Madry et al.'s `LinfPGDAttack`
            does and adversarial training uses; no iterate is scored (restarts must be 1).

    Mathematical details:
        x_{t+1} = Proj_{B(x, eps)}(x_t + a * sign(g_t)), g_t = +-grad_x L(f(x_t), y)
        (for an L2 ball the step is a * g_t / ||g_t||_2 and the projection the exact one onto
        threat and box, `adt_tf.threat.L2Ball`)
        (or the momentum accumulator). With `best_iterate`, every iterate, the clean input
        and the final one included, is scored; per example an iterate that misclassifies
        beats one that does not, then higher loss wins. Without it the result is x_T.

    Returns:
        x_adv, same shape and dtype as x, inside the ball and [0, 1].
    """
    steps = checks.check_positive_int(steps, "steps")
    restarts = checks.check_positive_int(restarts, "restarts")
    if not best_iterate and restarts != 1:
        raise ValueError(f"restarts must be 1 when best_iterate=False (the last iterate of "
                         f"one run), got {restarts}.")
    size = threat.epsilon / 4 if step_size is None else checks.check_positive(
        step_size, "step_size")
    loss_fn = get_loss(loss)
    sign = -1.0 if targeted else 1.0
    x = tf.convert_to_tensor(x)
    base_seed = as_seed(seed)

    def success(logits):
        hit = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32))
        return hit if targeted else misclassified(logits, y)

    def score(x_adv):
        logits = classifier(x_adv, training=False)
        value = sign * loss_fn(logits, y)
        return value, success(logits)

    def keep_best(x_adv, value, is_adv, best):
        best_x, best_loss, best_is_adv = best
        better = _better(value, is_adv, best_loss, best_is_adv)
        return (_select(better, x_adv, best_x), tf.where(better, value, best_loss),
                tf.logical_or(best_is_adv, is_adv))

    def ascend(x_adv, accum, grad):
        direction = sign * grad
        if momentum is not None:
            axes = tf.range(1, tf.rank(grad))
            norm = tf.reduce_mean(tf.abs(direction), axis=axes, keepdims=True) + 1e-12
            accum = momentum * accum + direction / norm
            direction = accum
        return threat.project(threat.step(x_adv, direction, size), x), accum

    def start(r):
        if not random_start:
            return x
        return threat.random_start(x, tf.random.experimental.stateless_fold_in(base_seed, r),
                                 noise)

    if not best_iterate:
        def last_step(i, x_adv, accum):
            _, grad, _ = loss_and_grad(classifier, x_adv, y, loss_fn)
            return (i + 1,) + ascend(x_adv, accum, grad)

        _, x_adv, _ = tf.while_loop(lambda i, *_: i < steps, last_step,
                                    (tf.constant(0), start(0), tf.zeros_like(x)),
                                    maximum_iterations=steps)
        return x_adv

    def step(i, x_adv, accum, best_x, best_loss, best_is_adv):
        value, grad, logits = loss_and_grad(classifier, x_adv, y, loss_fn)
        best = keep_best(x_adv, sign * value, success(logits), (best_x, best_loss, best_is_adv))
        x_adv, accum = ascend(x_adv, accum, grad)
        return (i + 1, x_adv, accum) + best

    best = (x,) + score(x)
    for r in range(restarts):
        state = (tf.constant(0), start(r), tf.zeros_like(x)) + best
        _, x_adv, _, *best = tf.while_loop(lambda i, *_: i < steps, step, state,
                                           maximum_iterations=steps)
        best = keep_best(x_adv, *score(x_adv), tuple(best))
    return best[0]
