"""The C&W attack of the ADT paper's battery: the Carlini-Wagner margin loss optimised by PGD."""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.pgd import pgd
from adt_tf.attacks.registry import register_attack
from adt_tf.threat import EVERY_NORM, Ball


@register_attack("cw", title="C&W", norms=EVERY_NORM)
def cw(classifier, x, y, threat: Ball, *, steps: int = 30, step_size: float | None = None,
       random_start: bool = True, restarts: int = 1, seed=0,
       best_iterate: bool = True) -> tf.Tensor:
    """L-infinity C&W: PGD ascending the margin max_{j != y} z_j - z_y (30 steps of epsilon/4).

    Args:
        classifier: logits model (called with training=False).
        x: clean inputs in [0, 1]; y: integer labels.
        threat: the budget: a threat model (`adt_tf.threat`,
            e.g. `L2Ball(0.5)`: steps, projection and random start are then its own).
        steps: iterations (30 in the ADT paper).
        step_size: defaults to epsilon / 4.
        random_start: start from a uniform point of the ball.
        restarts: independent runs, the best per example kept.
        seed: seed of the random starts.
        best_iterate: True: each example's best iterate (see `pgd`); False: the last one
            (what `transfer` uses, as the ADT authors' transfer evaluation).

    Mathematical details:
        x_{t+1} = Proj_{B(x, eps)}(x_t + a sign(grad_x (max_{j != y} z_j(x_t) - z_y(x_t)))),
        z the logits. The margin works on logits, so a saturated softmax does not hide it.

    Example:
        >>> x_adv = cw(model, x, y, 8 / 255)

    Reference:
        Carlini, Wagner. "Towards Evaluating the Robustness of Neural Networks", S&P 2017;
        used with PGD as in Madry et al. (2018) and the ADT paper (Dong et al., 2020).

    Returns:
        x_adv, same shape and dtype as x.
    """
    return pgd(classifier, x, y, threat, steps=steps, step_size=step_size,
               random_start=random_start, restarts=restarts, loss="margin", seed=seed,
               best_iterate=best_iterate)
