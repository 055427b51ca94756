"""Tests of the amortised ADT methods: ADT_EXP-AM and ADT_IMP-AM (adt_tf/methods/)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.methods import METHODS, ADTExpAM, ADTImpAM
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier

TINY = {"generator_width": 4, "generator_blocks": 1}
METHOD_KWARGS = [
    pytest.param(ADTExpAM, {}, id="exp_am"),
    pytest.param(ADTImpAM, {"z_dim": 8, "encoder_width": 4}, id="imp_am"),
]


def make_trainer(cls, kwargs, input_shape=(16, 16, 3), **extra):
    params = dict(TINY, seed=3, **kwargs)
    params.update(extra)
    return cls(tiny_classifier(input_shape), **params)


def mean_ce(logits, y):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
        y, logits, from_logits=True))


def adversary_networks(trainer):
    return [trainer.generator] + ([trainer.encoder] if isinstance(trainer, ADTImpAM) else [])


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


# ---------------------------------------------------------------------------- the adversary
@pytest.mark.parametrize("cls,kwargs", METHOD_KWARGS)
@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_perturbations_stay_in_the_epsilon_ball(cls, kwargs, shape):
    epsilon = 0.3 if shape[-1] == 1 else 8 / 255
    trainer = make_trainer(cls, kwargs, input_shape=shape, epsilon=epsilon)
    x = tf.random.uniform((4,) + shape, seed=1)
    y = tf.constant([0, 1, 2, 3])
    features = trainer.generator_inputs(x, y)
    assert features.shape == (4,) + shape[:2] + (3 * shape[-1],)
    np.testing.assert_array_equal(features[..., : shape[-1]], x)
    for training in (True, False):
        sample = trainer.sample_adversary(x, features, tf.constant([1, 2]), training=training)
        assert sample.x_adv.shape == x.shape and sample.x_adv.dtype == tf.float32
        assert bool(trainer.threat.contains(sample.x_adv, x))
        if training:  # (in inference mode an untrained generator's BatchNorm shrinks all)
            assert float(tf.reduce_max(tf.abs(sample.x_adv - x))) > 0.1 * epsilon
    x_adv, aux = trainer.perturb(x, y)
    assert bool(trainer.threat.contains(x_adv, x)) and np.isfinite(aux["entropy"])


def test_generator_inputs_are_the_two_gradients():
    trainer = make_trainer(ADTExpAM, {})
    x, y = (tf.constant(a[:4]) for a in make_tiny_images(4))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
            y, trainer.classifier(x, training=False), from_logits=True))
    grad = tape.gradient(loss, x)
    x_fgsm = tf.clip_by_value(x + trainer.epsilon * tf.sign(grad), 0.0, 1.0)
    with tf.GradientTape() as tape:
        tape.watch(x_fgsm)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
            y, trainer.classifier(x_fgsm, training=False), from_logits=True))
    grad_fgsm = tape.gradient(loss, x_fgsm)
    features = trainer.generator_inputs(x, y)
    np.testing.assert_allclose(features, tf.concat([x, grad, grad_fgsm], -1), atol=1e-6)


# ---------------------------------------------------------------------------- the joint step
def reference_gradients(trainer, x, y, seed):
    """Two explicit tapes: grad_theta L for the classifier; grad of L + R for the adversary."""
    features = trainer.generator_inputs(x, y)
    adversary_vars = [v for net in adversary_networks(trainer) for v in net.trainable_variables]
    with tf.GradientTape() as tape:
        sample = trainer.sample_adversary(x, features, seed, training=True)
        objective = mean_ce(trainer.classifier(sample.x_adv, training=True), y)
        objective += sample.regularizer
    adversary_grads = tape.gradient(objective, adversary_vars)
    x_adv = tf.stop_gradient(sample.x_adv)
    with tf.GradientTape() as tape:
        loss = mean_ce(trainer.classifier(x_adv, training=True), y)
    classifier_grads = tape.gradient(loss, trainer.classifier.trainable_variables)
    return classifier_grads, adversary_grads, float(objective)


@pytest.mark.parametrize("cls,kwargs", METHOD_KWARGS)
def test_gradient_reversal_matches_two_tapes_and_moves_both_players(cls, kwargs):
    lr_c, lr_g = 0.05, 0.02
    trainer = make_trainer(cls, dict(kwargs, tau=0.0) if cls is ADTImpAM else kwargs)
    compile_kw = {"generator_optimizer": keras.optimizers.SGD(lr_g)}
    if cls is ADTImpAM:
        compile_kw["encoder_optimizer"] = keras.optimizers.SGD(lr_g)
    trainer.compile(optimizer=keras.optimizers.SGD(lr_c), loss=ce_loss(), **compile_kw)
    x, y = (tf.constant(a) for a in make_tiny_images(16))
    seed = tf.constant([5, 6])
    old_classifier = keras.models.clone_model(trainer.classifier)
    old_classifier.set_weights(trainer.classifier.get_weights())
    classifier_vars = trainer.classifier.trainable_variables
    adversary_vars = [v for net in adversary_networks(trainer) for v in net.trainable_variables]
    before_c, before_a = snapshot(classifier_vars), snapshot(adversary_vars)

    grads_c, grads_a, objective = reference_gradients(trainer, x, y, seed)
    result = trainer.joint_step(x, y, seed=seed)

    # The joint step's updates are SGD on +grad_theta L and on -grad_phi (L + R).
    np.testing.assert_allclose(result.objective, objective, rtol=1e-5)
    for v, old, g in zip(classifier_vars, before_c, grads_c):
        np.testing.assert_allclose(v.numpy(), old - lr_c * g.numpy(), rtol=1e-4, atol=1e-6)
    assert any(np.abs(g.numpy()).max() > 0 for g in grads_a)
    for v, old, g in zip(adversary_vars, before_a, grads_a):
        np.testing.assert_allclose(v.numpy(), old + lr_g * g.numpy(), rtol=1e-4, atol=1e-6)

    # The classifier's loss on the same x_adv went down ...
    loss_before = mean_ce(old_classifier(result.x_adv, training=False), y)
    loss_after = mean_ce(trainer.classifier(result.x_adv, training=False), y)
    assert float(loss_after) < float(loss_before) - 1e-4
    # ... and the adversary's objective, with the old classifier and the same noise, went up.
    features = _old_features(old_classifier, trainer, x, y)
    sample = trainer.sample_adversary(x, features, seed, training=True)
    objective_after = mean_ce(old_classifier(sample.x_adv, training=False), y) + sample.regularizer
    assert float(objective_after) > objective + 1e-5


def _old_features(old_classifier, trainer, x, y):
    """The generator's inputs computed with the classifier before the step."""
    new_weights = trainer.classifier.get_weights()
    trainer.classifier.set_weights(old_classifier.get_weights())
    try:
        return trainer.generator_inputs(x, y)
    finally:
        trainer.classifier.set_weights(new_weights)
