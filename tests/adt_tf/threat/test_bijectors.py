"""RadialTanh (adt_tf.threat.bijectors): onto the L2 ball, invertible, its log-Jacobian against a
finite-difference Jacobian, smooth at 0, the same in eager mode, tf.function and XLA, and the
density it implies integrating to 1 with the Monte Carlo entropy equal to the integral."""

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.threat.bijectors import RadialTanh
from tests.helpers import EXECUTION_REGIMES, in_regime


def finite_difference_log_det(f, u, h=1e-3):
    """log |det J| of f at u (float64 central differences with one Richardson step, error
    O(h^4), accurate also where tanh saturates): independent of autodiff and of the
    closed form."""
    dims = len(u)
    jac = np.zeros((dims, dims))

    def central(j, step):
        e = np.zeros(dims)
        e[j] = step
        return (f(u + e) - f(u - e)) / (2 * step)

    for j in range(dims):
        jac[:, j] = (4 * central(j, h / 2) - central(j, h)) / 3
    return np.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("dims", [1, 2, 3, 5])
@pytest.mark.parametrize("scale", [0.01, 0.3, 1.0, 2.0])
def test_log_det_matches_a_finite_difference_jacobian(dims, scale):
    rng = np.random.default_rng(dims)
    b = RadialTanh(0.7)
    f = lambda v: b.forward(tf.constant(v[None], tf.float64)).numpy()[0]  # noqa: E731
    for _ in range(3):
        u = scale * rng.normal(size=dims)
        got = float(b.forward_log_det_jacobian(tf.constant(u[None], tf.float64),
                                               event_ndims=1)[0])
        assert got == pytest.approx(finite_difference_log_det(f, u), abs=1e-6)


def test_log_det_in_the_saturated_range_matches_the_closed_form():
    """Where tanh saturates (r up to 9), finite differences lose their digits; there the
    stable evaluation is checked against the closed form written plainly in float64
    (1 - tanh^2 r is still representable there)."""
    b = RadialTanh(0.5)
    for r in (2.0, 5.0, 9.0):
        u = np.full((1, 4), r / 2.0)  # ||u|| = r
        expected = (np.log(0.5) + np.log(1 - np.tanh(r) ** 2)
                    + 3 * np.log(0.5 * np.tanh(r) / r))
        got = float(b.forward_log_det_jacobian(tf.constant(u), event_ndims=1)[0])
        assert got == pytest.approx(expected, rel=1e-9)


def test_forward_is_onto_the_ball_and_inverted():
    b = RadialTanh(0.5)
    u = tf.random.stateless_normal([64, 3072], seed=[1, 2]) * tf.linspace(0.0, 0.05, 64)[:, None]
    delta = b.forward(u)
    norms = tf.norm(delta, axis=-1).numpy()
    assert norms.max() < 0.5 and norms.min() >= 0
    np.testing.assert_allclose(tf.norm(delta, axis=-1), 0.5 * np.tanh(tf.norm(u, axis=-1)),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.inverse(delta), u, atol=2e-4)
    # the inverse log-Jacobian is minus the forward one (TFP derives it)
    np.testing.assert_allclose(b.inverse_log_det_jacobian(delta, event_ndims=1),
                               -b.forward_log_det_jacobian(u, event_ndims=1), rtol=1e-4)


def test_smooth_at_zero_and_finite_at_saturation():
    b = RadialTanh(0.5)
    for u0 in (tf.zeros([2, 6]), tf.fill([2, 6], 1e-4), tf.fill([2, 6], 20.0)):
        with tf.GradientTape() as tape:
            tape.watch(u0)
            total = tf.reduce_sum(b.forward(u0)) + tf.reduce_sum(
                b.forward_log_det_jacobian(u0, event_ndims=1))
        grad = tape.gradient(total, u0)
        assert np.all(np.isfinite(grad.numpy())) and np.isfinite(float(total))
    # at u = 0 the map is epsilon * u to first order: log det = D log epsilon
    assert float(b.forward_log_det_jacobian(tf.zeros([1, 6]), event_ndims=1)[0]) == (
        pytest.approx(6 * np.log(0.5), abs=1e-6))


@pytest.mark.parametrize("regime", EXECUTION_REGIMES)
def test_the_same_in_eager_mode_tf_function_and_xla(regime):
    b = RadialTanh(0.5)
    u = tf.random.stateless_normal([8, 48], seed=[3, 4]) * 0.4

    def both(v):
        return b.forward(v), b.forward_log_det_jacobian(v, event_ndims=1)

    eager = both(u)
    for a, g in zip(eager, in_regime(both, regime)(u), strict=True):
        np.testing.assert_allclose(g.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)


def test_density_integrates_to_one_and_monte_carlo_entropy_equals_the_integral():
    """D = 2: p(delta) = N(u; mu, sigma) / |det J(u)| at u = f^-1(delta) on a grid over the
    disc integrates to 1 (a wrong log-Jacobian would not), and the Monte Carlo entropy
    -mean log p over samples (computed from u, as ADT does) equals -integral p log p."""
    import tensorflow_probability as tfp

    eps = 0.5
    b = RadialTanh(eps)
    base = tfp.distributions.MultivariateNormalDiag(loc=tf.constant([0.3, -0.2], tf.float64),
                                                    scale_diag=tf.constant([0.5, 0.4],
                                                                           tf.float64))
    dist = tfp.distributions.TransformedDistribution(base, b)
    n = 801
    axis = np.linspace(-eps, eps, n)
    cell = (axis[1] - axis[0]) ** 2
    gx, gy = np.meshgrid(axis, axis)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    grid = grid[np.linalg.norm(grid, axis=1) < eps * (1 - 1e-9)]
    log_p = dist.log_prob(tf.constant(grid)).numpy()
    p = np.exp(log_p)
    assert np.sum(p) * cell == pytest.approx(1.0, abs=0.01)
    integral_entropy = -np.sum(p * log_p) * cell
    u = base.sample(200_000, seed=(5, 6))
    mc_entropy = -np.mean(base.log_prob(u).numpy()
                          - b.forward_log_det_jacobian(u, event_ndims=1).numpy())
    assert mc_entropy == pytest.approx(integral_entropy, abs=0.02)


def test_bad_radius():
    with pytest.raises(ValueError, match="radius must be a finite number > 0"):
        RadialTanh(0.0)
