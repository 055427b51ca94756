"""The fast gradient sign method (Goodfellow et al., 2015)."""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource, as_seed
from adt_tf.numerics.losses import get_loss, loss_and_grad
from adt_tf.threat import EVERY_NORM, Ball


@register_attack("fgsm", title="FGSM", norms=EVERY_NORM)
def fgsm(classifier, x, y, threat: Ball, *, loss: str = "ce", targeted: bool = False,
         step_size: float | None = None, random_start: bool = False, seed=0,
         noise: NoiseSource = DEFAULT_NOISE, training: bool = False) -> tf.Tensor:
    """One signed-gradient step of size epsilon (or `step_size`).

    Args:
        classifier: logits model (called with training=False unless `training`).
        x: clean inputs in [0, 1]; y: integer labels (the target labels if `targeted`).
        threat: the budget: a threat model (`adt_tf.threat`,
            e.g. `L2Ball(0.5)`: steps, projection and random start are then its own).
        loss: 'ce' or 'margin'.
        targeted: descend the loss towards y instead of ascending it away from y.
        step_size: defaults to epsilon (use 1.25 epsilon with random_start for "fast" AT).
        random_start: start from a uniform point of the ball (Wong et al., 2020).
        seed: int or stateless seed tensor, used by the random start.
        noise: where the random start's draw comes from (`adt_tf.core.noise`; default: the seed).
        training: take the gradient with the classifier in training mode (BatchNorm on the
            batch's statistics, updating its running ones): Fast AT's reference does; an
            evaluation never does.

    Mathematical details:
        x_adv = Proj_{B(x, eps)}(x0 + a * sign(grad_x L(f(x0), y))), x0 = x or a random start;
        the sign is flipped when targeted.

    Returns:
        x_adv, same shape and dtype as x.
    """
    size = (threat.epsilon if step_size is None else
            checks.check_positive(step_size, "step_size"))
    x = tf.convert_to_tensor(x)
    x0 = threat.random_start(x, as_seed(seed), noise) if random_start else x
    _, grad, _ = loss_and_grad(classifier, x0, y, get_loss(loss), training=training)
    if targeted:
        grad = -grad
    return threat.project(threat.step(x0, grad, size), x)
