"""The outer losses exactly, at x_adv != x, against the formulas written out here in NumPy:
ALP, TRADES (and ADT_EXP with the TRADES loss) and FeaScatter's label-smoothed cross-entropy."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.methods import ALP, TRADES, ADTExp, FeaScatter
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def ce(logits, y):
    return -log_softmax(logits)[np.arange(len(y)), y]


def kl(clean, adv):
    p = np.exp(log_softmax(clean))
    return (p * (log_softmax(clean) - log_softmax(adv))).sum(-1)


@pytest.fixture(scope="module")
def batch():
    x, y = make_tiny_images(8)
    x_adv = np.clip(x + np.random.default_rng(0).uniform(-8 / 255, 8 / 255, x.shape), 0, 1)
    return tf.constant(x), tf.constant(x_adv.astype("float32")), tf.constant(y)


def prepared(cls, **kwargs):
    trainer = cls(tiny_classifier(dropout=0.0), seed=0, **kwargs)
    trainer.compile(optimizer="sgd", loss=ce_loss())
    return trainer


def logits_of(trainer, x):
    return trainer.classifier(x, training=True).numpy().astype(np.float64)


def test_alp_outer_loss(batch):
    x, x_adv, y = batch
    trainer = prepared(ALP, alp_weight=0.7)
    loss, _ = trainer.outer_loss(x, x_adv, y, None)
    clean, adv = logits_of(trainer, x), logits_of(trainer, x_adv)
    yy = y.numpy()
    expected = (0.5 * ce(clean, yy).mean() + 0.5 * ce(adv, yy).mean()
                + 0.7 * ((clean - adv) ** 2).mean(-1).mean())
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("cls,kwargs", [(TRADES, {"trades_beta": 6.0}),
                                        (ADTExp, {"outer_loss": "trades", "trades_beta": 6.0})])
def test_trades_outer_loss(batch, cls, kwargs):
    x, x_adv, y = batch
    trainer = prepared(cls, **kwargs)
    loss, _ = trainer.outer_loss(x, x_adv, y, None)
    clean, adv = logits_of(trainer, x), logits_of(trainer, x_adv)
    expected = ce(clean, y.numpy()).mean() + 6.0 * kl(clean, adv).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_feascatter_label_smoothed_loss(batch):
    x, x_adv, y = batch
    trainer = prepared(FeaScatter, label_smoothing=0.5)
    loss, _ = trainer.outer_loss(x, x_adv, y, None)
    logp = log_softmax(logits_of(trainer, x_adv))
    yy = y.numpy()
    onehot = np.eye(10)[yy]
    target = 0.5 * onehot + 0.5 / 9 * (1 - onehot)  # 1 - s on y, s / (C - 1) elsewhere
    expected = -(target * logp).sum(-1).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.fixture(scope="module")
def data():
    return make_tiny_images(64)


def test_adt_exp_trades_outer_loss_differs_from_ce(data):
    """With the TRADES loss ADT's outer loss is CE(f(x)) + beta KL, not CE(f(x_adv))."""
    x, y = (tf.constant(v[:16]) for v in data)
    trainers = {}
    for outer in ("ce", "trades"):
        keras.utils.set_random_seed(0)
        trainers[outer] = ADTExp(tiny_classifier(), seed=1, inner_steps=1, mc_samples=1,
                                 outer_loss=outer, trades_beta=6.0)
        trainers[outer].compile(optimizer="sgd", loss=ce_loss())
    x_adv = 1.0 - x  # far from x, so that the KL term is not negligible
    ce_loss_value, _ = trainers["ce"].outer_loss(x, x_adv, y, None)
    trades_value, _ = trainers["trades"].outer_loss(x, x_adv, y, None)
    model = trainers["trades"]
    clean, adv = model(x, training=True), model(x_adv, training=True)
    log_p, log_q = tf.nn.log_softmax(clean), tf.nn.log_softmax(adv)
    kl = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), -1))
    ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, clean, from_logits=True))
    assert float(kl) > 1e-5
    np.testing.assert_allclose(trades_value - ce, 6.0 * kl, rtol=1e-2)
    ce_adv = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
        y, trainers["ce"](x_adv, training=True), from_logits=True))
    np.testing.assert_allclose(ce_loss_value, ce_adv, rtol=1e-5)


def test_adt_exp_trades_inner_problem_maximises_the_kl(data):
    """With the TRADES loss the inner objective is beta KL + lambda H (no clean CE, ~2.3)."""
    x, y = (tf.constant(v[:16]) for v in data)
    objectives = {}
    for outer in ("ce", "trades"):
        trainer = ADTExp(tiny_classifier(), seed=1, inner_steps=2, mc_samples=2,
                         outer_loss=outer, trades_beta=6.0)
        _, aux = trainer.perturb(x, y)
        objectives[outer] = float(aux["inner_objective"] - 0.01 * aux["entropy"])
    assert objectives["ce"] > 1.0  # mean cross-entropy of a 10-class untrained classifier
    assert 0.0 < objectives["trades"] < 0.1  # 6 * KL(f(x) || f(x + delta)), small here
