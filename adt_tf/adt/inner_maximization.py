"""The inner problem of ADT_EXP: fit an explicit adversarial distribution per example.

Shared by the training method `ADTExp` and by the EXP distributional attack.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from adt_tf.adt.distributions import ExplicitAdversarialDistribution
from adt_tf.adt.families import DIAG, GaussianFamily
from adt_tf.core import checks
from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource
from adt_tf.core.precision import as_float32
from adt_tf.threat import Ball

MAX_UNROLLED_STEPS = 20
"""Inner loops of at most this many steps are unrolled by default (see `unroll`)."""

INNER_GRADIENTS = ("accumulate", "fresh")
"""How the inner loop's steps use the gradients: "accumulate" (the reference code, the
default) or "fresh" (a named, non-default variant; see `explicit_inner_maximization`)."""


def check_inner_gradients(value: str) -> str:
    """Validates the `inner_gradients` setting."""
    return checks.check_choice(value, "inner_gradients", INNER_GRADIENTS)


class InnerResult(NamedTuple):
    """What the inner maximisation returns.

    Attributes:
        loc: mu after the last step, shape of x.
        raw_scale: v after the last step (sigma = softplus(v)), shape of x.
        objective: the inner objective E[CE] + lambda * H at the last step (scalar).
        entropy: the per-dimension entropy estimate at the last step (scalar).
        trace: with `trace=True`, (mu, v) after each step: a list of T pairs; else None.
        factors: the family's extra parameters after the last step (empty for `diag`).
    """

    loc: tf.Tensor
    raw_scale: tf.Tensor
    objective: tf.Tensor
    entropy: tf.Tensor
    trace: list | None = None
    factors: tuple = ()

    def distribution(self, threat, family: GaussianFamily = DIAG
                     ) -> ExplicitAdversarialDistribution:
        """The fitted distribution."""
        return ExplicitAdversarialDistribution(self.loc, self.raw_scale, threat, family,
                                               self.factors)


def adam_ascent(params, grads, first, second, step, lr, beta1, beta2, eps=1e-8):
    """One Adam step that *ascends*, on plain tensors (per-example parameters).

    Mathematical details:
        m <- b1 m + (1 - b1) g,  s <- b2 s + (1 - b2) g^2,
        theta <- theta + lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps).
        With b1 = b2 = 0 (ADT's setting) the step is lr * g / (|g| + eps), i.e. close to
        lr * sign(g), which is why the inner learning rate (0.3) is in units of pre-tanh u.

    Args:
        lr: one learning rate, or one per parameter block.

    Returns:
        (params, first, second) updated.
    """
    t = tf.cast(step, params[0].dtype)
    c1 = 1.0 - tf.pow(tf.cast(beta1, t.dtype), t)
    c2 = 1.0 - tf.pow(tf.cast(beta2, t.dtype), t)
    rates = lr if isinstance(lr, (list, tuple)) else [lr] * len(params)
    new_params, new_first, new_second = [], [], []
    for p, g, m, s, rate in zip(params, grads, first, second, rates):
        m = beta1 * m + (1.0 - beta1) * g
        s = beta2 * s + (1.0 - beta2) * tf.square(g)
        new_params.append(p + rate * (m / c1) / (tf.sqrt(s / c2) + eps))
        new_first.append(m)
        new_second.append(s)
    return new_params, new_first, new_second


def sample_inputs(x, dist: ExplicitAdversarialDistribution, num_samples: int, seed,
                  noise: NoiseSource = DEFAULT_NOISE):
    """k clipped adversarial inputs per example, flattened to one batch of k*B.

    Returns:
        (x_adv [k*B, ...], neg_log_prob [k, B])
    """
    sample = dist.sample(num_samples, seed, noise)
    # In the distribution's dtype (float32 at least): a bfloat16 pixel near 0.5 has a
    # resolution of 1/256, coarser than a quarter of epsilon = 8/255.
    x = tf.cast(x, sample.delta.dtype)
    x_adv = dist.threat.clip(x[tf.newaxis] + sample.delta)
    flat = tf.reshape(x_adv, tf.concat([[-1], tf.shape(x)[1:]], axis=0))
    return flat, sample.neg_log_prob


def parallel_logits(classifier, x: tf.Tensor, branches: int = 1) -> tf.Tensor:
    """classifier(x, training=False), computed as `branches` independent passes over
    near-equal slices of the batch (concatenated back in order)."""
    if branches <= 1:
        return classifier(x, training=False)
    n = tf.shape(x)[0]
    base, extra = n // branches, n % branches
    sizes = base + tf.cast(tf.range(branches) < extra, n.dtype)
    parts = tf.split(x, sizes, num=branches, axis=0)
    return tf.concat([classifier(part, training=False) for part in parts], axis=0)


def explicit_inner_maximization(
    classifier: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    *,
    threat: Ball | float,
    entropy_weight: float,
    steps: int,
    samples: int,
    lr: float,
    beta1: float,
    beta2: float,
    seed: tf.Tensor,
    loss_fn=None,
    unroll: bool | None = None,
    branches: int = 1,
    gradients: str = "accumulate",
    noise: NoiseSource = DEFAULT_NOISE,
    trace: bool = False,
    family: GaussianFamily = DIAG,
) -> InnerResult:
    """Maximises E_p[L(f(x + delta), y)] + lambda * H(p) over the per-example (mu, v).

    Mathematical details:
        p(delta) is `ExplicitAdversarialDistribution(mu, v, threat)`, mu = v = 0 at the start.
        Each of the T steps draws k reparameterised samples per example (one forward pass of
        k*B inputs, classifier in inference mode), estimates

            J(mu, v) = mean_{k, B} L(f(clip(x + delta)), y) + lambda * mean_{k, B} (-log p / D)

        (L = CE unless `loss_fn` is given) and takes one Adam ascent step on (mu, v). Only
        input-side gradients are taken: the tape watches mu and v alone, so no weight
        gradient is computed.

        As in the authors' code, the gradient of a step is that of k * J, i.e. the *sum* over
        the k samples of each sample's objective (batch-mean L plus lambda times the mean of
        -log p over the B * D elements); and with `gradients="accumulate"` (the default) the
        gradients are never zeroed between steps, exactly as the reference loop (it calls
        no `zero_grad()` inside it): step t feeds Adam with

            G_t = sum_{s <= t} grad k J_s(mu_s, v_s),

        so with beta1 = beta2 = 0 (ADT's setting) mu and v move by lr * G_t / (|G_t| + 1e-8),
        about lr * sign of the running sum, a momentum of 1. `gradients="fresh"` feeds each
        step its own gradient only (G_t = grad k J_t), a noisier, different distribution
        (a named variant, kept for the ablation in bench/robustness.py).

    Args:
        classifier: logits model, called with training=False.
        x: clean inputs [B, ...] in [0, 1]; y: integer labels [B].
        threat: the ball (`adt_tf.threat`; a number is an L-infinity radius, the paper's):
            `LinfBall` for the paper's distribution, `L2Ball` for the radial one.
        entropy_weight: lambda. steps: T. samples: k.
        lr, beta1, beta2: the inner Adam's settings (ADT: 0.3, 0, 0).
        seed: stateless seed [2]; each step folds in its index.
        loss_fn: the per-example loss L(logits [k*B, C], labels [k*B]) -> [k*B] that the
            distribution maximises (None: cross-entropy; ADT with the TRADES loss passes
            beta * KL(f(x) || f(x + delta)), see `adt_tf.methods.adt_exp`).
        unroll: write the T steps out one after the other instead of a `tf.while_loop`
            (same ops, same random numbers, same result). None: unroll when T <=
            `MAX_UNROLLED_STEPS`. Unrolled code runs faster under TensorFlow's graph
            optimisers (docs/performance.md: ADT_EXP's step 19% faster on a 2-core CPU)
            but takes longer to trace and compile for large T.
        branches: split the k*B batch of each step into this many near-equal parts, each
            its own forward and backward pass, independent of the others, so TensorFlow's
            inter-op thread pool runs them side by side (`parallel_logits`). On a CPU whose
            small convolutions do not profit from intra-op threads this uses the cores
            that would otherwise idle; on a GPU keep 1. The result is the same up to
            float rounding (every pass is per example; inference-mode BatchNorm too).
        gradients: "accumulate" (the reference, default) or "fresh" (see above).
        noise: where the standard-normal draws come from (`adt_tf.core.noise`): by default a
            stateless draw from the step's seed; a `RecordedNoise` replays given draws (step t
            takes the next k rows).
        trace: also return (mu, v) after every step (`InnerResult.trace`; the loop is
            then unrolled), for analyses of how the distribution evolves.
        family: the Gaussian base (`adt_tf.adt.families`): the paper's diagonal one (default),
            or a low-rank or matrix-normal one whose extra factors start at
            `family.init_factors` (the diagonal distribution unless `factor_init` > 0) and
            take the same ascent, accumulated alike, with their own step `family.factor_lr`.

    Returns:
        An `InnerResult`.
    """
    gradients = check_inner_gradients(gradients)
    accumulate = gradients == "accumulate"
    x = as_float32(x)  # mu, v and x + delta in float32 (at least) under any Keras policy
    y_rep = tf.tile(tf.reshape(y, [-1]), [samples])
    # The reference differentiates the sum over the k samples of each sample's objective:
    # k * J. A float16 classifier's backward pass can also underflow (the gradient of a
    # mean over k*B examples is ~1/(k*B) per example), so under float16 the objective is
    # further scaled by B (k*B in all: the per-example sum) and that extra factor undone in
    # float32 (a static loss scale). bfloat16 has float32's range and needs none.
    extra_scale = (tf.cast(tf.size(y), tf.float32)
                   if getattr(classifier, "compute_dtype", None) == "float16" else None)
    # Under a distribution strategy each replica's batch mean is over its share of the batch:
    # dividing by the replica count makes it the global batch's mean, so the Adam steps (and
    # their epsilon) are those one device takes on the whole batch.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    sum_scale = float(samples) / replicas

    def body(t, params, acc, first, second, objective, entropy):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            loc, raw, *factors = params
            dist = ExplicitAdversarialDistribution(loc, raw, threat, family, factors)
            step_seed = tf.random.experimental.stateless_fold_in(seed, t)
            x_adv, nlp = sample_inputs(x, dist, samples, step_seed, noise)
            logits = parallel_logits(classifier, x_adv, branches)
            if loss_fn is None:
                loss = keras.losses.sparse_categorical_crossentropy(
                    y_rep, tf.cast(logits, tf.float32), from_logits=True)
            else:
                loss = loss_fn(logits, y_rep)
            entropy = tf.reduce_mean(tf.cast(nlp, tf.float32))
            objective = tf.reduce_mean(tf.cast(loss, tf.float32)) + entropy_weight * entropy
            scaled = objective * sum_scale
            if extra_scale is not None:
                scaled = scaled * extra_scale
        grads = tape.gradient(scaled, list(params))
        if extra_scale is not None:
            grads = [g / tf.cast(extra_scale, g.dtype) for g in grads]
        if accumulate:  # the reference never zeroes the inner gradients
            acc = tuple(a + g for a, g in zip(acc, grads))
            grads = list(acc)
        params, first, second = adam_ascent(list(params), grads, list(first), list(second),
                                            t + 1, rates, beta1, beta2)
        return t + 1, tuple(params), acc, tuple(first), tuple(second), objective, entropy

    # Distinct zero tensors: in eager mode a tape watching one tensor object twice (mu and
    # v) would hand each the gradient of both.
    factors = family.init_factors(x, tf.random.experimental.stateless_fold_in(seed, -2))
    params = (tf.zeros_like(x), tf.zeros_like(x), *factors)
    rates = [lr, lr] + [family.factor_lr] * len(factors)

    def zeros():
        return tuple(tf.zeros_like(p) for p in params)

    scalar = tf.constant(0.0, tf.float32)
    state = (tf.constant(0), params, zeros(), zeros(), zeros(), scalar, scalar)
    if unroll is None:
        unroll = steps <= MAX_UNROLLED_STEPS
    history = [] if trace else None
    if unroll or trace:
        # Straight-line code: inside a while_loop body TensorFlow 2.21 often (not always:
        # it depends on the graph's node order) leaves MaxPoolGrad to Eigen instead of
        # oneDNN, 8x slower, and grappler fuses fewer elementwise ops.
        for _ in range(steps):
            state = body(*state)
            if trace:
                history.append((state[1][0], state[1][1]))
    else:
        state = tf.while_loop(lambda t, *_: t < steps, body, state, maximum_iterations=steps)
    _, (loc, raw, *factors), _, _, _, objective, entropy = state
    return InnerResult(loc=loc, raw_scale=raw, objective=objective, entropy=entropy,
                       trace=history, factors=tuple(factors))
