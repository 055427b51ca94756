"""EXP: ADT_EXP's inner maximisation used as an attack, its samples checked against the model."""

from __future__ import annotations

import tensorflow as tf

from adt_tf.adt.families import GaussianFamily
from adt_tf.adt.inner_maximization import explicit_inner_maximization, sample_inputs
from adt_tf.attacks.common import misclassified
from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.core.noise import as_seed, fold
from adt_tf.numerics.losses import per_example_ce
from adt_tf.threat import EVERY_NORM, Ball


def pick_per_example(candidates, logits, y, num_candidates: int):
    """Per example, the first candidate that fools the model, else the highest-loss one.

    Args:
        candidates: [K * B, ...] inputs, candidate k of example b at row k * B + b.
        logits: the classifier's logits on them, [K * B, classes].
        y: labels [B]. num_candidates: K.

    Returns:
        [B, ...] inputs.
    """
    y_rep = tf.tile(tf.reshape(y, [-1]), [num_candidates])
    fooled = tf.reshape(misclassified(logits, y_rep), [num_candidates, -1])  # [K, B]
    loss = tf.reshape(per_example_ce(logits, y_rep), [num_candidates, -1])
    # A fooling candidate outranks every other one; among them (or among none) loss decides.
    score = tf.where(fooled, 1e9 + loss, loss)
    best = tf.argmax(score, axis=0, output_type=tf.int32)  # [B]
    stacked = tf.reshape(candidates, tf.concat([[num_candidates, -1], tf.shape(candidates)[1:]],
                                               axis=0))
    return tf.gather(tf.transpose(stacked, tf.concat([[1, 0], tf.range(2, tf.rank(stacked))],
                                                     axis=0)),
                     best, batch_dims=1)


@register_attack("exp", title="EXP", norms=EVERY_NORM)
def exp_attack(classifier, x, y, threat: Ball, *, steps: int = 20, samples: int = 10,
               entropy_weight: float = 0.01, lr: float = 0.3, beta1: float = 0.0,
               beta2: float = 0.0, check_samples: int = 10, check_mode: bool = True,
               gradients: str = "accumulate", family: str = "diag", rank: int = 8,
               rows: int = 0, factor_lr: float | None = None, factor_init: float = 0.0,
               seed=0) -> tf.Tensor:
    """The EXP distributional attack: fit ADT_EXP's distribution to x, then sample it.

    Args:
        classifier: logits model (called with training=False).
        x: clean inputs in [0, 1]; y: integer labels.
        threat: the budget: a threat model (`adt_tf.threat`; with
            an `L2Ball` the distribution is the radial one, `adt_tf.threat.bijectors.RadialTanh`).
        steps: T, inner ascent steps (20 for the attack; training uses 7).
        samples: k, Monte Carlo samples per step (10).
        entropy_weight: lambda of the inner objective (0.01, ADT's default).
        lr, beta1, beta2: the inner Adam (0.3, 0, 0 as in ADT).
        check_samples: fresh samples drawn from the fitted distribution and checked (10).
        check_mode: also check x + f(mu), the image of the distribution's centre (f the
            distribution's bijector: epsilon tanh for L-infinity).
        gradients: 'accumulate' (the reference's inner loop, gradients never zeroed) or
            'fresh' (`adt_tf.adt.inner_maximization`).
        family, rank, rows, factor_lr, factor_init: the distribution's Gaussian base
            (`adt_tf.adt.families.GaussianFamily`; 'diag', the paper's, by default): a richer
            EXP attack with a low-rank or matrix-normal distribution, against any model.
        seed: int or stateless seed tensor.

    Mathematical details:
        (mu, v) = argmax E_{delta ~ p_{mu,v}} CE(f(x + delta), y) + lambda H(p) by T Adam steps
        (`explicit_inner_maximization`); then K samples delta_k ~ p (and the centre) are
        checked: an input is broken if any checked point is misclassified. The point returned
        per example is the first that fools the model, else the one of highest CE.

    Example:
        >>> x_adv = exp_attack(model, x, y, 8 / 255)

    Reference:
        Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep
        Learning", NeurIPS 2020, Sec. 5 (the EXP attack).

    Returns:
        x_adv, same shape and dtype as x.
    """
    steps = checks.check_positive_int(steps, "steps")
    samples = checks.check_positive_int(samples, "samples")
    check_samples = checks.check_positive_int(check_samples, "check_samples")
    entropy_weight = checks.check_non_negative(entropy_weight, "entropy_weight")
    lr = checks.check_positive(lr, "lr")
    gaussian = GaussianFamily(family, rank=rank, rows=rows, factor_lr=factor_lr,
                              factor_init=factor_init)
    x = tf.convert_to_tensor(x)
    base = as_seed(seed)
    fitted = explicit_inner_maximization(
        classifier, x, y, threat=threat, entropy_weight=entropy_weight,
        steps=steps, samples=samples, lr=lr, beta1=beta1, beta2=beta2, seed=fold(base, 0),
        gradients=gradients, family=gaussian)
    dist = fitted.distribution(threat, gaussian)
    candidates, _ = sample_inputs(x, dist, check_samples, fold(base, 1))
    count = check_samples
    if check_mode:
        centre = threat.project(x + dist.centre(), x)
        candidates = tf.concat([candidates, centre], axis=0)
        count += 1
    logits = classifier(candidates, training=False)
    # Samples are inside the ball by construction (the bijector maps onto the open ball);
    # the final projection only removes rounding.
    return threat.project(pick_per_example(candidates, logits, y, count), x)
