"""Curvature of the loss in input space: the dominant eigenvalue of the input Hessian.

The ADT paper (Fig. 2f) reports, per training method, the mean and standard deviation over
1,000 CIFAR-10 test inputs of the dominant eigenvalue of the Hessian of the cross-entropy
with respect to the input: a smaller value means a flatter loss surface around the data.

Example:
    >>> eig = dominant_hessian_eigenvalue(model, x, y, iterations=20)   # [B]
    >>> result = curvature_analysis(model, x_test[:1000], y_test[:1000])
    >>> result.mean, result.std

Reference:
    Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep Learning",
    NeurIPS 2020, Fig. 2(f).
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


def _per_example_ce(logits, y):
    # The dtype of the logits is kept (float64 models give float64 Hessians in the tests).
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def hessian_vector_product(classifier, x, y, v) -> tf.Tensor:
    """Per-example Hessian-vector products H_b v_b of the cross-entropy w.r.t. the input.

    Args:
        classifier: logits model; called with training=False, so the examples of a batch do
            not interact (inference-mode BatchNorm) and H of the summed loss is block-diagonal.
        x: inputs [B, ...]; y: labels [B]; v: tangents shaped like x.

    Mathematical details:
        Forward over backward: a `tf.GradientTape` gives g(x) = grad_x sum_b CE_b(x_b),
        and a `tf.autodiff.ForwardAccumulator` around it pushes the tangent v through that
        computation, so its JVP is d/dt g(x + t v) = H v, the per-example blocks H_b v_b
        (one pass, no Hessian is formed).

    Returns:
        H v, shaped like x.
    """
    x = tf.convert_to_tensor(x)
    with tf.autodiff.ForwardAccumulator(primals=x, tangents=tf.cast(v, x.dtype)) as acc:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            loss = tf.reduce_sum(_per_example_ce(classifier(x, training=False), y))
        grad = tape.gradient(loss, x)
    hv = acc.jvp(grad, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return hv


def _batch_dot(a, b):
    return tf.reduce_sum(tf.reshape(a * b, [tf.shape(a)[0], -1]), axis=1)


def dominant_hessian_eigenvalue(classifier, x, y, *, iterations: int = 20, seed=0
                                ) -> tf.Tensor:
    """The eigenvalue of largest magnitude of each example's input Hessian, by power iteration.

    Args:
        classifier: logits model (inference mode).
        x: inputs [B, ...]; y: labels [B].
        iterations: power iterations (Hessian-vector products) per example.
        seed: int or stateless seed of the random start vectors.

    Mathematical details:
        v_0 ~ N(0, I) normalised per example; v_{t+1} = H v_t / ||H v_t||. The estimate is
        the Rayleigh quotient v_T^T H v_T (v_T of unit norm), which keeps the eigenvalue's
        sign. Power iteration converges to the eigenvalue of largest |lambda| at the rate
        |lambda_2 / lambda_1|^t. All examples iterate together: one batched HVP per step,
        one Rayleigh quotient per example.

    Returns:
        [B] eigenvalue estimates (float32).
    """
    iterations = checks.check_positive_int(iterations, "iterations")
    x = tf.convert_to_tensor(x)
    v = tf.random.stateless_normal(tf.shape(x), as_seed(seed), dtype=x.dtype)
    shape = tf.concat([[-1], tf.ones(tf.rank(x) - 1, tf.int32)], axis=0)

    def normalise(u):
        norm = tf.sqrt(_batch_dot(u, u))
        # A zero H v (a locally linear model) keeps the previous vector: eigenvalue 0.
        return u / tf.reshape(tf.maximum(norm, tf.cast(1e-30, u.dtype)), shape), norm > 0

    v, _ = normalise(v)

    def body(t, v):
        hv = hessian_vector_product(classifier, x, y, v)
        new_v, nonzero = normalise(hv)
        return t + 1, tf.where(tf.reshape(nonzero, shape), new_v, v)

    _, v = tf.while_loop(lambda t, v: t < iterations, body, (tf.constant(1), v),
                         maximum_iterations=iterations)
    rayleigh = _batch_dot(v, hessian_vector_product(classifier, x, y, v))
    return tf.cast(rayleigh, tf.float32)


@dataclasses.dataclass
class CurvatureResult:
    """Dominant input-Hessian eigenvalues of one model.

    Attributes:
        eigenvalues: [N] one per input.
        settings: the analysis's settings.
    """

    eigenvalues: np.ndarray
    settings: dict[str, Any]

    @property
    def mean(self) -> float:
        return float(np.mean(self.eigenvalues))

    @property
    def std(self) -> float:
        return float(np.std(self.eigenvalues))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std,
                "mean_abs": float(np.mean(np.abs(self.eigenvalues))),
                "eigenvalues": self.eigenvalues.tolist(), "settings": self.settings}


def curvature_analysis(classifier: keras.Model, x, y, *, iterations: int = 20,
                       batch_size: int = 64, seed: int = 0, verbose: bool = True
                       ) -> CurvatureResult:
    """Dominant input-Hessian eigenvalue of each of N inputs, batch by batch.

    Args:
        classifier: logits model (inference mode).
        x: N inputs in [0, 1] (float or uint8); y: labels.
        iterations: power iterations per input.
        batch_size: inputs per batched power iteration.
        seed: seed of the start vectors (batch i uses [seed, i]).
        verbose: show a progress bar.

    Returns:
        A `CurvatureResult`.
    """
    x = as_unit_float(x)
    y = np.asarray(y).astype(np.int32)
    n = checks.check_positive_int(len(x), "the number of inputs N")
    iterations = checks.check_positive_int(iterations, "iterations")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    run = tf.function(lambda xb, yb, sb: dominant_hessian_eigenvalue(
        classifier, xb, yb, iterations=iterations, seed=sb), reduce_retracing=True)
    values = []
    bar = keras.utils.Progbar(n, unit_name="input") if verbose else None
    for start in range(0, n, batch_size):
        xb = tf.constant(x[start:start + batch_size], tf.float32)
        yb = tf.constant(y[start:start + batch_size], tf.int32)
        values.append(run(xb, yb, tf.constant([seed, start], tf.int32)).numpy())
        if bar is not None:
            bar.add(len(yb), values=[("eigenvalue", float(values[-1].mean()))])
    settings = dict(num_inputs=n, iterations=iterations, seed=seed, loss="cross-entropy",
                    method="power iteration, forward-over-backward Hessian-vector products")
    return CurvatureResult(eigenvalues=np.concatenate(values).astype(np.float64),
                           settings=settings)


__all__ = ["CurvatureResult", "curvature_analysis", "dominant_hessian_eigenvalue",
           "hessian_vector_product"]
