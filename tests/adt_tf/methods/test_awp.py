"""AWP's weight step against its authors' code (csdongxian/AWP, utils_awp.py): the
perturbation's per-layer size, a whole step recomputed by hand, the exact restoration, the
proxy's BatchNorm statistics thrown away, the warm-up epochs, and the weight average without
the perturbation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.methods import AWPAT, AWPTRADES, TRADES, get_method
from adt_tf.methods.awp import check_awp_gamma, perturbed_weights
from adt_tf.numerics.optimizers import CoupledSGD, make_optimizer
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier


class FixedExamples(AWPAT):
    """AWP-AT whose inner maximisation returns the given inputs (so a step can be
    recomputed by hand from known adversarial examples)."""

    x_adv = None

    def perturb(self, x, y):
        return tf.constant(self.x_adv), {}


def _plain_classifier():
    """A conv + dense net without BatchNorm or dropout: its training-mode forward is a pure
    function of the weights."""
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _ce(model_fn, x, y):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
        y, model_fn(x), from_logits=True))


def test_the_perturbation_of_each_layer_is_gamma_times_its_weight_norm():
    x, y = make_tiny_images(32)
    gamma = 0.02
    trainer = AWPAT(tiny_classifier(batch_norm=True), attack_steps=2, awp_gamma=gamma, seed=1)
    trainer.compile(optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4),
                    loss=ce_loss())
    trainer(x[:1])
    x_adv, _ = trainer.perturb(tf.constant(x), tf.constant(y))
    deltas = trainer.weight_perturbation(tf.constant(x), x_adv, tf.constant(y))
    weights = perturbed_weights(trainer.classifier)
    # Every kernel (4 convolutions, 3 dense) and nothing else: no bias, no BatchNorm scale.
    assert len(weights) == len(deltas) == 7
    assert all(len(w.shape) > 1 for w in weights)
    for w, d in zip(weights, deltas):
        np.testing.assert_allclose(np.linalg.norm(d.numpy()),
                                   gamma * np.linalg.norm(w.numpy()), rtol=1e-5)
        assert np.linalg.norm(d.numpy()) > 0


def test_the_proxy_leaves_the_batchnorm_statistics_alone():
    x, y = make_tiny_images(32)
    trainer = AWPAT(tiny_classifier(batch_norm=True), attack_steps=1, seed=1)
    trainer.compile(optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4),
                    loss=ce_loss())
    trainer(x[:1])
    before = [v.numpy().copy() for v in trainer.classifier.non_trainable_variables]
    trainer.weight_perturbation(tf.constant(x), tf.constant(x), tf.constant(y))
    for a, v in zip(before, trainer.classifier.non_trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())


def test_one_step_equals_the_step_computed_by_hand():
    """w' = w + v - lr * (g(w + v) + wd (w + v)) - v with v from one proxy ascent step of
    lr 0.01 (momentum's buffer is g at the first step): the authors' order."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 6, 6, 2)).astype(np.float32)
    x_adv = np.clip(x + rng.uniform(-0.03, 0.03, x.shape), 0, 1).astype(np.float32)
    y = rng.integers(0, 4, 8)
    gamma, lr, wd = 0.05, 0.1, 5e-4
    classifier = _plain_classifier()
    trainer = FixedExamples(classifier, awp_gamma=gamma, seed=0)
    trainer.x_adv = x_adv
    trainer.compile(optimizer=CoupledSGD(lr, momentum=0.9, coupled_weight_decay=wd),
                    loss=ce_loss())
    trainer(x[:1])
    w0 = [v.numpy().copy() for v in classifier.trainable_variables]

    # By hand, on a copy: the proxy's ascent gradient at w, v per kernel, the outer gradient
    # at w + v, PyTorch's coupled SGD step at w + v, then v taken back out.
    clone = _plain_classifier()
    clone.set_weights(w0)
    with tf.GradientTape() as tape:
        loss = _ce(lambda t: clone(t, training=True), x_adv, y)
    g = [t.numpy() for t in tape.gradient(loss, clone.trainable_variables)]
    v = []
    for w, gw in zip(w0, g):
        if w.ndim > 1:
            d = (w + np.float32(0.01) * gw) - w
            v.append(gamma * np.linalg.norm(w) / (np.linalg.norm(d) + 1e-20) * d)
        else:
            v.append(np.zeros_like(w))
    clone.set_weights([w + dv for w, dv in zip(w0, v)])
    with tf.GradientTape() as tape:
        loss = _ce(lambda t: clone(t, training=True), x_adv, y)
    g2 = [t.numpy() for t in tape.gradient(loss, clone.trainable_variables)]
    expected = [(w + dv) - lr * (gw + wd * (w + dv)) - dv for w, dv, gw in zip(w0, v, g2)]

    trainer.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for want, got in zip(expected, classifier.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)
    assert any(np.abs(dv).max() > 1e-3 for dv in v)  # the perturbation mattered


def test_the_weights_are_restored_exactly():
    """With an update of exactly zero, the step leaves every weight bit for bit as it was:
    the perturbation is taken back out, not approximately undone."""
    x, y = make_tiny_images(32)
    trainer = AWPAT(tiny_classifier(batch_norm=True), attack_steps=1, awp_gamma=0.05, seed=2)
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=ce_loss())
    trainer(x[:1])
    before = [v.numpy().copy() for v in trainer.classifier.trainable_variables]
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for a, v in zip(before, trainer.classifier.trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())


