"""The contract every training method keeps, one test case run over every registered method
(`standard`, the ADT methods and the baselines): it is registered with its documentation,
learns, compiles with XLA, trains under a two-replica MirroredStrategy, and round-trips its
configuration. (Method-specific properties live beside it: `test_adt_exp.py`,
`test_amortized.py`, `test_baseline_properties.py`, `test_outer_losses.py`; every method's
step on two replicas against one device is `tests/test_replicas.py`, BatchNorm's modes
`tests/test_batchnorm_modes.py`.)"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from adt_tf.methods import METHODS, get_method
from tests.helpers import CHEAP_PARAMS, ce_loss, make_tiny_images, slow_cases, tiny_classifier

# The cheap settings (`tests.helpers.CHEAP_PARAMS`); ADT_EXP with the TRADES outer loss, so
# that the contract covers that path too.
FAST = dict(CHEAP_PARAMS, adt_exp=dict(CHEAP_PARAMS["adt_exp"], outer_loss="trades"))

# Every constructor argument set away from its default, for the config round trip.
NON_DEFAULT = {
    "standard": {},
    "adt_exp": {"outer_loss": "trades", "trades_beta": 1.0, "inner_steps": 3, "mc_samples": 2,
                "inner_lr": 0.2, "inner_gradients": "fresh"},
    "adt_exp_am": {"entropy_weight": 0.1, "generator_width": 4, "generator_blocks": 1,
                   "generator_lr": 1e-3, "generator_decay_steps": 10},
    "adt_imp_am": {"entropy_weight": 0.5, "generator_width": 4, "generator_blocks": 1,
                   "z_dim": 8, "tau": 0.5, "encoder_lr": 1e-3, "encoder_width": 4},
    "pgd_at": {"attack_steps": 7, "attack_step_size": 0.01},
    "fgsm_at": {"adv_fraction": 0.25, "adv_weight": 0.5, "random_epsilon": True},
    "fast_at": {"attack_step_size": 0.04, "perturb_mode": "inference"},
    "alp": {"attack_steps": 7, "attack_step_size": 0.01, "alp_weight": 1.0},
    "trades": {"attack_steps": 5, "attack_step_size": 0.01, "trades_beta": 1.0,
               "init_std": 0.002},
    "feascatter": {"attack_steps": 2, "attack_step_size": 0.02, "label_smoothing": 0.2,
                   "sinkhorn_reg": 0.05, "sinkhorn_iterations": 20, "sinkhorn_tolerance": 0.0},
    "awp_at": {"attack_steps": 7, "attack_step_size": 0.01, "awp_gamma": 0.02,
               "awp_warmup": 2},
    "awp_trades": {"attack_steps": 5, "trades_beta": 1.0, "awp_gamma": 0.01, "awp_warmup": 0},
    "awp_adt_exp": {"inner_steps": 3, "outer_loss": "trades", "awp_gamma": 0.005,
                    "awp_warmup": 1},
}

#: Training is the contract's cost: the fast set trains ADT_EXP, ADT_EXP-AM and AT_PGD (the
#: paper's methods and the baseline they are compared with), the slow set every method.
#: XLA on CPU compiles slowly and the replicas are tested against one device in
#: tests/test_replicas.py: those two run in the slow set only.
FAST_TRAINING = ("adt_exp", "adt_exp_am", "pgd_at")


def _every_method(fast=tuple(METHODS)):
    return slow_cases(list(METHODS), fast=fast)


@pytest.fixture(scope="module")
def data():
    return make_tiny_images(64)


def build(name, jit=False, **overrides):
    kwargs = {"epsilon": 8 / 255, "seed": 3, **FAST[name], **overrides}
    trainer = get_method(name)(tiny_classifier(), **kwargs)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), loss=ce_loss(),
                    metrics=["accuracy"], jit_compile=jit)
    return trainer


def test_the_contract_covers_every_registered_method():
    assert set(FAST) == set(NON_DEFAULT) == set(METHODS)


class TestMethodContract:
    @pytest.mark.parametrize("name", _every_method())
    def test_registered_with_its_documentation(self, name):
        cls = METHODS[name]
        assert get_method(name) is cls
        for section in ("Reference:", "Mathematical details:", "Example:"):
            assert section in cls.__doc__, (name, section)

    @pytest.mark.parametrize("name", _every_method(FAST_TRAINING))
    def test_fit_lowers_the_loss(self, name, data):
        x, y = data
        history = build(name).fit(x, y, batch_size=32, epochs=3, verbose=0).history
        losses = history["loss"]
        assert all(math.isfinite(v) for v in losses), losses
        assert losses[-1] < losses[0] - 0.005, losses
        for aux in get_method(name).aux_metrics:
            assert math.isfinite(history[aux][-1])

    @pytest.mark.parametrize("name", _every_method(fast=()))
    def test_runs_under_xla(self, name, data):
        x, y = data
        trainer = build(name, jit=True)
        before = trainer.classifier.get_weights()
        history = trainer.fit(x, y, batch_size=64, epochs=1, verbose=0).history  # one step
        assert math.isfinite(history["loss"][0])
        after = trainer.classifier.get_weights()
        assert any(not np.allclose(a, b) for a, b in zip(before, after))

    @pytest.mark.parametrize("name", _every_method(fast=()))
    def test_trains_under_mirrored_strategy(self, name, data, two_device_strategy):
        x, y = data
        with two_device_strategy.scope():
            trainer = build(name)
        losses = trainer.fit(x, y, batch_size=32, epochs=2, verbose=0).history["loss"]
        assert all(math.isfinite(v) for v in losses), losses
        assert losses[-1] < losses[0], losses

    @pytest.mark.parametrize("name", _every_method())
    def test_config_round_trip_keeps_every_argument(self, name):
        kwargs = {"epsilon": 4 / 255, "seed": 11, **NON_DEFAULT[name]}
        cls = get_method(name)
        trainer = cls(tiny_classifier(), **kwargs)
        for config in (trainer.get_config(), cls.from_config(trainer.get_config()).get_config(),
                       keras.saving.deserialize_keras_object(
                           keras.saving.serialize_keras_object(trainer)).get_config()):
            for key, value in kwargs.items():
                assert config[key] == value, (name, key)
