"""The Sinkhorn distance against a direct NumPy Sinkhorn computation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.numerics.optimal_transport import cosine_cost_matrix, sinkhorn_distance, sinkhorn_plan


def numpy_cosine_cost(x, y):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    return np.maximum(0.0, 1.0 - xn @ yn.T)


def numpy_sinkhorn(cost, reg, iterations=5000):
    """Cuturi's scaling iterations u = a / (K v), v = b / (K^T u), K = exp(-C / reg)."""
    m, n = cost.shape
    a, b = np.full(m, 1.0 / m), np.full(n, 1.0 / n)
    kernel = np.exp(-cost / reg)
    v = np.ones(n)
    for _ in range(iterations):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 4)), rng.normal(size=(7, 4))


def test_cost_matrix_is_the_clipped_cosine_distance(logits):
    x, y = logits
    np.testing.assert_allclose(cosine_cost_matrix(x, y), numpy_cosine_cost(x, y), atol=1e-6)
    np.testing.assert_allclose(tf.linalg.diag_part(cosine_cost_matrix(x, x)), 0.0, atol=1e-6)


@pytest.mark.parametrize("reg", [0.5, 0.1, 0.05])
def test_sinkhorn_distance_matches_numpy(logits, reg):
    x, y = logits
    cost = numpy_cosine_cost(x, y)
    plan = numpy_sinkhorn(cost, reg)
    expected = float((plan * cost).sum())
    got = tf.function(sinkhorn_distance)(x, y, reg=reg, iterations=500, tolerance=0.0)
    np.testing.assert_allclose(float(got), expected, rtol=1e-4, atol=1e-6)
    got_plan = tf.function(sinkhorn_plan)(cost, reg=reg, iterations=500)
    np.testing.assert_allclose(got_plan, plan, atol=1e-5)


def test_plan_has_uniform_marginals_at_the_default_small_regularisation(logits):
    # reg = 0.01: exp(-C / reg) underflows in float32; the log-domain updates do not.
    x, y = logits
    plan = tf.function(sinkhorn_plan)(cosine_cost_matrix(x, y), reg=0.01, iterations=500)
    plan = plan.numpy()
    assert np.all(np.isfinite(plan))
    np.testing.assert_allclose(plan.sum(0), 1 / 7, rtol=1e-4)
    np.testing.assert_allclose(plan.sum(1), 1 / 5, rtol=1e-2)


def test_distance_is_zero_between_a_batch_and_itself_and_differentiable(logits):
    x, y = (tf.constant(v, tf.float32) for v in logits)
    assert float(sinkhorn_distance(x, x, reg=0.001, iterations=200, tolerance=0.0)) < 1e-3
    with tf.GradientTape() as tape:
        tape.watch(y)
        d = sinkhorn_distance(x, y)
    grad = tape.gradient(d, y)
    assert np.all(np.isfinite(grad.numpy())) and float(tf.reduce_max(tf.abs(grad))) > 0


def test_early_stopping_and_bad_arguments(logits):
    x, y = logits
    cost = cosine_cost_matrix(x, y)
    loose = sinkhorn_plan(cost, reg=0.05, iterations=1000, tolerance=1e9)  # one iteration
    one = sinkhorn_plan(cost, reg=0.05, iterations=1)
    np.testing.assert_allclose(loose, one)
    with pytest.raises(ValueError, match="-0.1"):
        sinkhorn_plan(cost, reg=-0.1)
    with pytest.raises(ValueError, match="0"):
        sinkhorn_plan(cost, iterations=0)
