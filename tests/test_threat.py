import numpy as np
import pytest
import tensorflow as tf

from adt_tf.threat import LinfBall


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
