"""`adt_tf.evaluation.sanity`: the gradient-masking checks."""


import keras
import numpy as np
import tensorflow as tf

from adt_tf.evaluation import sanity
from tests.adt_tf.evaluation.helpers import EPS, Noise, wrap

#: The images of the `trained` fixture (conftest.py) these tests attack.
TRAINED_EXAMPLES = 48


def test_healthy_model_passes_the_model_checks(trained):
    model, x, y = trained
    warnings = sanity.check_logits(model(x).numpy())
    warnings += sanity.check_gradients(model, x, y, EPS)[0] + sanity.check_randomness(model, x)[0]
    assert warnings == []
    sweep = sanity.epsilon_sweep(model, x, y, EPS, steps=5)
    assert sanity.check_epsilon_sweep(sweep) == []
    assert sweep["accuracy"][-1] < sweep["accuracy"][0]
    unbounded = sanity.unbounded_accuracy(model, x, y)
    assert unbounded["accuracy"] <= sanity.UNBOUNDED_THRESHOLD
    assert sanity.check_unbounded(unbounded) == []


class Quantised:
    """A classifier behind a non-differentiable input quantisation (64 levels, finer than
    epsilon): its input gradient is zero everywhere, yet small perturbations change it."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, training=False):
        return self.model(tf.stop_gradient(tf.round(x * 64.0) / 64.0), training=False)


def test_masking_by_quantisation_is_flagged_by_the_gradient_and_unbounded_checks(trained):
    model, x, y = trained
    masked = Quantised(model)
    warnings, stats = sanity.check_gradients(masked, x, y, EPS)
    n = stats["num_inputs"]
    assert n == int(np.sum(np.argmax(masked(x), -1) == y)) > 0
    assert stats["zero_inputs"] == n and f"on {n} of {n} clean-correct" in warnings[0]
    unbounded = sanity.unbounded_accuracy(masked, x, y)
    assert unbounded["accuracy"] > 0.3  # it never moves from the clean inputs
    assert "epsilon = 1" in sanity.check_unbounded(unbounded)[0]


def test_one_input_with_a_zero_gradient_is_enough_to_warn(trained):
    """AutoAttack's rule (any input), not a share."""
    model, x, y = trained
    keep = np.argmax(model(x), -1) == y
    x, y = x[keep][:20], y[keep][:20]

    def partly_masked(images, training=False):
        logits = model(images, training=False)
        first = tf.one_hot(tf.zeros([1], tf.int32), logits.shape[-1]) * 0.0
        frozen = tf.stop_gradient(logits[:1]) + first
        return tf.concat([frozen, logits[1:]], axis=0)

    warnings, stats = sanity.check_gradients(partly_masked, x, y, EPS)
    assert stats["zero_inputs"] == 1 and f"on 1 of {len(y)} clean-correct" in warnings[0]


def test_probabilities_and_randomness_are_flagged(trained):
    model, x, _ = trained
    probs = wrap(model, after=keras.layers.Softmax())
    assert "probabilities" in sanity.check_logits(probs(x).numpy())[0]
    noisy = wrap(model, before=Noise())
    assert "randomised" in sanity.check_randomness(noisy, x)[0][0]


def test_epsilon_sweep_check():
    flat = {"epsilons": [1 / 255, 2 / 255, 4 / 255], "accuracy": [0.5, 0.5, 0.5],
            "num_inputs": 100}
    rising = dict(flat, accuracy=[0.3, 0.5, 0.2])
    falling = dict(flat, accuracy=[0.5, 0.3, 0.1])
    assert "does not fall" in sanity.check_epsilon_sweep(flat)[0]
    assert "rises" in sanity.check_epsilon_sweep(rising)[0]
    assert sanity.check_epsilon_sweep(falling) == []
