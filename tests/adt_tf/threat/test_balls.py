
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.threat import L2Ball, LinfBall
from tests.helpers import EXECUTION_REGIMES, in_regime


def test_project_stays_in_ball_and_pixel_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 5, 5, 3)).astype("float32")
    far = x + rng.normal(0, 1, x.shape).astype("float32")
    ball = LinfBall(8 / 255)
    p = ball.project(far, x).numpy()
    assert np.abs(p - x).max() <= 8 / 255 + 1e-6
    assert p.min() >= 0 and p.max() <= 1
    # points already inside are unchanged
    inside = np.clip(x + 0.5 * (8 / 255) * np.sign(rng.normal(size=x.shape)), 0, 1)
    np.testing.assert_allclose(ball.project(inside.astype("float32"), x), inside, atol=1e-7)


def test_random_start_is_seeded_and_inside():
    x = tf.fill([4, 6, 6, 1], 0.5)
    ball = LinfBall(0.1)
    a = ball.random_start(x, tf.constant([1, 2]))
    b = ball.random_start(x, tf.constant([1, 2]))
    c = ball.random_start(x, tf.constant([1, 3]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert bool(ball.contains(a, x))
    assert float(tf.reduce_max(tf.abs(a - x))) > 0.05  # spread over the ball, not a point


def test_step_is_signed():
    x = tf.zeros([1, 3])
    g = tf.constant([[-2.0, 0.0, 0.5]])
    np.testing.assert_allclose(LinfBall(0.1).step(x, g, 0.01), [[-0.01, 0.0, 0.01]])


@pytest.mark.parametrize("eps,match", [(8.0, "did you mean 8/255"), (0.0, r"\(0, 1\]"),
                                       (-0.1, r"\(0, 1\]"), (float("nan"), r"\(0, 1\]")])
def test_bad_epsilon(eps, match):
    with pytest.raises(ValueError, match=match):
        LinfBall(eps)


# ---------------------------------------------------------------------- L2 ball
def dykstra_projection(p, x, eps, low=0.0, high=1.0, iterations=3000):
    """Reference: Dykstra's alternating projections (float64), which converge to the exact
    Euclidean projection onto the intersection of the ball and the box; an algorithm
    independent of the bisection on the KKT multiplier that L2Ball uses."""
    z = p.astype(np.float64).reshape(len(p), -1)
    centre = x.astype(np.float64).reshape(len(x), -1)
    corr_ball, corr_box = np.zeros_like(z), np.zeros_like(z)
    for _ in range(iterations):
        y = z + corr_ball
        d = y - centre
        norm = np.linalg.norm(d, axis=1, keepdims=True)
        ball = centre + d * np.minimum(1.0, eps / np.maximum(norm, 1e-300))
        corr_ball = y - ball
        y = ball + corr_box
        z = np.clip(y, low, high)
        corr_box = y - z
    return z.reshape(p.shape)


def l2_cases(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (6, 4, 4, 2)).astype("float32")
    x[0] = 0.98  # near the box's corner: the box is active together with the ball
    x[1, :2] = 0.0
    scales = np.array([3.0, 3.0, 0.05, 1.0, 0.5, 2.0], np.float32)[:, None, None, None]
    p = x + scales * rng.normal(size=x.shape).astype("float32")
    return x, p


def test_l2_projection_is_the_exact_projection_onto_ball_and_box():

    x, p = l2_cases()
    eps = 0.5
    got = L2Ball(eps).project(tf.constant(p), tf.constant(x)).numpy()
    reference = dykstra_projection(p, x, eps)
    np.testing.assert_allclose(got, reference, atol=2e-4)
    norms = np.linalg.norm((got - x).reshape(len(x), -1), axis=1)
    assert norms.max() <= eps * (1 + 1e-6) and got.min() >= 0 and got.max() <= 1
    # Optimality (the variational inequality of a projection onto a convex set): for every
    # feasible z, <p - z*, z - z*> <= 0. Checked on random feasible points.
    rng = np.random.default_rng(1)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float64)  # noqa: E731
    for _ in range(200):
        z = L2Ball(eps).scale_then_clip(tf.constant(
            x + rng.normal(0, 0.3, x.shape).astype("float32")), tf.constant(x)).numpy()
        inner = np.sum((flat(p) - flat(got)) * (flat(z) - flat(got)), axis=1)
        assert inner.max() <= 1e-4
    # Already feasible points are unchanged; the exact projection is never farther from p
    # than AutoAttack's scale-then-clip point.
    inside = L2Ball(eps).scale_then_clip(tf.constant(p), tf.constant(x)).numpy()
    np.testing.assert_allclose(L2Ball(eps).project(tf.constant(inside), tf.constant(x)),
                               inside, atol=1e-6)
    dist = lambda a: np.linalg.norm(flat(a) - flat(p), axis=1)  # noqa: E731
    assert np.all(dist(got) <= dist(inside) + 1e-5)
    assert np.any(dist(got) < dist(inside) - 1e-3)  # and strictly closer where the box binds


@pytest.mark.parametrize("regime", EXECUTION_REGIMES)
def test_l2_projection_runs_under_tf_function_and_xla(regime):

    x, p = l2_cases(2)
    ball = L2Ball(0.5)
    eager = ball.project(tf.constant(p), tf.constant(x)).numpy()
    got = in_regime(ball.project, regime)(tf.constant(p), tf.constant(x))
    np.testing.assert_allclose(got.numpy(), eager, atol=1e-6)


def test_l2_random_start_is_uniform_in_the_ball_and_seeded():

    ball = L2Ball(0.2)
    # D = 2 (shape [N, 1, 2, 1]), away from the box's edges: the radius of a uniform point
    # of a disc has P(r <= s * eps) = s^2, so (r / eps)^2 is uniform on [0, 1].
    x = tf.fill([4000, 1, 2, 1], 0.5)
    start = ball.random_start(x, tf.constant([3, 4])).numpy()
    d = (start - 0.5).reshape(len(start), -1)
    r = np.linalg.norm(d, axis=1)
    assert r.max() <= 0.2 * (1 + 1e-6)
    u = (r / 0.2) ** 2
    assert abs(u.mean() - 0.5) < 0.02 and abs(np.mean(u < 0.25) - 0.25) < 0.025
    assert np.abs(d.mean(axis=0)).max() < 0.01  # isotropic: no preferred direction
    again = ball.random_start(x, tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(start, again)
    # on images, every start lies in the ball and the pixel range
    images = tf.constant(l2_cases()[0])
    assert bool(L2Ball(0.5).contains(L2Ball(0.5).random_start(images, tf.constant([1, 1])),
                                     images))


def test_l2_step_is_the_normalised_gradient():

    x = tf.zeros([2, 3])
    g = tf.constant([[3.0, 0.0, 4.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(L2Ball(1.0).step(x, g, 0.5), [[0.3, 0.0, 0.4], [0, 0, 0]],
                               atol=1e-7)


def test_make_threat_and_radii():
    from adt_tf.threat import make_threat

    assert isinstance(make_threat("l2", 0.5), L2Ball)
    assert isinstance(make_threat("linf", 8 / 255), LinfBall)
    assert make_threat("l2", 2.0).epsilon == 2.0  # L2 radii above 1 are usual
    assert make_threat("l2", 0.5).get_config()["norm"] == "l2"
    with pytest.raises(ValueError, match="Unknown norm 'l1'; known: l2, linf"):
        make_threat("l1", 0.5)
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        L2Ball(0.0)




def test_each_ball_maps_onto_itself():
    # The ball gives the map ADT's distributions push their Gaussian through: epsilon * tanh
    # per coordinate for L-infinity, epsilon * tanh(||u||) u / ||u|| per example for L2
    # (independent closed forms), with any other radius on request.
    u = tf.random.stateless_normal([3, 4, 4, 2], seed=[4, 2]) * 3.0
    np.testing.assert_allclose(LinfBall(8 / 255).onto(u), 8 / 255 * np.tanh(u.numpy()),
                               rtol=1e-6)
    np.testing.assert_allclose(LinfBall(8 / 255).onto(u, 1.0), np.tanh(u.numpy()), rtol=1e-6)
    flat = u.numpy().reshape(3, -1)
    r = np.linalg.norm(flat, axis=1, keepdims=True)
    for radius, ball in ((0.5, L2Ball(0.5)), (1.0, L2Ball(0.5))):
        mapped = ball.onto(u, None if ball.epsilon == radius else radius).numpy()
        np.testing.assert_allclose(mapped.reshape(3, -1), radius * np.tanh(r) * flat / r,
                                   rtol=1e-5)
    assert LinfBall(0.1).bijector().forward(tf.constant([50.0])).numpy() == pytest.approx(0.1)
