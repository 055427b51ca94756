"""The losses of the training objectives against NumPy, and their distributed reduction."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.numerics.losses import (
    batch_mean,
    check_outer_loss,
    kl_divergence,
    logit_pairing_penalty,
    smoothed_cross_entropy,
    trades_loss,
)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def logits():
    rng = np.random.default_rng(1)
    return rng.normal(size=(6, 5)).astype("float32"), rng.normal(size=(6, 5)).astype("float32")


def test_kl_divergence_matches_numpy_and_is_asymmetric(logits):
    a, b = logits
    p, q = softmax(a), softmax(b)
    expected = (p * np.log(p / q)).sum(-1)
    np.testing.assert_allclose(kl_divergence(a, b), expected, rtol=1e-5)
    np.testing.assert_allclose(kl_divergence(a, a), 0.0, atol=1e-6)
    assert not np.allclose(kl_divergence(a, b), kl_divergence(b, a))


def test_trades_loss_is_ce_plus_beta_kl(logits):
    a, b = logits
    y = np.array([0, 1, 2, 3, 4, 0])
    ce = -np.log(softmax(a)[np.arange(6), y])
    kl = (softmax(a) * np.log(softmax(a) / softmax(b))).sum(-1)
    np.testing.assert_allclose(trades_loss(a, b, y, 6.0), ce + 6.0 * kl, rtol=1e-5)


def test_logit_pairing_penalty_is_the_mean_squared_difference(logits):
    a, b = logits
    np.testing.assert_allclose(logit_pairing_penalty(a, b), ((a - b) ** 2).mean(-1), rtol=1e-6)


def test_smoothed_cross_entropy_spreads_s_over_the_other_classes(logits):
    a, _ = logits
    y = np.array([4, 3, 2, 1, 0, 0])
    target = np.full((6, 5), 0.2 / 4)
    target[np.arange(6), y] = 0.8
    expected = -(target * np.log(softmax(a))).sum(-1)
    np.testing.assert_allclose(smoothed_cross_entropy(a, y, 0.2), expected, rtol=1e-5)
    plain = -np.log(softmax(a)[np.arange(6), y])
    np.testing.assert_allclose(smoothed_cross_entropy(a, y, 0.0), plain, rtol=1e-5)


def test_batch_mean_divides_by_the_replicas(two_device_strategy):
    values = tf.constant([1.0, 2.0, 3.0, 6.0])
    assert float(batch_mean(values)) == pytest.approx(3.0)
    assert float(batch_mean(values, tf.constant([1.0, 0.0, 0.0, 1.0]))) == pytest.approx(1.75)

    def replica_fn():
        return batch_mean(values)

    per_replica = two_device_strategy.run(replica_fn)
    summed = two_device_strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    assert float(summed) == pytest.approx(3.0)  # Keras sums the replicas' scaled losses


def test_unknown_outer_loss_is_named():
    assert check_outer_loss("trades") == "trades"
    with pytest.raises(ValueError, match="'hinge'"):
        check_outer_loss("hinge")
