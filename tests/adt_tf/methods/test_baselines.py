"""What every baseline (and ADT with the TRADES loss) must do: learn, compile with XLA, train
under a two-replica MirroredStrategy, and round-trip its configuration."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.methods import METHODS, ADTExp, get_method
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier

# Cheap settings for the tests (fewer inner steps than the defaults).
FAST = {
    "pgd_at": {"attack_steps": 3},
    "fgsm_at": {},
    "fast_at": {},
    "alp": {"attack_steps": 3},
    "trades": {"attack_steps": 3},
    "feascatter": {},
    "adt_exp": {"inner_steps": 2, "mc_samples": 2, "outer_loss": "trades"},
}

# Every constructor argument set away from its default, for the config round trip.
NON_DEFAULT = {
    "pgd_at": {"attack_steps": 7, "attack_step_size": 0.01},
    "fgsm_at": {"adv_fraction": 0.25, "adv_weight": 0.5, "random_epsilon": True},
    "fast_at": {"attack_step_size": 0.04},
    "alp": {"attack_steps": 7, "attack_step_size": 0.01, "alp_weight": 1.0},
    "trades": {"attack_steps": 5, "attack_step_size": 0.01, "trades_beta": 1.0,
               "init_std": 0.002},
    "feascatter": {"attack_steps": 2, "attack_step_size": 0.02, "label_smoothing": 0.2,
                   "sinkhorn_reg": 0.05, "sinkhorn_iterations": 20, "sinkhorn_tolerance": 0.0},
    "adt_exp": {"outer_loss": "trades", "trades_beta": 1.0},
}

NAMES = sorted(FAST)


@pytest.fixture(scope="module")
def data():
    return make_tiny_images(64)


def build(name, strategy=None, jit=False, **overrides):
    kwargs = {"epsilon": 8 / 255, "seed": 3, **FAST[name], **overrides}
    trainer = get_method(name)(tiny_classifier(), **kwargs)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), loss=ce_loss(),
                    metrics=["accuracy"], jit_compile=jit)
    return trainer


@pytest.mark.parametrize("name", [n for n in NAMES if n != "adt_exp"])
def test_registered_under_cli_name(name):
    assert METHODS[name].__name__ in {"PGDAT", "FGSMAT", "FastAT", "ALP", "TRADES", "FeaScatter"}
    assert "Reference:" in METHODS[name].__doc__
    assert "Mathematical details:" in METHODS[name].__doc__


@pytest.mark.parametrize("name", NAMES)
def test_fit_lowers_the_loss(name, data):
    x, y = data
    history = build(name).fit(x, y, batch_size=32, epochs=3, verbose=0).history
    losses = history["loss"]
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0] - 0.005, losses
    for aux in get_method(name).aux_metrics:
        assert math.isfinite(history[aux][-1])


# XLA on CPU compiles slowly: the fast set keeps ADT_EXP (the method the inner-loop code
# paths matter most for); the other methods' XLA runs are in the slow set.
XLA_NAMES = [n if n == "adt_exp" else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]


@pytest.mark.parametrize("name", XLA_NAMES)
def test_runs_under_xla(name, data):
    x, y = data
    trainer = build(name, jit=True)
    before = trainer.classifier.get_weights()
    history = trainer.fit(x, y, batch_size=64, epochs=1, verbose=0).history  # one step
    assert math.isfinite(history["loss"][0])
    after = trainer.classifier.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("name", XLA_NAMES)  # adt_exp fast, the others slow (as for XLA)
def test_trains_under_mirrored_strategy(name, data, two_device_strategy):
    x, y = data
    with two_device_strategy.scope():
        trainer = build(name)
    history = trainer.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    losses = history["loss"]
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_keeps_every_argument(name):
    kwargs = {"epsilon": 4 / 255, "seed": 11, **NON_DEFAULT[name]}
    cls = get_method(name)
    trainer = cls(tiny_classifier(), **kwargs)
    config = trainer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value, key
    restored = cls.from_config(config)
    assert type(restored) is cls
    restored_config = restored.get_config()
    for key, value in kwargs.items():
        assert restored_config[key] == value, key
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(trainer))
    assert type(again) is cls and again.get_config()[next(iter(NON_DEFAULT[name]))] == \
        kwargs[next(iter(NON_DEFAULT[name]))]


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
