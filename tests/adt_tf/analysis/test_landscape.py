"""`adt_tf.analysis.landscape`: the loss grid."""


import numpy as np
import tensorflow as tf

from adt_tf.analysis import (
    loss_grid,
)
from adt_tf.numerics.losses import per_example_ce
from tests.adt_tf.analysis.helpers import EPS
from tests.helpers import make_tiny_images, tiny_classifier


def test_loss_grid_origin_is_the_clean_loss_and_axes_are_sign_directions():
    x, y = make_tiny_images(2, 16)
    model = tiny_classifier()
    result = loss_grid(model, x, y, EPS, grid_size=5, span=1.0, seed=4)
    clean = per_example_ce(model(x, training=False), y).numpy()
    assert result.losses.shape == (2, 5, 5)
    np.testing.assert_allclose(result.losses[:, 2, 2], clean, rtol=1e-5)
    np.testing.assert_allclose(result.clean_losses, clean, rtol=1e-5)
    # Corner (+1, -1): x + eps * sign(grad) - eps * r, clipped.
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        loss = per_example_ce(model(xt, training=False), y)
    grad = tape.gradient(loss, xt).numpy()
    from adt_tf.analysis.landscape import landscape_directions
    _, d_rand = landscape_directions(model, x, y, EPS, seed=4)
    np.testing.assert_allclose(np.abs(d_rand.numpy()), EPS, rtol=1e-6)
    corner = np.clip(x + EPS * np.sign(grad) - d_rand.numpy(), 0, 1)
    expected = per_example_ce(model(corner, training=False), y).numpy()
    np.testing.assert_allclose(result.losses[:, 4, 0], expected, rtol=1e-4)
