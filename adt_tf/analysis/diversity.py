"""Diversity of adversarial examples: a learned distribution's samples against PGD's restarts.

The ADT paper (Sec. 2.2.1, Fig. 1) motivates distributional training by the diversity of the
adversarial examples of a fitted distribution: against a standard-trained CIFAR-10 model the
average pairwise L2 distance of 10 samples of the EXP attack's distribution is 1.95, that of
10 PGD-20 examples from random restarts 1.56 (100 test images), and a PCA of both sets shows
the PGD examples in a few tight clusters.

Example:
    >>> result = diversity_analysis(model, x_test[:100], y_test[:100], 8 / 255)
    >>> result.exp_mean_distance, result.pgd_mean_distance

Reference:
    Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep Learning",
    NeurIPS 2020, Sec. 2.2.1 and Fig. 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from adt_tf.adt.families import GaussianFamily
from adt_tf.adt.inner_maximization import explicit_inner_maximization, sample_inputs
from adt_tf.attacks.common import misclassified
from adt_tf.attacks.pgd import pgd
from adt_tf.core import checks
from adt_tf.core.noise import as_seed
from adt_tf.data import as_unit_float
from adt_tf.threat import Ball, as_threat


def average_pairwise_distance(samples) -> np.ndarray:
    """The mean L2 distance between the samples of each input, over all unordered pairs.

    Args:
        samples: [N, n, ...]: n samples (e.g. adversarial images) for each of N inputs, n >= 2.

    Returns:
        float64 [N]: (2 / (n (n - 1))) sum_{i < j} ||s_i - s_j||_2 per input.

    Mathematical details:
        With the Gram matrix G = S S^T of the flattened samples (in float64),
        ||s_i - s_j||^2 = G_ii + G_jj - 2 G_ij; rounding can make this a tiny negative number
        for (near-)equal samples, so it is clipped at 0 before the square root.
    """
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim < 2:
        raise ValueError(f"samples must have shape [N, n, ...], got shape {s.shape}.")
    checks.check_positive_int(s.shape[1], "the number of samples per input n", minimum=2)
    flat = s.reshape(s.shape[0], s.shape[1], -1)
    flat = flat - flat.mean(axis=1, keepdims=True)  # distances are shift-invariant; less rounding
    gram = np.einsum("nid,njd->nij", flat, flat)
    sq = np.diagonal(gram, axis1=1, axis2=2)
    d2 = np.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * gram, 0.0)
    n = s.shape[1]
    upper = np.triu_indices(n, k=1)
    return np.sqrt(d2[:, upper[0], upper[1]]).mean(axis=1)


def pca_project(points, num_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Projects points onto their first principal components.

    Args:
        points: [m, ...] (flattened to [m, D]).
        num_components: how many components (at most m).

    Returns:
        (projection [m, num_components], explained_variance_ratio [num_components]).
        Each component's sign is fixed so that its largest-magnitude coordinate is positive.

    Mathematical details:
        With X the centred [m, D] data, the SVD X = U S V^T gives the projection
        X V_{:, :c} = U_{:, :c} S_{:c}. It is computed from the small m x m Gram matrix
        X X^T = U S^2 U^T (m samples of an image of D = 3072 pixels: m << D), in float64.
    """
    x = np.asarray(points, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    m = x.shape[0]
    num_components = checks.check_positive_int(num_components, "num_components")
    if num_components > m:
        raise ValueError(f"num_components must be at most the number of points {m}, got "
                         f"{num_components}.")
    x = x - x.mean(axis=0, keepdims=True)
    eigvals, eigvecs = np.linalg.eigh(x @ x.T)
    order = np.argsort(eigvals)[::-1][:num_components]
    singular = np.sqrt(np.maximum(eigvals[order], 0.0))
    projection = eigvecs[:, order] * singular
    pivot = np.argmax(np.abs(projection), axis=0)
    signs = np.sign(projection[pivot, np.arange(num_components)])
    projection = projection * np.where(signs == 0, 1.0, signs)
    total = np.maximum(eigvals, 0.0).sum()
    ratio = singular**2 / total if total > 0 else np.zeros(num_components)
    return projection, ratio


def exp_samples(classifier, x, y, threat: Ball | float, num_samples: int, *, steps: int = 20,
                mc_samples: int = 10, entropy_weight: float = 0.01, lr: float = 0.3,
                gradients: str = "accumulate", family: str = "diag", rank: int = 8,
                seed=0, return_fit: bool = False):
    """n adversarial examples per input, drawn from the distribution the EXP attack fits.

    The EXP attack is ADT_EXP's inner maximisation run against the fixed classifier (T = 20
    Adam steps of k = 10 Monte Carlo samples, lambda = 0.01); the fitted per-input
    distribution is then sampled n times.

    Args:
        threat: the ball (`adt_tf.threat`; a number is an L-infinity radius, the paper's);
            under an `L2Ball` the distribution is the radial one onto it.
        gradients: the inner loop's 'accumulate' (the reference) or 'fresh'.
        family, rank: the distribution's Gaussian base (`adt_tf.adt.families.GaussianFamily`:
            'diag', the paper's; 'lowrank' of rank `rank`; 'matrix_normal'), each factor
            block with its family's own step.
        return_fit: also return the fitted `InnerResult` (with the per-step trace of mu, v).

    Returns:
        [n, B, ...] inputs clip(x + delta), delta ~ p_{mu, v}, inside the epsilon-ball (and the
        `InnerResult` with `return_fit`).
    """
    ball = as_threat(threat)
    gaussian = GaussianFamily(family, rank=rank)
    num_samples = checks.check_positive_int(num_samples, "num_samples")
    base = as_seed(seed)
    x = tf.convert_to_tensor(x)
    fitted = explicit_inner_maximization(
        classifier, x, y, threat=ball,
        entropy_weight=checks.check_non_negative(entropy_weight, "entropy_weight"),
        steps=checks.check_positive_int(steps, "steps"),
        samples=checks.check_positive_int(mc_samples, "mc_samples"),
        lr=checks.check_positive(lr, "lr"), beta1=0.0, beta2=0.0,
        seed=tf.random.experimental.stateless_fold_in(base, 0), gradients=gradients,
        trace=return_fit, family=gaussian)
    dist = fitted.distribution(ball, gaussian)
    flat, _ = sample_inputs(x, dist, num_samples,
                            tf.random.experimental.stateless_fold_in(base, 1))
    samples = tf.reshape(flat, tf.concat([[num_samples], tf.shape(x)], axis=0))
    return (samples, fitted) if return_fit else samples


def pgd_samples(classifier, x, y, threat: Ball | float, num_samples: int, *, steps: int = 20,
                step_size: float | None = None, seed=0) -> tf.Tensor:
    """n PGD adversarial examples per input, one from each of n random starts.

    All n * B runs are one batch (the input tiled n times), each with its own uniform random
    start; step size epsilon / 4 by default (the paper's PGD-20); under an `L2Ball` PGD-L2
    (normalised steps, uniform start in the L2 ball). Each sample is its run's last iterate,
    as the ADT authors' PGD returns it: the evaluation's per-example best iterate would give
    every run of an input misclassified when clean the clean input itself (no spread).

    Returns:
        [n, B, ...] adversarial inputs.
    """
    num_samples = checks.check_positive_int(num_samples, "num_samples")
    x = tf.convert_to_tensor(x)
    tiled = tf.tile(x, tf.concat([[num_samples], tf.ones(tf.rank(x) - 1, tf.int32)], axis=0))
    y_tiled = tf.tile(tf.reshape(y, [-1]), [num_samples])
    x_adv = pgd(classifier, tiled, y_tiled, as_threat(threat), steps=steps,
                step_size=step_size,
                random_start=True, restarts=1, seed=as_seed(seed), best_iterate=False)
    return tf.reshape(x_adv, tf.concat([[num_samples], tf.shape(x)], axis=0))


@dataclasses.dataclass
class DiversityResult:
    """The numbers of a diversity analysis.

    Attributes:
        exp_distance, pgd_distance: average pairwise L2 distance per input, [N] each.
        exp_fooling_rate, pgd_fooling_rate: fraction of all samples that are misclassified.
        projections: for the first inputs, (exp [n, 2], pgd [n, 2]): both sets projected on
            the first two principal components of their union.
        explained_variance: the two components' share of the union's variance, per input.
        settings: the analysis's settings.
    """

    exp_distance: np.ndarray
    pgd_distance: np.ndarray
    exp_fooling_rate: float
    pgd_fooling_rate: float
    projections: list[tuple[np.ndarray, np.ndarray]]
    explained_variance: list[np.ndarray]
    settings: dict[str, Any]

    @property
    def exp_mean_distance(self) -> float:
        return float(np.mean(self.exp_distance))

    @property
    def pgd_mean_distance(self) -> float:
        return float(np.mean(self.pgd_distance))

    def to_json(self) -> dict[str, Any]:
        return {
            "exp_mean_distance": self.exp_mean_distance,
            "exp_std_distance": float(np.std(self.exp_distance)),
            "pgd_mean_distance": self.pgd_mean_distance,
            "pgd_std_distance": float(np.std(self.pgd_distance)),
            "exp_fooling_rate": self.exp_fooling_rate,
            "pgd_fooling_rate": self.pgd_fooling_rate,
            "exp_distance": self.exp_distance.tolist(),
            "pgd_distance": self.pgd_distance.tolist(),
            "pca": [{"exp": e.tolist(), "pgd": p.tolist(), "explained_variance": r.tolist()}
                    for (e, p), r in zip(self.projections, self.explained_variance)],
            "settings": self.settings,
        }


def diversity_analysis(classifier: keras.Model, x, y, threat: Ball | float, *,
                       num_samples: int = 10, exp_steps: int = 20, exp_mc_samples: int = 10,
                       entropy_weight: float = 0.01, pgd_steps: int = 20,
                       batch_size: int = 32, num_projected: int = 8,
                       seed: int = 0, verbose: bool = True) -> DiversityResult:
    """EXP samples against PGD restarts on N inputs: pairwise distances and PCA projections.

    Args:
        classifier: logits model (inference mode).
        x: N inputs in [0, 1] (float) or uint8; y: their labels.
        threat: the ball (`adt_tf.threat`; a number is an L-infinity radius, the paper's);
            an `L2Ball` sets EXP's radial distribution against PGD-L2.
        num_samples: n, samples (and PGD restarts) per input, n >= 2 (10 in the paper).
        exp_steps, exp_mc_samples, entropy_weight: the EXP attack's T, k and lambda.
        pgd_steps: PGD iterations per restart (step epsilon / 4).
        batch_size: inputs per batch (each batch runs n * batch_size PGD examples at once).
        num_projected: PCA projections kept for the first this many inputs.
        seed: seed of the EXP noise and of the PGD starts.
        verbose: show a progress bar.

    Returns:
        A `DiversityResult`.
    """
    x = as_unit_float(x)
    y = np.asarray(y).astype(np.int32)
    n_inputs = checks.check_positive_int(len(x), "the number of inputs N")
    num_samples = checks.check_positive_int(num_samples, "num_samples", minimum=2)
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    num_projected = checks.check_positive_int(num_projected, "num_projected", minimum=0)
    ball = as_threat(threat)
    epsilon = ball.epsilon
    settings = dict(num_inputs=n_inputs, num_samples=num_samples, epsilon=epsilon,
                    norm=ball.norm,
                    exp_steps=exp_steps, exp_mc_samples=exp_mc_samples,
                    entropy_weight=entropy_weight, pgd_steps=pgd_steps,
                    pgd_step_size=epsilon / 4, seed=seed)

    @tf.function(reduce_retracing=True)
    def both(xb, yb, sb):
        exp = exp_samples(classifier, xb, yb, ball, num_samples, steps=exp_steps,
                          mc_samples=exp_mc_samples, entropy_weight=entropy_weight, seed=sb)
        adv = pgd_samples(classifier, xb, yb, ball, num_samples, steps=pgd_steps,
                          seed=tf.random.experimental.stateless_fold_in(sb, 7))
        y_rep = tf.tile(yb, [num_samples])
        flat = tf.concat([[-1], tf.shape(xb)[1:]], axis=0)
        fooled = [tf.reduce_sum(tf.cast(misclassified(
            classifier(tf.reshape(s, flat), training=False), y_rep), tf.float32))
            for s in (exp, adv)]
        return exp, adv, fooled[0], fooled[1]

    exp_dist, pgd_dist, projections, ratios = [], [], [], []
    fooled = np.zeros(2)
    bar = keras.utils.Progbar(n_inputs, unit_name="input") if verbose else None
    for start in range(0, n_inputs, batch_size):
        xb = tf.constant(x[start:start + batch_size], tf.float32)
        yb = tf.constant(y[start:start + batch_size], tf.int32)
        exp, adv, f_exp, f_pgd = both(xb, yb, tf.constant([seed, start], tf.int32))
        exp = np.swapaxes(exp.numpy(), 0, 1)  # [B, n, ...]
        adv = np.swapaxes(adv.numpy(), 0, 1)
        fooled += [float(f_exp), float(f_pgd)]
        exp_dist.append(average_pairwise_distance(exp))
        pgd_dist.append(average_pairwise_distance(adv))
        for e, p in zip(exp, adv):
            if len(projections) >= num_projected:
                break
            proj, ratio = pca_project(np.concatenate([e, p]), 2)
            projections.append((proj[:num_samples], proj[num_samples:]))
            ratios.append(ratio)
        if bar is not None:
            bar.add(len(yb), values=[("exp_dist", float(exp_dist[-1].mean())),
                                     ("pgd_dist", float(pgd_dist[-1].mean()))])
    total = n_inputs * num_samples
    return DiversityResult(
        exp_distance=np.concatenate(exp_dist), pgd_distance=np.concatenate(pgd_dist),
        exp_fooling_rate=fooled[0] / total, pgd_fooling_rate=fooled[1] / total,
        projections=projections, explained_variance=ratios, settings=settings)


__all__ = ["DiversityResult", "average_pairwise_distance", "diversity_analysis", "exp_samples",
           "pca_project", "pgd_samples"]
