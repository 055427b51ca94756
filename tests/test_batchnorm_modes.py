"""BatchNorm modes: inner maximisations and attacks run the classifier in inference mode
(moving statistics untouched); one training step updates them exactly once, on the inputs it
trains on. The reference case (tests/test_reference_parity.py) has no BatchNorm, so this is
tested here."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.attacks import ATTACKS
from adt_tf.core.noise import RecordedNoise
from adt_tf.evaluation import fit_amortized_adversary
from adt_tf.methods import METHODS
from adt_tf.methods.awp import perturbed_weights
from adt_tf.numerics.optimizers import make_optimizer
from tests.adt_tf.attacks.test_attack_battery import EPS, small_settings
from tests.helpers import ce_loss, make_tiny_images, slow_cases, tiny_classifier
from tests.test_replicas import SETTINGS, PatternNoise


def bn_classifier():
    return tiny_classifier(batch_norm=True, dropout=0.0)


def moving_stats(model):
    return [v.numpy().copy() for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


def primed(model, x):
    """Moves the statistics away from their initial values (so that an update by the
    inference-mode passes could not hide as a no-op)."""
    model(x, training=True)
    return model


@pytest.fixture(scope="module")
def data():
    x, y = make_tiny_images(16)
    return tf.constant(x), tf.constant(y)


@pytest.mark.parametrize("name", slow_cases(  # five in the fast set, every attack in the slow one
    sorted(ATTACKS), fast=("apgd_t", "exp", "fab_t", "pgd", "square")))
def test_attacks_leave_the_moving_statistics_alone(data, name):
    x, y = data
    model = primed(bn_classifier(), x)
    assert moving_stats(model)  # the classifier has BatchNorm layers
    before = moving_stats(model)
    kwargs = small_settings(model)[name]
    if name in ("exp_am", "imp_am"):  # fits a small generator against the model first
        adversary = fit_amortized_adversary(model, x.numpy(), y.numpy(), EPS, kind=name,
                                            train_steps=2, train_batch_size=8,
                                            generator_width=2, generator_blocks=1)
        kwargs = {"check_samples": 2, "adversary": adversary}  # the fit is checked too
    ATTACKS[name](model, x, y, EPS, seed=0, **kwargs)
    for a, b in zip(before, moving_stats(model)):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"standard"}))
def test_inner_maximisation_leaves_them_alone_and_a_step_updates_them_once(data, name):
    x, y = data
    params = dict(SETTINGS.get(name, {}))
    if name == "fgsm_at":
        params = {}
    if name == "feascatter":
        params = {"sinkhorn_iterations": 5}
    trainer = METHODS[name](primed(bn_classifier(), x), seed=0, **params)
    trainer.noise_source = PatternNoise()
    trainer.compile(optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4),
                    loss=ce_loss())
    before = moving_stats(trainer.classifier)
    if hasattr(trainer, "joint_step"):  # amortised: x_adv comes from the generator's pass
        x_train = trainer.sample_adversary(
            x, trainer.generator_inputs(x, y), tf.constant([0, 0]), training=False).x_adv
        clean_passes = 0
    else:
        clean_passes = 1 if name in ("trades", "awp_trades") else 0  # its outer loss sees f(x)
    # ALP: one pass over the joined batch [x; x_adv] (its authors' train.py)
    joined = name == "alp"
    # Fast AT's reference takes its FGSM gradient in training mode, at the random start.
    start = (trainer.threat.random_start(x, tf.constant([0, 0]), PatternNoise())
             if name == "fast_at" else None)
    expected_model = keras.models.clone_model(trainer.classifier)
    expected_model.set_weights(trainer.classifier.get_weights())
    if not hasattr(trainer, "joint_step"):
        x_train, _ = trainer.perturb(x, y)
        if start is not None:
            expected_model(start, training=True)
    for a, b, c in zip(before, moving_stats(expected_model), moving_stats(trainer.classifier)):
        if start is None:  # an inner maximisation in inference mode: untouched, exactly
            np.testing.assert_array_equal(a, c, err_msg=f"{name}: perturb moved the statistics")
        else:  # Fast AT: one training-mode pass at the start
            np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-6, err_msg=name)
    # The expected statistics: the step's training-mode passes, once each (AWP's at the
    # perturbed weights w + v; its proxy's pass moves nothing).
    weights = trainer.classifier.get_weights()
    if name.startswith("awp_"):
        deltas = trainer.weight_perturbation(x, tf.stop_gradient(x_train), y)
        moved = {id(v): d.numpy() for v, d in zip(perturbed_weights(trainer.classifier),
                                                   deltas)}
        weights = [w + moved.get(id(v), 0.0) for w, v in zip(weights,
                                                             trainer.classifier.weights)]
    expected_model.set_weights(weights)
    if not hasattr(trainer, "joint_step"):
        if start is not None:
            expected_model(start, training=True)
        if clean_passes:
            expected_model(x, training=True)
        if joined:
            expected_model(tf.concat([x, tf.stop_gradient(x_train)], 0), training=True)
        else:
            expected_model(tf.stop_gradient(x_train), training=True)
        if name in ("trades", "awp_trades"):  # the third pass: f(x) again, the KL target
            expected_model(x, training=True)
        trainer.train_step((x, y))
        for a, b in zip(moving_stats(expected_model), moving_stats(trainer.classifier)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=name)
    else:
        trainer.train_step((x, y))
    changed = [np.abs(a - b).max() for a, b in zip(before, moving_stats(trainer.classifier))]
    assert max(changed) > 0, f"{name}: the training step did not update the statistics"


def test_adt_exp_step_updates_the_statistics_once_on_its_x_adv(data):
    """ADT_EXP: 7 x 5 inference passes, then exactly one training-mode pass on x_adv (the
    recorded draws make x_adv reproducible)."""
    x, y = data
    trainer = METHODS["adt_exp"](primed(bn_classifier(), x), seed=0)
    trainer.compile(optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4),
                    loss=ce_loss())
    noise = np.random.default_rng(0).standard_normal((36,) + tuple(x.shape)).astype("float32")
    trainer.noise_source = RecordedNoise(normal=noise)
    x_adv, _ = trainer.perturb(x, y)
    expected = keras.models.clone_model(trainer.classifier)
    expected.set_weights(trainer.classifier.get_weights())
    expected(x_adv, training=True)
    trainer.noise_source = RecordedNoise(normal=noise)
    trainer.train_step((x, y))
    for a, b in zip(moving_stats(expected), moving_stats(trainer.classifier)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
