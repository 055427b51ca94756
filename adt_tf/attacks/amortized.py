"""EXP-AM and IMP-AM: a generator of ADT_EXP-AM / ADT_IMP-AM trained against a fixed model.

The attack has two phases: `fit_amortized_adversary` trains a fresh generator (and, for
IMP-AM, its entropy encoder) for a number of steps against the frozen classifier, with the
joint step of the amortised methods and the classifier's update switched off; the attack
function then samples it (`check_samples` draws per input) and keeps, per input, a draw that
fools the model if there is one. The evaluation fits once (on its training pool) and samples
every batch; a direct call without `adversary` fits on the batch it is given (eagerly).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from adt_tf import validation
from adt_tf.attacks.common import as_seed, fold
from adt_tf.attacks.distributional import pick_per_example
from adt_tf.threat import LinfBall

METHOD_OF = {"exp_am": "adt_exp_am", "imp_am": "adt_imp_am"}


def fit_amortized_adversary(classifier, x, y, epsilon: float, *, kind: str = "exp_am",
                            train_steps: int = 500, train_batch_size: int = 64,
                            generator_width: int = 16, generator_blocks: int = 3,
                            entropy_weight: float | None = None, generator_lr: float = 2e-4,
                            seed: int = 0, verbose: bool = False):
    """Trains an amortised adversary against the fixed classifier.

    Args:
        classifier: a functional Keras logits model (any input H x W).
        x, y: the images ([N, H, W, C] in [0, 1], or uint8) and labels it trains on.
        epsilon: L-infinity budget.
        kind: "exp_am" (explicit distribution) or "imp_am" (implicit, with entropy encoder).
        train_steps: generator updates.
        train_batch_size: inputs per update (drawn in a seeded random order, epoch by epoch).
        generator_width, generator_blocks, generator_lr: the generator (see
            `adt_tf.generators`; the reference uses width 256).
        entropy_weight: lambda (None: the method's default, 0.01 for EXP-AM, 1.0 for IMP-AM).
        seed: seed of the data order and of the generator's noise.
        verbose: print the objective every 100 steps.

    Mathematical details:
        phi <- Adam(phi + grad_phi [CE(f(x + delta_phi(x)), y) + R(phi)]), f fixed (inference
        mode), R the method's entropy term (`AmortizedAdversarialTrainer.joint_step` with
        update_classifier=False).

    Returns:
        The trained `AmortizedAdversarialTrainer` (its generator does the sampling).
    """
    from adt_tf.methods import get_method

    validation.check_choice(kind, "amortised attack", METHOD_OF)
    train_steps = validation.check_positive_int(train_steps, "train_steps")
    batch = validation.check_positive_int(train_batch_size, "train_batch_size")
    kwargs = {"generator_width": generator_width, "generator_blocks": generator_blocks,
              "generator_lr": generator_lr}
    if entropy_weight is not None:
        kwargs["entropy_weight"] = entropy_weight
    adversary = get_method(METHOD_OF[kind])(classifier, epsilon=epsilon, seed=seed, **kwargs)
    # The classifier's optimizer is never applied (update_classifier=False); compile needs one.
    adversary.compile(optimizer=keras.optimizers.SGD(0.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.asarray(x)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    y = np.asarray(y).astype(np.int32)
    step = tf.function(lambda xb, yb, s: adversary.joint_step(xb, yb, seed=s,
                                                              update_classifier=False))
    rng = np.random.default_rng(seed)
    order, position = rng.permutation(len(x)), 0
    for i in range(train_steps):
        if position + batch > len(x):
            order, position = rng.permutation(len(x)), 0
        idx = order[position:position + batch]
        position += batch
        result = step(tf.constant(x[idx]), tf.constant(y[idx]),
                      tf.constant([seed, i], tf.int32))
        if verbose and (i + 1) % 100 == 0:
            print(f"{kind} generator step {i + 1}/{train_steps}: objective "
                  f"{float(result.objective):.4f}")
    return adversary


def _amortized(kind, classifier, x, y, epsilon, adversary, check_samples, seed, fit_kwargs):
    ball = LinfBall(epsilon)
    check_samples = validation.check_positive_int(check_samples, "check_samples")
    x = tf.convert_to_tensor(x)
    if adversary is None:
        if not tf.executing_eagerly():
            raise ValueError(f"{kind} trains a generator: call it eagerly, or pass adversary= "
                             "from fit_amortized_adversary to use it inside tf.function.")
        adversary = fit_amortized_adversary(classifier, x.numpy(), np.asarray(y), epsilon,
                                            kind=kind, **fit_kwargs)
    base = as_seed(seed)
    features = adversary.generator_inputs(x, y)
    draws = [adversary.sample_adversary(x, features, fold(base, k), training=False).x_adv
             for k in range(check_samples)]
    candidates = tf.concat(draws, axis=0)
    logits = classifier(candidates, training=False)
    return ball.project(pick_per_example(candidates, logits, y, check_samples), x)


def exp_am(classifier, x, y, epsilon: float, *, adversary=None, check_samples: int = 10,
           train_steps: int = 500, train_batch_size: int = 64, generator_width: int = 16,
           generator_blocks: int = 3, generator_lr: float = 2e-4,
           entropy_weight: float | None = None, seed=0) -> tf.Tensor:
    """EXP-AM: samples of an ADT_EXP-AM generator trained against the fixed classifier.

    Args:
        classifier: a functional Keras logits model (any input H x W).
        x: clean inputs in [0, 1]; y: integer labels.
        epsilon: L-infinity budget.
        adversary: a trained adversary from `fit_amortized_adversary(kind="exp_am")`; None
            trains one on (x, y) first (eager calls only).
        check_samples: draws per input; an input is broken if any draw fools the model.
        train_steps, train_batch_size, generator_width, generator_blocks, generator_lr,
            entropy_weight: the training of the generator when `adversary` is None (see
            `fit_amortized_adversary`; recorded as the attack's settings by the evaluation).
        seed: int or stateless seed tensor of the draws.

    Mathematical details:
        (mu, v) = g_phi([x, grad_x CE(f(x), y), grad_x CE(f(x_fgsm), y)]),
        delta_k = epsilon tanh(u_k), u_k ~ N(mu, softplus(v)^2), k = 1..K; the first draw
        that fools f is returned, else the one of highest CE.

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
    return _amortized("exp_am", classifier, x, y, epsilon, adversary, check_samples, seed, fit)


def imp_am(classifier, x, y, epsilon: float, *, adversary=None, check_samples: int = 10,
           train_steps: int = 500, train_batch_size: int = 64, generator_width: int = 16,
           generator_blocks: int = 3, generator_lr: float = 2e-4,
           entropy_weight: float | None = None, seed=0) -> tf.Tensor:
    """IMP-AM: samples of an ADT_IMP-AM (implicit) generator trained against the classifier.

    Args and returns as `exp_am` (`adversary` from `fit_amortized_adversary(kind="imp_am")`).

    Mathematical details:
        delta_k = epsilon tanh(g_phi([x, grad_1, grad_2], z_k)), z_k ~ U(-1, 1)^64; the first
        draw that fools f is returned, else the one of highest CE.

    Reference:
        Dong et al., NeurIPS 2020, Sec. 5 (IMP-AM attack).
    """
    fit = {"train_steps": train_steps, "train_batch_size": train_batch_size,
           "generator_width": generator_width, "generator_blocks": generator_blocks,
           "generator_lr": generator_lr, "entropy_weight": entropy_weight}
    return _amortized("imp_am", classifier, x, y, epsilon, adversary, check_samples, seed, fit)
