import math

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.adt.distributions import ExplicitAdversarialDistribution
from adt_tf.threat import L2Ball

EPS = 8 / 255


def numpy_neg_log_prob(u, mu, v, eps):
    """Paper Eq. 11 in float64, independent of the module: per-dimension mean of -log p."""
    u, mu, v = (np.asarray(a, np.float64) for a in (u, mu, v))
    sigma = np.logaddexp(0.0, v)  # softplus
    r = (u - mu) / sigma
    # log(1 - tanh^2 u) = log sech^2 u = -2 log cosh u = -2 (|u| + log(1 + e^{-2|u|}) - log 2)
    log_sech2 = -2.0 * (np.abs(u) + np.log1p(np.exp(-2.0 * np.abs(u))) - math.log(2.0))
    per_dim = 0.5 * r**2 + 0.5 * math.log(2 * math.pi) + np.log(sigma) + log_sech2 + math.log(eps)
    return per_dim.reshape(per_dim.shape[0], -1).mean(axis=1)


@pytest.mark.parametrize("scale", [0.5, 3.0, 25.0])
def test_neg_log_prob_matches_numpy_eq11(scale):
    rng = np.random.default_rng(1)
    shape = (3, 4, 4, 2)
    mu = rng.normal(0, scale, shape).astype("float32")
    v = rng.normal(0, 1, shape).astype("float32")
    u = (mu + rng.normal(0, 1, shape) * np.logaddexp(0, v)).astype("float32")
    if scale > 20:
        assert np.abs(u).max() >= 20  # the saturated regime is really exercised
    dist = ExplicitAdversarialDistribution(mu, v, EPS)
    got = dist.neg_log_prob(u).numpy()
    want = numpy_neg_log_prob(u, mu, v, EPS)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_sample_neg_log_prob_is_that_of_its_pre_tanh():
    mu = tf.random.stateless_normal([2, 3, 3, 1], seed=[0, 1])
    v = tf.zeros_like(mu)
    dist = ExplicitAdversarialDistribution(mu, v, EPS)
    s = dist.sample(4, seed=tf.constant([3, 4]))
    assert s.delta.shape == (4, 2, 3, 3, 1) and s.neg_log_prob.shape == (4, 2)
    np.testing.assert_allclose(s.delta, EPS * np.tanh(s.pre_tanh), atol=1e-7)
    want = np.stack([numpy_neg_log_prob(s.pre_tanh[i], mu, v, EPS) for i in range(4)])
    np.testing.assert_allclose(s.neg_log_prob, want, rtol=1e-4, atol=1e-4)


def test_samples_in_ball_and_gradients_finite_everywhere():
    # mu spans the saturated regime of tanh; v spans tiny and huge scales.
    mu = tf.constant(np.linspace(-60, 60, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3), tf.float32)
    v = tf.constant(np.linspace(-30, 30, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([mu, v])
        s = ExplicitAdversarialDistribution(mu, v, EPS).sample(5, seed=tf.constant([7, 7]))
        objective = tf.reduce_sum(s.delta) + tf.reduce_mean(s.neg_log_prob)
    g_mu, g_v = tape.gradient(objective, [mu, v])
    assert float(tf.reduce_max(tf.abs(s.delta))) <= EPS + 1e-7
    for g in (g_mu, g_v):
        assert np.all(np.isfinite(g.numpy()))
    assert float(tf.reduce_sum(tf.abs(g_mu))) > 0 and float(tf.reduce_sum(tf.abs(g_v))) > 0


def test_eager_and_function_agree_and_xla_is_reproducible():
    mu = tf.random.stateless_normal([2, 4, 4, 3], seed=[1, 1])
    v = tf.random.stateless_normal([2, 4, 4, 3], seed=[1, 2])
    seed = tf.constant([5, 6])

    def f(mu, v):
        s = ExplicitAdversarialDistribution(mu, v, EPS).sample(3, seed)
        return s.delta, s.pre_tanh, s.neg_log_prob

    eager = f(mu, v)
    for a, b in zip(eager, tf.function(f)(mu, v)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # XLA's stateless generators draw other numbers than the CPU kernels for the same seed
    # (a known TensorFlow behaviour), so under XLA: the same seed twice gives the same
    # samples, and each sample is consistent with Eq. 11.
    xla = tf.function(f, jit_compile=True)
    first, second = xla(mu, v), xla(mu, v)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    delta, u, nlp = (t.numpy() for t in first)
    np.testing.assert_allclose(delta, EPS * np.tanh(u), atol=1e-7)
    want = np.stack([numpy_neg_log_prob(u[i], mu, v, EPS) for i in range(3)])
    np.testing.assert_allclose(nlp, want, rtol=1e-4, atol=1e-4)


def test_bad_epsilon_is_rejected():
    with pytest.raises(ValueError, match="did you mean 8/255"):
        ExplicitAdversarialDistribution(tf.zeros([1, 2]), tf.zeros([1, 2]), 8)


# ---------------------------------------------------------------------- L2 (RadialTanh)
def numpy_neg_log_prob_l2(u, mu, v, eps):
    """The L2 distribution's per-dimension -log p in float64, from the closed form:
    -log N(u) + log h'(r) + (D - 1) log(h(r) / r), h = eps tanh, r = ||u|| per example."""
    u, mu, v = (np.asarray(a, np.float64).reshape(len(a), -1) for a in (u, mu, v))
    sigma = np.logaddexp(0.0, v)
    dims = u.shape[1]
    log_normal = np.sum(-0.5 * ((u - mu) / sigma) ** 2 - 0.5 * math.log(2 * math.pi)
                        - np.log(sigma), axis=1)
    r = np.linalg.norm(u, axis=1)
    log_det = (math.log(eps) + np.log(1 - np.tanh(r) ** 2)
               + (dims - 1) * np.log(eps * np.tanh(r) / r))
    return (-log_normal + log_det) / dims


@pytest.mark.parametrize("scale", [0.005, 0.05, 0.3])
def test_l2_neg_log_prob_matches_the_closed_form(scale):
    rng = np.random.default_rng(2)
    shape = (3, 4, 4, 2)
    mu = rng.normal(0, scale, shape).astype("float32")
    v = rng.normal(-3, 0.5, shape).astype("float32")
    u = (mu + rng.normal(0, 1, shape) * np.logaddexp(0, v)).astype("float32")
    dist = ExplicitAdversarialDistribution(mu, v, L2Ball(0.5))
    np.testing.assert_allclose(dist.neg_log_prob(u).numpy(),
                               numpy_neg_log_prob_l2(u, mu, v, 0.5), rtol=1e-4, atol=1e-4)


def test_l2_samples_lie_in_the_ball_with_gradients_to_mu_and_v():
    mu = tf.Variable(tf.random.stateless_normal([4, 8, 8, 3], seed=[1, 1]) * 0.2)
    v = tf.Variable(tf.fill([4, 8, 8, 3], -2.0))
    with tf.GradientTape() as tape:
        dist = ExplicitAdversarialDistribution(mu, v, L2Ball(0.5))
        sample = dist.sample(6, seed=tf.constant([2, 3]))
        objective = tf.reduce_mean(sample.delta) + tf.reduce_mean(sample.neg_log_prob)
    assert sample.delta.shape == (6, 4, 8, 8, 3) and sample.neg_log_prob.shape == (6, 4)
    norms = tf.norm(tf.reshape(sample.delta, [6, 4, -1]), axis=-1).numpy()
    assert norms.max() < 0.5
    grads = tape.gradient(objective, [mu, v])
    assert all(np.all(np.isfinite(g.numpy())) and np.abs(g.numpy()).max() > 0 for g in grads)
