"""The outer losses exactly, at x_adv != x, against the formulas written out here in NumPy:
ALP, TRADES (and ADT_EXP with the TRADES loss) and FeaScatter's label-smoothed cross-entropy."""

from __future__ import annotations

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
