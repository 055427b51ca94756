"""ADT's explicit adversarial distribution: delta = epsilon * tanh(u), u ~ N(mu, diag(sigma^2)).

For the L2 ball (`L2Ball`, beyond the paper) the Gaussian is pushed through the radial map
`adt_tf.threat.bijectors.RadialTanh` instead, delta = epsilon * tanh(||u||) * u / ||u||, onto the
open L2 ball, with its exact log-Jacobian; everything else is the same. Each ball gives its
own map (`Ball.bijector`): nothing here branches on the norm.

Reference: Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep
Learning", NeurIPS 2020, Sec. 3.1 and Eq. 11.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from adt_tf.adt.families import DIAG, GaussianFamily
from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource
from adt_tf.core.precision import as_float32
from adt_tf.threat import Ball, as_threat

tfd = tfp.distributions


class PerturbationSample(NamedTuple):
    """Reparameterised samples of the distribution.

    Attributes:
        delta: perturbations, shape [k, B, *event_shape], inside the epsilon-ball.
        pre_tanh: the Gaussian samples u that produced delta (same shape).
        neg_log_prob: -log p(delta) averaged over the event's dimensions, shape [k, B]
            (the per-dimension entropy estimate of one sample).
    """

    delta: tf.Tensor
    pre_tanh: tf.Tensor
    neg_log_prob: tf.Tensor


class ExplicitAdversarialDistribution:
    """The per-example distribution p(delta) of ADT_EXP (and of ADT_EXP-AM's generator).

    Built from TFP: a `MultivariateNormalDiag` over the flattened image, pushed through
    `tfb.Chain([tfb.Scale(epsilon), tfb.Tanh()])`. Samples are reparameterised, so gradients
    reach `loc` (mu) and `raw_scale` (v).

    Args:
        loc: mu, shape [B, *event_shape] (e.g. [B, H, W, C]).
        raw_scale: v, same shape; sigma = softplus(v).
        family: the Gaussian base (`adt_tf.adt.families.GaussianFamily`: the paper's diagonal
            one by default, or a low-rank or matrix-normal one).
        factors: the family's extra parameters (`GaussianFamily.init_factors`; none for the
            diagonal family).
        threat: the ball (`adt_tf.threat`; a number is an L-infinity radius). Its
            `bijector` maps the Gaussian onto it: the paper's Tanh o Scale, coordinate-wise,
            for `LinfBall` (every sample in [-epsilon, epsilon] per coordinate), RadialTanh
            over each example's flattened perturbation for `L2Ball` (||delta||_2 < epsilon).

    Mathematical details:
        With r = (u - mu) / sigma, paper Eq. 11 gives, per dimension j,

            -log p(delta_j) = r_j^2 / 2 + log(2 pi) / 2 + log sigma_j
                              + log(1 - tanh^2(u_j)) + log epsilon.

        It is computed from the pre-tanh sample u (the base `log_prob(u)` plus the bijector's
        `forward_log_det_jacobian(u)`), never by inverting tanh of delta: atanh(+-1) is
        infinite once tanh saturates (|u| > 9 in float32). TFP's Tanh bijector evaluates
        log(1 - tanh^2(u)) in the stable form 2 (log 2 - u - softplus(-2u)).

        The entropy estimate used by ADT is the mean of -log p over the D dimensions of an
        example (the authors' code averages, and lambda = 0.01 is calibrated to that scale);
        `neg_log_prob` is therefore the total -log p divided by D.

        For the L2 ball, -log p(delta) = -log N(u; mu, sigma) + log|det J(u)| with the radial
        map's log-Jacobian log h'(r) + (D - 1) log(h(r) / r), h = epsilon tanh, r = ||u||
        (derived in `adt_tf.threat.bijectors`), again from u and again divided by D.

    Example:
        >>> dist = ExplicitAdversarialDistribution(tf.zeros([4, 32, 32, 3]),
        ...                                        tf.zeros([4, 32, 32, 3]), 8 / 255)
        >>> s = dist.sample(5, seed=tf.constant([1, 2]))
        >>> s.delta.shape, s.neg_log_prob.shape
        (TensorShape([5, 4, 32, 32, 3]), TensorShape([5, 4]))
    """

    def __init__(self, loc: tf.Tensor, raw_scale: tf.Tensor, threat: Ball | float,
                 family: GaussianFamily = DIAG, factors=()):
        self.threat = as_threat(threat)
        self.family = family
        self.epsilon = self.threat.epsilon
        # Always at least float32, whatever the Keras policy: a float16/bfloat16 mu (e.g. from
        # a generator under mixed precision) is cast up, so the samples, the tanh Jacobian
        # and the entropy are float32 (bfloat16 keeps 8 bits: log sigma and r^2 / 2 would
        # lose the differences lambda * H is made of).
        loc = as_float32(loc)
        raw_scale = tf.cast(as_float32(raw_scale), loc.dtype)
        if loc.shape.rank is not None and loc.shape.rank < 2:
            raise ValueError(
                f"loc must have a batch dimension and an event shape, got shape {loc.shape}."
            )
        self._event_shape = tf.shape(loc)[1:]
        self._event_rank = loc.shape.rank - 1
        batch = tf.shape(loc)[0]
        self._batch = batch
        self._num_dims = tf.reduce_prod(self._event_shape)
        flat_loc = tf.reshape(loc, [batch, -1])
        flat_scale = tf.reshape(tf.math.softplus(raw_scale), [batch, -1])
        self.factors = [tf.cast(as_float32(f), loc.dtype) for f in factors]
        self._flat = (flat_loc, flat_scale)
        self._static_event = loc.shape[1:]
        self.base = family.base(flat_loc, flat_scale, self.factors, self._static_event)
        self.bijector = self.threat.bijector(dtype=loc.dtype)
        self.distribution = tfd.TransformedDistribution(self.base, self.bijector)
        self._dtype = loc.dtype

    def centre(self) -> tf.Tensor:
        """f(mu), the image of the Gaussian's mean (epsilon * tanh(mu) for L-infinity), shape
        [B, *event_shape]."""
        return self._unflatten(self.bijector.forward(self._flat[0]))  # every family's mean

    def _unflatten(self, flat: tf.Tensor) -> tf.Tensor:
        lead = tf.shape(flat)[:-1]
        return tf.reshape(flat, tf.concat([lead, self._event_shape], axis=0))

    def sample(self, num_samples: int, seed: tf.Tensor,
               noise: NoiseSource = DEFAULT_NOISE) -> PerturbationSample:
        """Draws k reparameterised samples per example.

        The standard-normal draw n [k, B, D] comes from `noise` (by default a stateless draw
        from `seed`); for the diagonal family TFP's own reparameterisation, the base
        distribution's bijector (shift by mu after scaling by sigma), maps it to
        u = mu + sigma * n, exactly what `base.sample` does after its own draw; the other
        families add their factors' part (`GaussianFamily.sample`).

        Args:
            num_samples: k, the number of Monte Carlo samples.
            seed: a stateless seed (int tensor of shape [2]).
            noise: where n comes from (`adt_tf.core.noise`; tests replay recorded draws).

        Returns:
            A `PerturbationSample` with delta of shape [k, B, *event_shape].
        """
        u = self.family.sample(self.base, *self._flat, self.factors, num_samples, seed,
                               noise, self._static_event)  # [k, B, D], reparameterised
        delta = self.bijector.forward(u)
        return PerturbationSample(
            delta=self._unflatten(delta),
            pre_tanh=self._unflatten(u),
            neg_log_prob=self._neg_log_prob_flat(u),
        )

    def _neg_log_prob_flat(self, u_flat: tf.Tensor) -> tf.Tensor:
        # log p(delta) = log N(u) - log|d delta / d u|, evaluated at the pre-tanh u.
        log_prob = self.family.log_prob(
            self.base, u_flat, *self._flat, self.factors, self._static_event
        ) - self.bijector.forward_log_det_jacobian(u_flat, event_ndims=1)
        return -log_prob / tf.cast(self._num_dims, u_flat.dtype)

    def neg_log_prob(self, pre_tanh: tf.Tensor) -> tf.Tensor:
        """Per-dimension mean of -log p(delta) for delta = epsilon * tanh(pre_tanh).

        Args:
            pre_tanh: u, shape [..., B, *event_shape].

        Returns:
            Shape [..., B].
        """
        lead = tf.shape(pre_tanh)[: tf.rank(pre_tanh) - self._event_rank]
        flat = tf.reshape(pre_tanh, tf.concat([lead, [self._num_dims]], axis=0))
        return self._neg_log_prob_flat(flat)
