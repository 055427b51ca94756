"""The threat models shared by every attack and training method: L-infinity and L2 balls.

Attacks and methods take a threat model (`LinfBall`, `L2Ball`; `make_threat(norm, epsilon)`
from a `--norm` flag) and ask it to project, to step and to draw a random start; none of them
clips or normalises by hand, and none branches on a norm string.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from adt_tf.core import checks
from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource
from adt_tf.threat.bijectors import RadialTanh


class Ball:
    """What every threat model has: a radius, the valid pixel range, and the operations
    attacks and methods use (`project`, `step`, `random_start`, `size`, `contains`, `clip`)."""

    norm = ""
    #: How messages name the norm ("L-infinity", "L2").
    title = ""
    #: The radius beyond which the ball holds no more of the pixel box (inf: none such).
    max_radius = float("inf")

    def __init__(self, epsilon: float, clip_min: float = 0.0, clip_max: float = 1.0):
        self.epsilon = self.check_radius(epsilon)
        if not clip_min < clip_max:
            raise ValueError(
                f"clip_min must be smaller than clip_max, got clip_min={clip_min}, "
                f"clip_max={clip_max}."
            )
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    @staticmethod
    def check_radius(epsilon: float) -> float:
        """`epsilon` as a float if it is a valid radius of this ball, else a ValueError."""
        raise NotImplementedError

    def clip(self, x: tf.Tensor) -> tf.Tensor:
        """Clips to the valid pixel range."""
        return tf.clip_by_value(x, self.clip_min, self.clip_max)

    def bijector(self, radius: float | None = None,
                 dtype: tf.DType = tf.float32) -> tfp.bijectors.Bijector:
        """The bijection of R^D onto the open ball of this norm (event: the last axis), of
        radius `radius` (None: epsilon): what ADT's distributions push their Gaussian
        through."""
        raise NotImplementedError

    def random_direction(self, shape, seed: tf.Tensor) -> tf.Tensor:
        """A random direction in this norm's shape, as AutoAttack's FAB draws its restarts:
        uniform in the cube [-1, 1]^D for L-infinity, Gaussian for L2 (not normalised)."""
        raise NotImplementedError

    def onto(self, u: tf.Tensor, radius: float | None = None) -> tf.Tensor:
        """Each example's u [B, ...] mapped through `bijector(radius)`, its whole event
        (every axis but the first) flattened; same shape as u."""
        shape = tf.shape(u)
        flat = tf.reshape(u, [shape[0], -1])
        return tf.reshape(self.bijector(radius, u.dtype).forward(flat), shape)

    def get_config(self) -> dict:
        return {"norm": self.norm, "epsilon": self.epsilon, "clip_min": self.clip_min,
                "clip_max": self.clip_max}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epsilon={self.epsilon:.6g})"


class LinfBall(Ball):
    """The set {x' : ||x' - x||_inf <= epsilon, 0 <= x' <= 1} around an input x.

    The threat model is kept apart from any optimiser (as in MadryLab's robustness
    library): attacks and training methods ask it to project, to step and to draw a
    random start, and never clip by hand.

    Args:
        epsilon: radius of the ball, in the [0, 1] pixel scale (8/255 for CIFAR-10).
        clip_min: smallest valid pixel value.
        clip_max: largest valid pixel value.

    Mathematical details:
        project(x_adv, x) = clip(x + clip(x_adv - x, -epsilon, epsilon), clip_min, clip_max)
        step(x_adv, g, a)  = x_adv + a * sign(g)          (the signed-gradient ascent step)
        random_start(x)    = project(x + U(-epsilon, epsilon), x)

    Example:
        >>> ball = LinfBall(8 / 255)
        >>> x_adv = ball.project(x + 0.1, x)   # every pixel moved by at most 8/255
    """

    norm = "linf"
    title = "L-infinity"
    max_radius = 1.0  # the whole [0, 1] pixel range

    @staticmethod
    def check_radius(epsilon: float) -> float:
        return checks.check_epsilon(epsilon)

    def bijector(self, radius: float | None = None,
                 dtype: tf.DType = tf.float32) -> tfp.bijectors.Bijector:
        """radius * tanh per coordinate: TFP's Scale after Tanh (the paper's map)."""
        radius = self.epsilon if radius is None else radius
        return tfp.bijectors.Chain([tfp.bijectors.Scale(tf.cast(radius, dtype)),
                                    tfp.bijectors.Tanh()])

    def random_direction(self, shape, seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, seed=seed, minval=-1.0, maxval=1.0)

    def project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """Projects x_adv onto the ball around x, then onto the valid pixel range."""
        delta = tf.clip_by_value(x_adv - x, -self.epsilon, self.epsilon)
        return self.clip(x + delta)

    def random_start(self, x: tf.Tensor, seed: tf.Tensor,
                     noise: NoiseSource = DEFAULT_NOISE) -> tf.Tensor:
        """A uniform random point of the ball (before clipping to the pixel range).

        Args:
            x: clean inputs.
            seed: a stateless seed, an int tensor of shape [2].
            noise: where the uniform draw comes from (`adt_tf.core.noise`; default: the seed).
        """
        noise = noise.uniform(tf.shape(x), seed, -self.epsilon, self.epsilon, dtype=x.dtype)
        return self.clip(x + noise)

    def step(self, x_adv: tf.Tensor, grad: tf.Tensor, step_size: float) -> tf.Tensor:
        """One signed-gradient ascent step (not projected)."""
        return x_adv + tf.cast(step_size, x_adv.dtype) * tf.sign(grad)

    def size(self, delta: tf.Tensor) -> tf.Tensor:
        """The L-infinity norm of each example's perturbation (shape [B])."""
        return tf.reduce_max(tf.abs(tf.reshape(delta, [tf.shape(delta)[0], -1])), axis=1)

    def autoattack_project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """The projection AutoAttack's APGD uses (for L-infinity, the exact one)."""
        return self.project(x_adv, x)

    def autoattack_start(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """APGD's L-infinity start in AutoAttack (fra31/auto-attack `autopgd_base.py`,
        `attack_single_run` with `normalize`): a uniform draw rescaled per example so that
        its largest coordinate is on the ball's surface, then clipped to the box.

        Mathematical details:
            t ~ U(-1, 1)^D, x_0 = clip(x + eps t / (max_i |t_i| + 1e-12), 0, 1), the max
            over each example's coordinates (not a uniform point of the ball: the draw is
            stretched by 1 / max_i |t_i|, about 1 + 1/D).
        """
        t = tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0, dtype=x.dtype)
        largest = tf.reduce_max(tf.abs(t), axis=tf.range(1, tf.rank(t)), keepdims=True)
        return self.clip(x + tf.cast(self.epsilon, x.dtype) * t / (largest + 1e-12))

    def contains(self, x_adv: tf.Tensor, x: tf.Tensor, tol: float = 1e-6) -> tf.Tensor:
        """Whether every x_adv lies in the ball and the pixel range (a bool scalar)."""
        inside = tf.reduce_max(tf.abs(x_adv - x)) <= self.epsilon + tol
        in_range = tf.logical_and(
            tf.reduce_min(x_adv) >= self.clip_min - tol, tf.reduce_max(x_adv) <= self.clip_max + tol
        )
        return tf.logical_and(inside, in_range)



