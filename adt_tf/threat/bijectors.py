"""RadialTanh: a TFP bijector from R^D onto the open L2 ball, with its exact log-Jacobian.

ADT's explicit distribution for the L-infinity ball pushes a Gaussian through
epsilon * tanh per coordinate, onto the box. For the L2 ball the same role is played by a
radial map, which keeps a direction and squashes the length:

    f(u) = h(r) * u / r,    r = ||u||_2,    h(r) = epsilon * tanh(r),

a bijection of R^D onto the open ball of radius epsilon (h is increasing from h(0) = 0 to
epsilon).

Derivation of the log-Jacobian. Write u = r * w with w = u / r on the unit sphere. The
Jacobian of f(u) = g(r) * w (g = h here) is

    J = g'(r) * w w^T + (g(r) / r) * (I - w w^T),

because moving u along w changes only the length (rate g'(r)), and moving it by a vector t
orthogonal to w turns w by t / r and leaves r unchanged to first order (rate g(r) / r).
J is symmetric with eigenvalue g'(r) on w and g(r) / r on the (D - 1)-dimensional complement,
so

    log |det J| = log g'(r) + (D - 1) * log(g(r) / r)
                = log epsilon + log(1 - tanh(r)^2) + (D - 1) * (log epsilon + log(tanh(r) / r)).

Numerics. Everything is written in s = r^2 so that the map is smooth at u = 0 (where r has
no gradient):
- tanh(r) / r = 1 - s/3 + 2 s^2/15 for s < 0.0025 (next term 17 r^6 / 315 < 3e-10), else
  tanh(sqrt(s)) / sqrt(s) with sqrt evaluated only where s is not small (the usual double
  `where`, so no NaN gradient flows from the unused branch);
- log(tanh(r) / r) = -s/3 + 7 s^2/90 below the same threshold (the log of the series above),
  else log(tanh r) - log r, with log tanh r = log1p(-exp(-2r)) - log1p(exp(-2r)) (exact
  for large r, where tanh r rounds to 1);
- log(1 - tanh(r)^2) = -s + s^2/6 below the threshold (-2 log cosh r), else
  2 (log 2 - r - softplus(-2r)), TFP's stable form for its Tanh bijector.
As for the L-infinity case, a sample's log-probability is computed from the pre-bijector u
(`forward_log_det_jacobian(u)`), never by inverting a saturated sample (tanh(r) rounds to 1
for r > 9 in float32, where the inverse is infinite).
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

_SMALL = 0.0025  # s = r^2 below which the series are used (r < 0.05)


def _tanh_ratio(s: tf.Tensor) -> tf.Tensor:
    """tanh(r) / r as a function of s = r^2 (smooth at 0)."""
    small = s < _SMALL
    s_big = tf.where(small, tf.ones_like(s), s)
    r = tf.sqrt(s_big)
    return tf.where(small, 1.0 - s / 3.0 + 2.0 * tf.square(s) / 15.0, tf.tanh(r) / r)


def _log_tanh_ratio(s: tf.Tensor) -> tf.Tensor:
    """log(tanh(r) / r) as a function of s = r^2 (smooth at 0, exact for large r)."""
    small = s < _SMALL
    s_big = tf.where(small, tf.ones_like(s), s)
    r = tf.sqrt(s_big)
    e = tf.exp(-2.0 * r)
    log_tanh = tf.math.log1p(-e) - tf.math.log1p(e)
    return tf.where(small, -s / 3.0 + 7.0 * tf.square(s) / 90.0, log_tanh - tf.math.log(r))


def _log_one_minus_tanh2(s: tf.Tensor) -> tf.Tensor:
    """log(1 - tanh(r)^2) = -2 log cosh r as a function of s = r^2 (smooth at 0)."""
    small = s < _SMALL
    s_big = tf.where(small, tf.ones_like(s), s)
    r = tf.sqrt(s_big)
    return tf.where(small, -s + tf.square(s) / 6.0,
                    2.0 * (math.log(2.0) - r - tf.math.softplus(-2.0 * r)))


def _atanh_ratio(t: tf.Tensor) -> tf.Tensor:
    """atanh(x) / x as a function of t = x^2, x in [0, 1)."""
    small = t < _SMALL
    t_big = tf.where(small, tf.ones_like(t) * 0.25, t)
    x = tf.sqrt(t_big)
    return tf.where(small, 1.0 + t / 3.0 + tf.square(t) / 5.0, tf.atanh(x) / x)


class RadialTanh(tfb.Bijector):
    """u in R^D -> epsilon * tanh(||u||) * u / ||u||, onto the open L2 ball (event: last axis).

    Args:
        radius: epsilon, the ball's radius (> 0).
        validate_args: TFP's flag (checks nothing extra here).
        name: the bijector's name.

    Mathematical details:
        forward_log_det_jacobian(u) = log h'(r) + (D - 1) log(h(r) / r), h = epsilon tanh,
        r = ||u||; derived, with the numerics, in the module's docstring.

    Example:
        >>> b = RadialTanh(0.5)
        >>> u = tf.random.normal([4, 3072])
        >>> delta = b.forward(u)                          # ||delta||_2 < 0.5 per row
        >>> b.forward_log_det_jacobian(u, event_ndims=1).shape
        TensorShape([4])
    """

    def __init__(self, radius: float, validate_args: bool = False, name: str = "radial_tanh"):
        parameters = dict(locals())
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a finite number > 0, got {radius!r}.")
        with tf.name_scope(name) as name:
            self._radius = float(radius)
            super().__init__(forward_min_event_ndims=1, validate_args=validate_args,
                             parameters=parameters, name=name)

    @property
    def radius(self) -> float:
        return self._radius

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _forward(self, u):
        s = tf.reduce_sum(tf.square(u), axis=-1, keepdims=True)
        return tf.cast(self._radius, u.dtype) * _tanh_ratio(s) * u

    def _inverse(self, y):
        eps = tf.cast(self._radius, y.dtype)
        t = tf.reduce_sum(tf.square(y), axis=-1, keepdims=True) / tf.square(eps)
        return y * _atanh_ratio(t) / eps

    def _forward_log_det_jacobian(self, u):
        s = tf.reduce_sum(tf.square(u), axis=-1)
        dims = tf.cast(tf.shape(u)[-1], u.dtype)
        log_eps = tf.math.log(tf.cast(self._radius, u.dtype))
        log_dh = log_eps + _log_one_minus_tanh2(s)
        return log_dh + (dims - 1.0) * (log_eps + _log_tanh_ratio(s))


__all__ = ["RadialTanh"]
