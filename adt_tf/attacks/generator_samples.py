"""EXP-AM and IMP-AM: samples of a generator of ADT_EXP-AM / ADT_IMP-AM trained against a
fixed model.

The attack has two phases. The first trains a fresh generator (and, for IMP-AM, its entropy
encoder) against the frozen classifier: that is training, so it lives above the attacks, in
`adt_tf.evaluation.fit_amortized_adversary` (the evaluation fits once, on its training pool).
The attack functions here do the second: they sample the trained adversary (`check_samples`
draws per input) and keep, per input, a draw that fools the model if there is one. They know
nothing of the training methods: an adversary is anything with `generator_inputs(x, y)` and
`sample_adversary(x, features, seed, training=False).x_adv`.
"""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.exp import pick_per_example
from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.core.noise import as_seed, fold
from adt_tf.threat import EVERY_NORM, Ball


def _amortized(kind, classifier, x, y, ball, adversary, check_samples, seed, fit_kwargs):
    check_samples = checks.check_positive_int(check_samples, "check_samples")
    x = tf.convert_to_tensor(x)
    if adversary is None:
        raise ValueError(f"{kind} samples a trained generator: pass adversary= from "
                         f"adt_tf.evaluation.fit_amortized_adversary(kind={kind!r}) (settings "
                         f"{fit_kwargs}).")
    trained_for = getattr(adversary, "threat", None)
    if trained_for is not None and (trained_for.norm, trained_for.epsilon) != (
            ball.norm, ball.epsilon):
        raise ValueError(f"{kind}: the adversary was trained for {trained_for!r}, the attack "
                         f"is asked for {ball!r}; fit it with that threat model.")
    base = as_seed(seed)
    features = adversary.generator_inputs(x, y)
    draws = [adversary.sample_adversary(x, features, fold(base, k), training=False).x_adv
             for k in range(check_samples)]
    candidates = tf.concat(draws, axis=0)
    logits = classifier(candidates, training=False)
    return ball.project(pick_per_example(candidates, logits, y, check_samples), x)


@register_attack("exp_am", title="EXP-AM", norms=EVERY_NORM)
def exp_am(classifier, x, y, threat: Ball, *, adversary=None, check_samples: int = 10,
           train_steps: int = 500, train_batch_size: int = 64, generator_width: int = 16,
           generator_blocks: int = 3, generator_lr: float = 2e-4,
           entropy_weight: float | None = None, seed=0) -> tf.Tensor:
    """EXP-AM: samples of an ADT_EXP-AM generator trained against the fixed classifier.

    Args:
        classifier: a functional Keras logits model (any input H x W).
        x: clean inputs in [0, 1]; y: integer labels.
        threat: a threat model (`LinfBall`, `L2Ball`), the one the
            adversary was trained for.
        adversary: a trained adversary, from
            `adt_tf.evaluation.fit_amortized_adversary(kind="exp_am")` (required).
        check_samples: draws per input; an input is broken if any draw fools the model.
        train_steps, train_batch_size, generator_width, generator_blocks, generator_lr,
            entropy_weight: how `adversary` was trained (the evaluation reads them for
            `adt_tf.evaluation.fit_amortized_adversary` and records them as the attack's
            settings; sampling does not use them).
        seed: int or stateless seed tensor of the draws.

    Mathematical details:
        (mu, v) = g_phi([x, grad_x CE(f(x), y), grad_x CE(f(x_fgsm), y)]),
        delta_k = epsilon tanh(u_k), u_k ~ N(mu, softplus(v)^2), k = 1..K (under L2 the
        radial map epsilon tanh(||u_k||) u_k / ||u_k||); the first draw that fools f is
        returned, else the one of highest CE.

    Example:
        >>> adversary = fit_amortized_adversary(model, x_train, y_train, 8 / 255)
        >>> x_adv = exp_am(model, x, y, 8 / 255, adversary=adversary)

    Reference:
        Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep
        Learning", NeurIPS 2020, Sec. 5 (EXP-AM attack).

    Returns:
        x_adv, same shape and dtype as x.
    """
    fit = {"train_steps": train_steps, "train_batch_size": train_batch_size,
           "generator_width": generator_width, "generator_blocks": generator_blocks,
           "generator_lr": generator_lr, "entropy_weight": entropy_weight}
    return _amortized("exp_am", classifier, x, y, threat, adversary, check_samples, seed, fit)


@register_attack("imp_am", title="IMP-AM", norms=EVERY_NORM)
def imp_am(classifier, x, y, threat: Ball, *, adversary=None, check_samples: int = 10,
           train_steps: int = 500, train_batch_size: int = 64, generator_width: int = 16,
           generator_blocks: int = 3, generator_lr: float = 2e-4,
           entropy_weight: float | None = None, seed=0) -> tf.Tensor:
    """IMP-AM: samples of an ADT_IMP-AM (implicit) generator trained against the classifier.

    Args and returns as `exp_am` (`adversary` from
    `adt_tf.evaluation.fit_amortized_adversary(kind="imp_am")`).

    Mathematical details:
        delta_k = epsilon tanh(g_phi([x, grad_1, grad_2], z_k)), z_k ~ U(-1, 1)^64 (under L2
        the radial map of the generator's output); the first draw that fools f is returned,
        else the one of highest CE.

    Reference:
        Dong et al., NeurIPS 2020, Sec. 5 (IMP-AM attack).
    """
    fit = {"train_steps": train_steps, "train_batch_size": train_batch_size,
           "generator_width": generator_width, "generator_blocks": generator_blocks,
           "generator_lr": generator_lr, "entropy_weight": entropy_weight}
    return _amortized("imp_am", classifier, x, y, threat, adversary, check_samples, seed, fit)
