"""Fitting the adversary of the EXP-AM and IMP-AM attacks: an amortised ADT method's generator
trained against a fixed classifier (the training half of those attacks; the sampling half is
`adt_tf.attacks.generator_samples`, which knows nothing of the methods)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.data import as_unit_float
from adt_tf.threat import Ball, as_threat

METHOD_OF = {"exp_am": "adt_exp_am", "imp_am": "adt_imp_am"}


def fit_amortized_adversary(classifier, x, y, threat: Ball | float, *, kind: str = "exp_am",
                            train_steps: int = 500, train_batch_size: int = 64,
                            generator_width: int = 16, generator_blocks: int = 3,
                            entropy_weight: float | None = None, generator_lr: float = 2e-4,
                            seed: int = 0, verbose: bool = False):
    """Trains an amortised adversary against the fixed classifier.

    Args:
        classifier: a functional Keras logits model (any input H x W).
        x, y: the images ([N, H, W, C] in [0, 1], or uint8) and labels it trains on.
        threat: the ball (`adt_tf.threat.LinfBall`, `L2Ball`); a number is an L-inf radius.
        kind: "exp_am" (explicit distribution) or "imp_am" (implicit, with entropy encoder).
        train_steps: generator updates.
        train_batch_size: inputs per update (drawn in a seeded random order, epoch by epoch).
        generator_width, generator_blocks, generator_lr: the generator (see
            `adt_tf.adt.generators`; the reference uses width 256).
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
    from adt_tf.methods import get_method  # on use: an evaluation need not load the methods

    checks.check_choice(kind, "amortised attack", METHOD_OF)
    train_steps = checks.check_positive_int(train_steps, "train_steps")
    batch = checks.check_positive_int(train_batch_size, "train_batch_size")
    kwargs = {"generator_width": generator_width, "generator_blocks": generator_blocks,
              "generator_lr": generator_lr}
    if entropy_weight is not None:
        kwargs["entropy_weight"] = entropy_weight
    adversary = get_method(METHOD_OF[kind])(classifier, epsilon=as_threat(threat), seed=seed,
                                            **kwargs)
    # The classifier's optimizer is never applied (update_classifier=False); compile needs one.
    adversary.compile(optimizer=keras.optimizers.SGD(0.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = as_unit_float(x)
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


__all__ = ["METHOD_OF", "fit_amortized_adversary"]
