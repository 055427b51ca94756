"""The L-infinity threat model shared by every attack and training method."""

from __future__ import annotations

import tensorflow as tf

from adt_tf import validation
from adt_tf.noise import DEFAULT_NOISE, NoiseSource


class LinfBall:
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

    def __init__(self, epsilon: float, clip_min: float = 0.0, clip_max: float = 1.0):
        self.epsilon = validation.check_epsilon(epsilon)
        if not clip_min < clip_max:
            raise ValueError(
                f"clip_min must be smaller than clip_max, got clip_min={clip_min}, "
                f"clip_max={clip_max}."
            )
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)

    def clip(self, x: tf.Tensor) -> tf.Tensor:
        """Clips to the valid pixel range."""
        return tf.clip_by_value(x, self.clip_min, self.clip_max)

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
            noise: where the uniform draw comes from (`adt_tf.noise`; default: the seed).
        """
        noise = noise.uniform(tf.shape(x), seed, -self.epsilon, self.epsilon, dtype=x.dtype)
        return self.clip(x + noise)

    def step(self, x_adv: tf.Tensor, grad: tf.Tensor, step_size: float) -> tf.Tensor:
        """One signed-gradient ascent step (not projected)."""
        return x_adv + tf.cast(step_size, x_adv.dtype) * tf.sign(grad)

    def contains(self, x_adv: tf.Tensor, x: tf.Tensor, tol: float = 1e-6) -> tf.Tensor:
        """Whether every x_adv lies in the ball and the pixel range (a bool scalar)."""
        inside = tf.reduce_max(tf.abs(x_adv - x)) <= self.epsilon + tol
        in_range = tf.logical_and(
            tf.reduce_min(x_adv) >= self.clip_min - tol, tf.reduce_max(x_adv) <= self.clip_max + tol
        )
        return tf.logical_and(inside, in_range)

    def get_config(self) -> dict:
        return {"epsilon": self.epsilon, "clip_min": self.clip_min, "clip_max": self.clip_max}

    def __repr__(self) -> str:
        return f"LinfBall(epsilon={self.epsilon:.6g})"
