"""The momentum iterative method, MIM (Dong et al., 2018): PGD with an accumulated gradient."""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.pgd import pgd
from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.threat import EVERY_NORM, Ball


@register_attack("mim", title="MIM", norms=EVERY_NORM)
def mim(classifier, x, y, threat: Ball, *, steps: int = 20, momentum: float = 1.0,
        step_size: float | None = None, random_start: bool = True, restarts: int = 1,
        seed=0, best_iterate: bool = True) -> tf.Tensor:
    """MIM-20 of the ADT paper's battery: 20 momentum steps of size epsilon / 4.

    Args:
        classifier: logits model (called with training=False).
        x: clean inputs in [0, 1]; y: integer labels.
        threat: the budget: a threat model (`adt_tf.threat`,
            e.g. `L2Ball(0.5)`: steps, projection and random start are then its own).
        steps: iterations (20).
        momentum: decay factor mu of the accumulator (1.0, the MIM paper's setting).
        step_size: defaults to epsilon / 4.
        random_start: True (the ADT authors' `evaluate_attacks.py`, whose `--random`
            defaults to True: `_mim_whitebox` and `_mim_blackbox` start at X + U(-eps, eps)):
            a uniform start in the ball; False: the clean input (the MIM paper's start).
        restarts: independent runs, the best per example kept.
        seed: seed of the random starts.
        best_iterate: True: each example's best iterate (see `pgd`); False: the last one
            (what `transfer` uses, as the ADT authors' transfer evaluation).

    Mathematical details:
        g_{t+1} = mu g_t + grad_x L(f(x_t), y) / ||grad_x L(f(x_t), y)||_1,
        x_{t+1} = Proj_{B(x, eps)}(x_t + a sign(g_{t+1})), with CE loss, x_0 uniform in the
        ball (clipped to [0, 1]); the best iterate per example is kept (see `pgd`) unless
        `best_iterate=False`.

    Example:
        >>> x_adv = mim(model, x, y, 8 / 255)

    Reference:
        Dong, Liao, Pang, Su, Zhu, Hu, Li. "Boosting Adversarial Attacks with Momentum",
        CVPR 2018.

    Returns:
        x_adv, same shape and dtype as x.
    """
    momentum = checks.check_non_negative(momentum, "momentum")
    return pgd(classifier, x, y, threat, steps=steps, step_size=step_size,
               random_start=random_start, restarts=restarts, loss="ce", momentum=momentum,
               seed=seed, best_iterate=best_iterate)
