import keras
import numpy as np
import tensorflow as tf

from adt_tf.distributions import ExplicitAdversarialDistribution
from adt_tf.inner_maximization import adam_ascent, explicit_inner_maximization, sample_inputs
from tests.helpers import make_tiny_images, tiny_classifier

EPS = 8 / 255
LAMBDA = 0.01


def objective(classifier, x, y, loc, raw, k=64, seed=(9, 9)):
    """A low-variance Monte Carlo estimate of E[CE] + lambda * H at (mu, v)."""
    dist = ExplicitAdversarialDistribution(loc, raw, EPS)
    x_adv, nlp = sample_inputs(x, dist, k, tf.constant(seed))
    logits = classifier(x_adv, training=False)
    ce = keras.losses.sparse_categorical_crossentropy(np.tile(y, k), logits, from_logits=True)
    return float(tf.reduce_mean(ce) + LAMBDA * tf.reduce_mean(nlp))


def test_inner_loop_raises_objective_over_initialisation():
    x, y = make_tiny_images(32)
    classifier = tiny_classifier()
    result = explicit_inner_maximization(
        classifier, x, y, epsilon=EPS, entropy_weight=LAMBDA, steps=7, samples=5, lr=0.3,
        beta1=0.0, beta2=0.0, seed=tf.constant([1, 2]))
    zeros = tf.zeros_like(x)
    before = objective(classifier, x, y, zeros, zeros)
    after = objective(classifier, x, y, result.loc, result.raw_scale)
    assert after > before + 1e-3, (before, after)
    assert np.isfinite(float(result.objective)) and np.isfinite(float(result.entropy))


def test_adam_with_zero_betas_is_a_sign_step():
    p = tf.zeros([5])
    g = tf.constant([3.0, -0.2, 1e-3, -40.0, 0.5])
    (new,), _, _ = adam_ascent([p], [g], [p], [p], 1, 0.3, 0.0, 0.0)
    np.testing.assert_allclose(new, 0.3 * np.sign(g), rtol=1e-4)


def test_adam_matches_keras_adam_when_descending():
    # A general-beta step must equal Keras's Adam applied to the negated gradient.
    var = keras.Variable(np.array([0.5, -1.0, 2.0], np.float32))
    opt = keras.optimizers.Adam(0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    params, first, second = [tf.constant(var.numpy())], [tf.zeros(3)], [tf.zeros(3)]
    for step in range(1, 4):
        g = tf.constant([0.3, -0.1, 0.05]) * step
        opt.apply_gradients([(-g, var)])
        params, first, second = adam_ascent(params, [g], first, second, step, 0.1, 0.9, 0.999)
    np.testing.assert_allclose(params[0], var.numpy(), rtol=1e-4, atol=1e-6)
