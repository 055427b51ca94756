"""`adt_tf.analysis.curvature`: the dominant Hessian eigenvalue by power iteration."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.analysis import (
    curvature_analysis,
    dominant_hessian_eigenvalue,
    hessian_vector_product,
)
from tests.adt_tf.analysis.helpers import explicit_hessian, smooth_model
from tests.helpers import make_tiny_images, tiny_classifier


def test_power_iteration_matches_eigvalsh_of_the_explicit_hessian():
    model = smooth_model()
    x = np.random.default_rng(0).uniform(size=(3, 4, 4, 1)).astype(np.float32)
    y = np.array([0, 1, 2], np.int32)
    hessians = [explicit_hessian(model, x[b], y[b]) for b in range(3)]
    v = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    hv = hessian_vector_product(model, tf.constant(x), tf.constant(y), tf.constant(v)).numpy()
    for b in range(3):  # the batched HVP gives each example its own H_b v_b
        np.testing.assert_allclose(hv[b].ravel(), hessians[b] @ v[b].ravel(), rtol=1e-4,
                                   atol=1e-6)
    eig = tf.function(lambda a, b: dominant_hessian_eigenvalue(model, a, b, iterations=60))(
        tf.constant(x), tf.constant(y)).numpy()
    for b in range(3):
        w = np.linalg.eigvalsh((hessians[b] + hessians[b].T) / 2)
        assert abs(w).max() > 1e-3  # non-trivial
        assert eig[b] == pytest.approx(w[np.argmax(np.abs(w))], rel=1e-3)


def test_power_iteration_keeps_the_sign_of_a_negative_dominant_eigenvalue():
    # Logits [-50, q(x)] with q = -sum(x^2) and label 0: CE = 50 + log(e^-50 + e^q), which
    # is 50 + q(x) up to e^-50, so the Hessian is -2 I and the dominant eigenvalue is -2.
    inputs = keras.Input((2, 2, 1))
    q = keras.layers.Lambda(lambda t: -tf.reduce_sum(tf.square(t), axis=[1, 2, 3])[:, None])(
        inputs)
    logits = keras.layers.Lambda(lambda t: tf.concat([tf.fill(tf.shape(t), -50.0), t], 1))(q)
    model = keras.Model(inputs, logits)
    x = tf.constant(np.full((2, 2, 2, 1), 0.1, np.float32))
    eig = dominant_hessian_eigenvalue(model, x, tf.constant([0, 0]), iterations=3).numpy()
    np.testing.assert_allclose(eig, -2.0, rtol=1e-4)


def test_curvature_analysis_batches_and_json():
    x, y = make_tiny_images(4, 16)
    result = curvature_analysis(tiny_classifier(), x, y, iterations=3, batch_size=2,
                                verbose=False)
    assert result.eigenvalues.shape == (4,) and np.all(np.isfinite(result.eigenvalues))
    assert json.loads(json.dumps(result.to_json()))["mean"] == pytest.approx(result.mean)
