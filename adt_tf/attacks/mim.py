"""The momentum iterative method, MIM (Dong et al., 2018): PGD with an accumulated gradient."""

from __future__ import annotations

import tensorflow as tf

from adt_tf import checks
from adt_tf.attacks.pgd import pgd
from adt_tf.attacks.registry import register_attack
from adt_tf.threat import EVERY_NORM, Ball


@register_attack("mim", title="MIM", norms=EVERY_NORM)
def mim(classifier, x, y, threat: Ball, *, steps: int = 20, momentum: float = 1.0,
        step_size: float | None = None, random_start: bool = False, restarts: int = 1,
        seed=0) -> tf.Tensor:
    """MIM-20 of the ADT paper's battery: 20 momentum steps of size epsilon / 4.

    Args:
        classifier: logits model (called with training=False).
        x: clean inputs in [0, 1]; y: integer labels.
        threat: the budget: a threat model (`adt_tf.threat`,
            e.g. `L2Ball(0.5)`: steps, projection and random start are then its own).
        steps: iterations (20).
        momentum: decay factor mu of the accumulator (1.0, the MIM paper's setting).
        step_size: defaults to epsilon / 4.
        random_start: MIM starts from the clean input (False); True adds a uniform start.
        restarts: independent runs, the best per example kept.
        seed: seed of the random starts.

    Mathematical details:
        g_{t+1} = mu g_t + grad_x L(f(x_t), y) / ||grad_x L(f(x_t), y)||_1,
        x_{t+1} = Proj_{B(x, eps)}(x_t + a sign(g_{t+1})), with CE loss; the best iterate per
        example is kept (see `pgd`).

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
               seed=seed)