def _per_example_sum(t: tf.Tensor) -> tf.Tensor:
    """Sum over every axis but the first, keeping them (shape [B, 1, ..., 1])."""
    return tf.reduce_sum(t, axis=tf.range(1, tf.rank(t)), keepdims=True)


def _l2_norm(t: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(_per_example_sum(tf.square(t)))


class L2Ball(Ball):
    """The set {x' : ||x' - x||_2 <= epsilon, 0 <= x' <= 1} around an input x (per example).

    Args:
        epsilon: radius of the ball, in the [0, 1] pixel scale (0.5 for CIFAR-10, as
            RobustBench's L2 leaderboard); any positive number (L2 radii above 1 are usual).
        clip_min, clip_max: the valid pixel range.

    Mathematical details:
        project(p, x): the exact Euclidean projection onto the intersection of the ball and
            the box. With q = p - x, the box for d = x' - x is [clip_min - x, clip_max - x],
            which holds 0 (x is a valid input). The KKT conditions of
            min ||d - q||^2 s.t. ||d|| <= epsilon, d in the box give, coordinate by coordinate,
            d(t) = clip(t * q, box) with t = 1 / (1 + mu) in (0, 1], mu >= 0 the multiplier of
            the ball: t = 1 if ||clip(q, box)|| <= epsilon, else the t with ||d(t)|| = epsilon
            (||d(t)|| is continuous and non-decreasing in t). That t is found by bisection on
            [epsilon / ||q||, 1] (at the lower end ||d|| <= ||t q|| = epsilon), 40 halvings
            in float32, and the lower (feasible) end is returned: the result is in the ball
            and the box exactly, and within 2^-40 of the optimal t. (AutoAttack and ART scale
            to the ball and then clip to the box, a feasible point that is not the projection
            in general; attacks that must match them do the same through `scale_then_clip`.)
        step(x_adv, g, a) = x_adv + a * g / ||g||_2 (the steepest ascent step for L2; a zero
            gradient leaves x_adv where it is).
        random_start(x): uniform in the ball, d = epsilon * U^(1/D) * n / ||n||, n ~ N(0, I),
            U ~ U(0, 1), D the input's size, then clipped to the box (clipping keeps d in the
            ball, as 0 is in the box).

    Example:
        >>> ball = L2Ball(0.5)
        >>> x_adv = ball.project(x + 0.1, x)   # ||x_adv - x||_2 <= 0.5 per example
    """

    norm = "l2"
    title = "L2"
    _BISECTIONS = 40

    @staticmethod
    def check_radius(epsilon: float) -> float:
        return checks.check_positive(epsilon, "epsilon")

    def bijector(self, radius: float | None = None,
                 dtype: tf.DType = tf.float32) -> tfp.bijectors.Bijector:
        """The radial map `RadialTanh(radius)` onto the open L2 ball (beyond the paper)."""
        return RadialTanh(self.epsilon if radius is None else radius)

    def random_direction(self, shape, seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_normal(shape, seed=seed)

    def project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        q = x_adv - x
        low, high = self.clip_min - x, self.clip_max - x
        eps = tf.cast(self.epsilon, q.dtype)

        def norm_at(t):
            return _l2_norm(tf.clip_by_value(t * q, low, high))

        q_norm = _l2_norm(q)
        inside = norm_at(tf.ones_like(q_norm)) <= eps
        t_low = tf.minimum(eps / tf.maximum(q_norm, tf.cast(1e-30, q.dtype)), 1.0)
        t_high = tf.ones_like(t_low)
        for _ in range(self._BISECTIONS):
            mid = 0.5 * (t_low + t_high)
            above = norm_at(mid) > eps
            t_low = tf.where(above, t_low, mid)
            t_high = tf.where(above, mid, t_high)
        t = tf.where(inside, tf.ones_like(t_low), t_low)
        return x + tf.clip_by_value(t * q, low, high)

    def scale_then_clip(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """Scales x_adv - x into the ball, then clips to the box (AutoAttack's and ART's
        rule: feasible, not the exact projection; see the class notes)."""
        delta = x_adv - x
        scale = tf.minimum(1.0, tf.cast(self.epsilon, delta.dtype) / tf.maximum(
            _l2_norm(delta), tf.cast(1e-12, delta.dtype)))
        return self.clip(x + delta * scale)

    def size(self, delta: tf.Tensor) -> tf.Tensor:
        """The L2 norm of each example's perturbation (shape [B])."""
        flat = tf.reshape(delta, [tf.shape(delta)[0], -1])
        return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1))

    def autoattack_project(self, x_adv: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """The projection AutoAttack's L2 APGD uses: scale into the ball, clip to the box."""
        return self.scale_then_clip(x_adv, x)

    def autoattack_start(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """APGD's L2 start in AutoAttack (`autopgd_base.py`, `attack_single_run`): a point
        of the sphere of radius epsilon in a Gaussian direction, clipped to the box,
        x_0 = clip(x + eps t / ||t||_2, 0, 1), t ~ N(0, I) (theirs adds 1e-12 to the norm,
        ours bounds it below by 1e-12)."""
        direction = tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)
        unit = direction / tf.maximum(_l2_norm(direction), tf.cast(1e-12, x.dtype))
        return self.clip(x + tf.cast(self.epsilon, x.dtype) * unit)

    def random_start(self, x: tf.Tensor, seed: tf.Tensor,
                     noise: NoiseSource = DEFAULT_NOISE) -> tf.Tensor:
        seeds = tf.random.experimental.stateless_split(seed, 2)
        direction = noise.normal(tf.shape(x), seeds[0], dtype=x.dtype)
        batch = tf.shape(x)[:1]
        ones = tf.ones([tf.rank(x) - 1], tf.int32)
        u = noise.uniform(tf.concat([batch, ones], 0), seeds[1], 0.0, 1.0, dtype=x.dtype)
        size = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
        radius = tf.cast(self.epsilon, x.dtype) * tf.pow(u, 1.0 / size)
        return self.clip(x + radius * direction / tf.maximum(_l2_norm(direction), 1e-12))

    def step(self, x_adv: tf.Tensor, grad: tf.Tensor, step_size: float) -> tf.Tensor:
        grad = tf.cast(grad, x_adv.dtype)
        norm = _l2_norm(grad)
        unit = tf.math.divide_no_nan(grad, norm)
        return x_adv + tf.cast(step_size, x_adv.dtype) * unit

    def contains(self, x_adv: tf.Tensor, x: tf.Tensor, tol: float = 1e-5) -> tf.Tensor:
        """Whether every x_adv lies in the ball (up to `tol` relative to epsilon, float32
        rounding of a sum over D squares) and in the pixel range."""
        inside = tf.reduce_max(_l2_norm(x_adv - x)) <= self.epsilon * (1 + tol) + 1e-6
        in_range = tf.logical_and(tf.reduce_min(x_adv) >= self.clip_min - 1e-6,
                                  tf.reduce_max(x_adv) <= self.clip_max + 1e-6)
        return tf.logical_and(inside, in_range)

THREATS = {"linf": LinfBall, "l2": L2Ball}

#: The norms of a method or attack defined for every threat model here.
EVERY_NORM = tuple(THREATS)


def as_threat(epsilon: float | Ball) -> Ball:
    """An attack's `epsilon` argument as a threat model: a number is the radius of an
    L-infinity ball (the paper's threat model, and every attack's default); a `Ball` is used
    as it is."""
    return epsilon if isinstance(epsilon, Ball) else LinfBall(epsilon)


def require_norm(threat: Ball, norms: tuple[str, ...], what: str) -> Ball:
    """`threat` if its norm is one of `norms`, else a ValueError saying that `what` (an
    attack or a method) has no version for that norm and which it has."""
    if threat.norm not in norms:
        titles = " and ".join(THREATS[n].title for n in norms)
        flags = ", ".join(f"--norm={n}" for n in norms)
        raise ValueError(f"{what} has no {threat.norm} version: it is defined for the "
                         f"{titles} ball{'s' if len(norms) > 1 else ''} only ({flags}).")
    return threat


def make_threat(norm: str, epsilon: float) -> Ball:
    """The threat model of a `--norm` value ("linf" or "l2") and radius."""
    checks.check_choice(norm, "norm", tuple(THREATS))
    return THREATS[norm](epsilon)


__all__ = ["EVERY_NORM", "THREATS", "Ball", "L2Ball", "LinfBall", "as_threat", "make_threat",
           "require_norm"]
