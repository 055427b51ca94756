"""The loss landscape around an input: cross-entropy on a 2-D grid of perturbations.

The ADT paper (Fig. 2a-e) draws, for models trained with each method, the loss surface
around a test input along the gradient-sign direction and a random sign direction: a flat,
low surface means robustness that does not rest on gradient masking.

Example:
    >>> result = loss_grid(model, x_test[:1], y_test[:1], 8 / 255, grid_size=21)
    >>> result.losses.shape        # [inputs, grid, grid], indexed [b, gradient, random]
    (1, 21, 21)

Reference:
    Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep Learning",
    NeurIPS 2020, Fig. 2.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.core.noise import as_seed
from adt_tf.data import as_unit_float
from adt_tf.numerics.losses import loss_and_grad, per_example_ce
from adt_tf.threat import LinfBall


def landscape_directions(classifier, x, y, epsilon: float, seed=0) -> tuple[tf.Tensor, tf.Tensor]:
    """The two axes of the grid: epsilon * sign(grad_x CE) and epsilon * a random sign vector.

    Args:
        classifier: logits model (inference mode).
        x: inputs [B, ...]; y: labels [B].
        epsilon: the length of each axis in L-infinity.
        seed: int or stateless seed of the random direction; the same seed gives the same
            random direction for every model, so landscapes of several models share an axis.

    Returns:
        (gradient direction, random direction), each shaped like x. A pixel with a zero
        gradient gets 0 on the gradient axis.
    """
    x = tf.convert_to_tensor(x)
    _, grad, _ = loss_and_grad(classifier, x, y, per_example_ce)
    signs = tf.random.stateless_uniform(tf.shape(x), as_seed(seed), 0, 2, dtype=tf.int32)
    random = tf.cast(2 * signs - 1, x.dtype)
    return epsilon * tf.sign(grad), epsilon * random


@dataclasses.dataclass
class LandscapeResult:
    """A loss grid.

    Attributes:
        coords: [G] coordinates along each axis, in units of epsilon (from -span to span).
        losses: [B, G, G]; losses[b, i, j] is the loss at x_b + coords[i] * d_grad +
            coords[j] * d_random (clipped to [0, 1] when `clip`).
        clean_losses: [B] the loss at x_b itself.
        settings: the grid's settings.
    """

    coords: np.ndarray
    losses: np.ndarray
    clean_losses: np.ndarray
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"coords": self.coords.tolist(), "losses": self.losses.tolist(),
                "clean_losses": self.clean_losses.tolist(),
                "max_losses": self.losses.max(axis=(1, 2)).tolist(),
                "settings": self.settings}


def loss_grid(classifier: keras.Model, x, y, epsilon: float, *, grid_size: int = 21,
              span: float = 1.0, clip: bool = True, seed: int = 0, batch_size: int = 256,
              verbose: bool = False) -> LandscapeResult:
    """The cross-entropy on a G x G grid around each input.

    Args:
        classifier: logits model (inference mode).
        x: inputs [B, ...] in [0, 1] (float or uint8); y: labels [B].
        epsilon: the length of each axis's unit (8/255 for CIFAR-10).
        grid_size: G, points per axis (odd keeps the clean input on the grid).
        span: the grid covers [-span, span] epsilons along each axis.
        clip: clip the perturbed points to the valid pixel range [0, 1].
        seed: seed of the random direction (shared across models with the same seed).
        batch_size: grid points per forward pass.
        verbose: show a progress bar over the inputs.

    Mathematical details:
        L(a, b) = CE(f(clip(x + a * eps * sign(grad_x CE(f(x), y)) + b * eps * r)), y),
        r uniform in {-1, 1}^D, for a, b in linspace(-span, span, G).

    Returns:
        A `LandscapeResult`.
    """
    x = as_unit_float(x)
    y = np.asarray(y).astype(np.int32)
    checks.check_positive_int(len(x), "the number of inputs N")
    epsilon = checks.check_epsilon(epsilon)
    grid_size = checks.check_positive_int(grid_size, "grid_size", minimum=2)
    span = checks.check_positive(span, "span")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    coords = np.linspace(-span, span, grid_size).astype(np.float32)
    aa, bb = (c.ravel() for c in np.meshgrid(coords, coords, indexing="ij"))
    ball = LinfBall(epsilon)

    @tf.function(reduce_retracing=True)
    def losses_at(xb, yb, d_grad, d_rand, a, b):
        shape = tf.concat([[-1], tf.ones(tf.rank(xb) - 1, tf.int32)], axis=0)
        points = xb + tf.reshape(a, shape) * d_grad + tf.reshape(b, shape) * d_rand
        if clip:
            points = ball.clip(points)
        labels = tf.fill(tf.shape(a), yb)
        return per_example_ce(classifier(points, training=False), labels)

    xt, yt = tf.constant(x, tf.float32), tf.constant(y, tf.int32)
    d_grad, d_rand = landscape_directions(classifier, xt, yt, epsilon, seed)
    clean = per_example_ce(classifier(xt, training=False), yt).numpy()
    grids = np.zeros((len(x), grid_size * grid_size), np.float32)
    bar = keras.utils.Progbar(len(x), unit_name="input") if verbose else None
    for i in range(len(x)):
        for start in range(0, len(aa), batch_size):
            stop = start + batch_size
            grids[i, start:stop] = losses_at(xt[i:i + 1], yt[i], d_grad[i:i + 1],
                                              d_rand[i:i + 1], tf.constant(aa[start:stop]),
                                              tf.constant(bb[start:stop])).numpy()
        if bar is not None:
            bar.add(1)
    settings = dict(num_inputs=len(x), grid_size=grid_size, span=span, epsilon=epsilon,
                    clip=clip, seed=seed, loss="cross-entropy",
                    axes=["epsilon * sign(gradient)", "epsilon * random sign"])
    return LandscapeResult(coords=coords, losses=grids.reshape(len(x), grid_size, grid_size),
                           clean_losses=clean, settings=settings)


__all__ = ["LandscapeResult", "landscape_directions", "loss_grid"]