@pytest.mark.slow
def test_trades_awp_waits_for_its_warm_up_epochs():
    """awp_warmup=1: the first epoch is TRADES's own (the same weights as TRADES's), the
    second perturbs."""
    x, y = make_tiny_images(32)

    def weights_after(cls, epochs, **kwargs):
        keras.utils.set_random_seed(0)
        trainer = cls(tiny_classifier(), attack_steps=2, seed=4, **kwargs)
        trainer.compile(optimizer=make_optimizer(0.05, momentum=0.9, weight_decay=5e-4),
                        loss=ce_loss())
        trainer.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False,
                    callbacks=trainer.training_callbacks())
        return [v.numpy() for v in trainer.classifier.trainable_variables]

    plain = weights_after(TRADES, 1)
    warm = weights_after(AWPTRADES, 1, awp_warmup=1)
    for a, b in zip(plain, warm):
        np.testing.assert_array_equal(a, b)
    plain2, warm2 = weights_after(TRADES, 2), weights_after(AWPTRADES, 2, awp_warmup=1)
    assert any(not np.allclose(a, b) for a, b in zip(plain2, warm2))


@pytest.mark.slow
def test_the_weight_average_does_not_take_in_the_perturbation():
    """With EMA, the average after the first step is the step's (restored) weights: the
    perturbation v that the optimiser's average saw is taken back out."""
    x, y = make_tiny_images(32)
    trainer = AWPAT(tiny_classifier(), attack_steps=1, awp_gamma=0.05, seed=2)
    trainer.compile(optimizer=make_optimizer(0.05, momentum=0.9, weight_decay=2e-4,
                                             ema_decay=0.99, ema_warmup=True), loss=ce_loss())
    trainer.fit(x, y, batch_size=32, epochs=1, verbose=0)
    optimizer = trainer.optimizer
    index = {id(v): i for i, v in enumerate(optimizer._trainable_variables)}
    for v in trainer.classifier.trainable_variables:
        average = optimizer._model_variables_moving_average[index[id(v)]]
        np.testing.assert_allclose(average.numpy(), v.numpy(), atol=1e-6)


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), "x"])
def test_a_bad_gamma_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match="awp_gamma"):
        check_awp_gamma(bad)
    with pytest.raises(ValueError, match="awp_gamma"):
        get_method("awp_at")(tiny_classifier(), awp_gamma=bad)


def test_the_authors_defaults():
    at, trades = AWPAT(tiny_classifier()), AWPTRADES(tiny_classifier())
    assert (at.awp_gamma, at.awp_warmup, at.AWP_PROXY_LR) == (0.01, 0, 0.01)
    assert (trades.awp_gamma, trades.awp_warmup, trades.AWP_PROXY_LR) == (0.005, 9, 0.1)
