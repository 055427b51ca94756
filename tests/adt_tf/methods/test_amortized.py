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
# The longer checks run IMP-AM in the slow set only (its encoder doubles their time).
IMP_AM_SLOW = [METHOD_KWARGS[0],
               pytest.param(*METHOD_KWARGS[1].values, id="imp_am", marks=pytest.mark.slow)]


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
    """x and the input gradients of the batch-mean cross-entropy (the reference's scale)."""
    trainer = make_trainer(ADTExpAM, {})
    x, y = (tf.constant(a[:4]) for a in make_tiny_images(4))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, trainer.classifier(x, training=False), from_logits=True))
    grad = tape.gradient(loss, x)
    x_fgsm = tf.clip_by_value(x + trainer.epsilon * tf.sign(grad), 0.0, 1.0)
    with tf.GradientTape() as tape:
        tape.watch(x_fgsm)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, trainer.classifier(x_fgsm, training=False), from_logits=True))
    grad_fgsm = tape.gradient(loss, x_fgsm)
    features = trainer.generator_inputs(x, y)
    np.testing.assert_allclose(features, tf.concat([x, grad, grad_fgsm], -1), atol=1e-7)


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
    lr_c, lr_g = 0.05, 0.5
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
    # ... and the adversary's step is an ascent of its objective (old classifier, same
    # noise): to first order along the step it actually took. The full step of lr_g may
    # overshoot on some initial weights (seen with pytest-randomly's seeds), so the check
    # moves a fraction t of it, sized so that the first-order gain t lr_g |g|^2 is 1e-5 of
    # the objective.
    squared = sum(float(tf.reduce_sum(tf.square(g))) for g in grads_a)
    t = 1e-5 * abs(objective) / max(lr_g * squared, 1e-12)
    after_a = snapshot(adversary_vars)
    for v, old, new in zip(adversary_vars, before_a, after_a):
        v.assign(old + t * (new - old))
    features = _old_features(old_classifier, trainer, x, y)
    sample = trainer.sample_adversary(x, features, seed, training=True)
    objective_after = mean_ce(old_classifier(sample.x_adv, training=False), y) + sample.regularizer
    assert float(objective_after) - objective > 0.5 * t * lr_g * squared > 0


def _old_features(old_classifier, trainer, x, y):
    """The generator's inputs computed with the classifier before the step."""
    new_weights = trainer.classifier.get_weights()
    trainer.classifier.set_weights(old_classifier.get_weights())
    try:
        return trainer.generator_inputs(x, y)
    finally:
        trainer.classifier.set_weights(new_weights)


@pytest.mark.slow
def test_implicit_entropy_bound_rises_against_a_fixed_classifier():
    trainer = make_trainer(ADTImpAM, {"z_dim": 8, "encoder_width": 4}, tau=0.0)
    trainer.compile(optimizer="sgd", loss=ce_loss(),
                    generator_optimizer=keras.optimizers.Adam(1e-2, beta_1=0.5),
                    encoder_optimizer=keras.optimizers.Adam(1e-2))
    x, y = (tf.constant(a) for a in make_tiny_images(32))
    classifier_before = snapshot(trainer.classifier.variables)
    step = tf.function(
        lambda s: trainer.joint_step(x, y, seed=s, update_classifier=False).entropy)
    bounds = np.array([float(step(tf.constant([i, 7]))) for i in range(60)])
    assert bounds[-10:].mean() > bounds[:5].mean() + 0.2
    # The best Gaussian q that ignores delta (mean 0, variance 1/3 for U(-1, 1)) gives
    # log 2 - log(2 pi e / 3) / 2: above it, delta carries information about z.
    no_information = math.log(2.0) - 0.5 * math.log(2 * math.pi * math.e / 3)
    assert bounds[-10:].mean() > no_information + 0.05
    for v, old in zip(trainer.classifier.variables, classifier_before):
        np.testing.assert_array_equal(v.numpy(), old)


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("cls,kwargs", IMP_AM_SLOW)
def test_fit_lowers_the_loss_and_reports_the_metrics(cls, kwargs):
    trainer = make_trainer(cls, kwargs)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), loss=ce_loss(),
                    metrics=["accuracy"])
    x, y = make_tiny_images(32)
    history = trainer.fit(x, y, batch_size=16, epochs=4, verbose=0).history
    assert {"loss", "accuracy", "entropy", "generator_objective"} <= set(history)
    assert history["loss"][-1] < history["loss"][0] - 0.02
    assert all(np.isfinite(v).all() for v in history.values())
    # The generator trained too (its optimizer stepped once per batch).
    assert int(trainer.generator_optimizer.iterations.numpy()) == 8


@pytest.mark.slow  # XLA training is in the fast set through ADT_EXP (test_adt_exp.py)
@pytest.mark.parametrize("cls,kwargs", METHOD_KWARGS)
def test_trains_under_xla(cls, kwargs):
    trainer = make_trainer(cls, kwargs, generator_blocks=0)  # XLA compiles slowly on CPU
    trainer.compile(optimizer="sgd", loss=ce_loss(), jit_compile=True)
    x, y = make_tiny_images(8)
    before = snapshot(trainer.generator.trainable_variables)
    history = trainer.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][-1]) and np.isfinite(history["entropy"][-1])
    assert any(not np.array_equal(v.numpy(), old)
               for v, old in zip(trainer.generator.trainable_variables, before))


@pytest.mark.slow  # tests/test_replicas.py checks one step against one device (fast set)
@pytest.mark.parametrize("cls,kwargs", METHOD_KWARGS)
def test_trains_under_mirrored_strategy(cls, kwargs, two_device_strategy):
    with two_device_strategy.scope():
        trainer = make_trainer(cls, kwargs)
        trainer.compile(optimizer="sgd", loss=ce_loss(), metrics=["accuracy"])
    x, y = make_tiny_images(32)
    before = snapshot(trainer.generator.trainable_variables)
    history = trainer.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][-1]) and np.isfinite(history["generator_objective"][-1])
    assert int(trainer.generator_optimizer.iterations.numpy()) == 2
    assert any(not np.array_equal(v.numpy(), old)
               for v, old in zip(trainer.generator.trainable_variables, before))


def optimizer_variables(trainer):
    optimizers = [trainer.optimizer, trainer.generator_optimizer]
    if isinstance(trainer, ADTImpAM):
        optimizers.append(trainer.encoder_optimizer)
    return [v for opt in optimizers for v in opt.variables]


@pytest.mark.slow
@pytest.mark.parametrize("cls,kwargs", IMP_AM_SLOW)
def test_checkpoint_round_trip_resumes_exactly(cls, kwargs, tmp_path):
    x, y = make_tiny_images(32)

    def fresh():
        trainer = make_trainer(cls, kwargs)
        trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=ce_loss())
        return trainer

    trained = fresh()
    for start in (0, 16):
        trained.train_on_batch(x[start:start + 16], y[start:start + 16])
    path = str(tmp_path / "ckpt.weights.h5")
    trained.save_weights(path)
    keras.utils.set_random_seed(123)  # the restored trainer starts from other weights
    restored = fresh()
    restored.load_weights(path)
    for net in ["classifier"] + [n.name for n in adversary_networks(trained)]:
        a, b = getattr(trained, net), getattr(restored, net)
        assert len(a.variables) == len(b.variables)
        for va, vb in zip(a.variables, b.variables):
            np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)
    opt_a, opt_b = optimizer_variables(trained), optimizer_variables(restored)
    assert len(opt_a) == len(opt_b) and any(int(v.numpy().sum()) == 2 for v in opt_a
                                            if "iteration" in v.path)
    for va, vb in zip(opt_a, opt_b):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)
    # Everything else too: BatchNorm statistics and the state of the noise's seed generator.
    assert len(trained.variables) == len(restored.variables)
    for va, vb in zip(trained.variables, restored.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)
    # Training goes on identically (same seeds, same optimizer state).
    batch = (x[:16], y[:16])
    trained.train_on_batch(*batch)
    restored.train_on_batch(*batch)
    for va, vb in zip(trained.variables, restored.variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_whole_trainer_and_lone_networks_round_trip_through_keras_saving(tmp_path):
    trainer = make_trainer(ADTImpAM, {"z_dim": 8, "encoder_width": 4})
    trainer.compile(optimizer="sgd", loss=ce_loss(), metrics=["accuracy"])
    x, y = make_tiny_images(16)
    for start in (0, 8):
        trainer.train_on_batch(x[start:start + 8], y[start:start + 8])
    path = str(tmp_path / "trainer.keras")
    trainer.save(path)
    again = keras.saving.load_model(path)
    assert type(again) is ADTImpAM and again.get_config()["z_dim"] == 8
    for name in ("optimizer", "generator_optimizer", "encoder_optimizer"):
        assert int(getattr(again, name).iterations.numpy()) == 2, name
    for va, vb in zip(trainer.variables, again.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)
    # The generator and the encoder on their own (the evaluation reuses them as attacks).
    features = trainer.generator_inputs(tf.constant(x[:4]), tf.constant(y[:4]))
    z = tf.random.uniform([4, 8], -1, 1, seed=2)
    for net, inputs in ((trainer.generator, [features, z]), (trainer.encoder, features[..., :3])):
        net.save(str(tmp_path / f"{net.name}.keras"))
        alone = keras.saving.load_model(str(tmp_path / f"{net.name}.keras"))
        for a, b in zip(tf.nest.flatten(net(inputs)), tf.nest.flatten(alone(inputs))):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- config, inputs
@pytest.mark.parametrize("cls,kwargs", METHOD_KWARGS)
def test_config_round_trip(cls, kwargs):
    trainer = make_trainer(cls, kwargs, generator_lr=1e-3, generator_decay_steps=50,
                           entropy_weight=0.5)
    config = trainer.get_config()
    for key in ("epsilon", "entropy_weight", "generator_width", "generator_blocks",
                "generator_lr", "generator_decay_steps", "seed"):
        assert key in config
    if cls is ADTImpAM:
        assert {"z_dim", "tau", "encoder_lr", "encoder_width"} <= set(config)
    again = cls.from_config(config)
    assert again.get_config()["generator_width"] == 4
    assert {k: v for k, v in again.get_config().items() if k != "classifier"} == {
        k: v for k, v in config.items() if k != "classifier"}
    assert METHODS["adt_exp_am" if cls is ADTExpAM else "adt_imp_am"] is cls


def test_generator_learning_rate_decays_linearly():
    trainer = make_trainer(ADTExpAM, {}, generator_lr=1e-3, generator_decay_steps=10)
    trainer.compile(optimizer="sgd", loss=ce_loss())
    schedule = trainer.generator_optimizer.learning_rate
    assert isinstance(trainer.generator_optimizer, keras.optimizers.Adam)
    assert trainer.generator_optimizer.beta_1 == 0.5
    schedule = trainer.generator_learning_rate()
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10, 20)],
                               [1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    constant = make_trainer(ADTExpAM, {}, generator_lr=1e-3).generator_learning_rate()
    assert constant == 1e-3


@pytest.mark.parametrize("kwargs,message", [
    ({"z_dim": 0}, "z_dim must be an integer >= 1, got 0"),
    ({"tau": -0.5}, "tau must be a finite number >= 0, got -0.5"),
    ({"generator_width": 0}, "generator_width must be an integer >= 1, got 0"),
    ({"encoder_lr": 0.0}, "encoder_lr must be a finite number > 0, got 0.0"),
    ({"generator_decay_steps": -1}, "generator_decay_steps must be an integer >= 0, got -1"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(ADTImpAM, kwargs)


@pytest.mark.parametrize("cls,kwargs", METHOD_KWARGS)
def test_any_input_size_trains(cls, kwargs):
    """The full-resolution generator takes any H x W (18 x 18 here, not a multiple of 4)."""
    trainer = make_trainer(cls, kwargs, input_shape=(18, 18, 3))
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=ce_loss())
    x = tf.random.uniform([4, 18, 18, 3])
    y = tf.constant([0, 1, 2, 3])
    result = trainer.joint_step(x, y, seed=tf.constant([1, 2]))
    assert result.x_adv.shape == x.shape and np.isfinite(float(result.loss))


# ---------------------------------------------------------------------------- adt-train
def test_cli_flags_reach_the_constructor():
    import trainers.train  # noqa: F401  (defines adt-train's flags)
    from adt_tf.training.resolve import resolve
    from trainers import cli

    argv = ["adt-train", "--method=adt_imp_am", "--max_train_examples=64",
            "--method_params=generator_width=4,generator_blocks=2,generator_lr=1e-3,"
            "generator_decay_steps=100,z_dim=8,tau=0.5,encoder_lr=3e-4,encoder_width=2"]
    cli.FLAGS(argv)
    try:
        config = cli.config_from_flags()
    finally:
        cli.FLAGS.unparse_flags()
    # The run's record: every argument of the constructor, typed, the defaults filled.
    params = resolve(config).config.method.params
    assert params == {"entropy_weight": 1.0, "generator_width": 4, "generator_blocks": 2,
                      "generator_lr": 1e-3, "generator_decay_steps": 100, "z_dim": 8,
                      "tau": 0.5, "encoder_lr": 3e-4, "encoder_width": 2, "outer_loss": "ce",
                      "trades_beta": 6.0}


@pytest.mark.slow
def test_training_run_saves_the_adversary_networks(tmp_path):
    from adt_tf.training.config import RunConfig
    from adt_tf.training.run import run_training

    workdir = str(tmp_path / "run")
    report = run_training(RunConfig.from_flags(
        workdir=workdir, method="adt_imp_am", model_params={"width": 4}, epochs=1,
        batch_size=16, max_train_examples=32, eval_examples=16, lr=0.01, verbose=0,
        method_params={"generator_width": 4, "generator_blocks": 1, "z_dim": 8,
                       "encoder_width": 4}))
    assert 0 <= report["clean_accuracy"] <= 1
    generator = keras.saving.load_model(f"{workdir}/generator.keras")
    encoder = keras.saving.load_model(f"{workdir}/encoder.keras")
    assert generator.z_dim == 8 and encoder.z_dim == 8 and generator.image_shape == (32, 32, 3)


@pytest.mark.parametrize("cls,kwargs", METHOD_KWARGS)
def test_trades_outer_loss_joint_step_matches_two_tapes(cls, kwargs):
    """ADT with the TRADES loss (paper Sec. 5.4): theta descends CE(f(x)) + beta KL(f(x) ||
    f(x_adv)); the adversary ascends beta KL + R through the same gradient reversal."""
    from adt_tf.numerics.losses import kl_divergence

    lr_c, lr_g, beta = 0.05, 0.02, 2.0
    extra = {"tau": 0.0} if cls is ADTImpAM else {}
    trainer = make_trainer(cls, dict(kwargs, **extra), outer_loss="trades", trades_beta=beta)
    compile_kw = {"generator_optimizer": keras.optimizers.SGD(lr_g)}
    if cls is ADTImpAM:
        compile_kw["encoder_optimizer"] = keras.optimizers.SGD(lr_g)
    trainer.compile(optimizer=keras.optimizers.SGD(lr_c), loss=ce_loss(), **compile_kw)
    x, y = (tf.constant(a) for a in make_tiny_images(16))
    seed = tf.constant([7, 8])
    classifier = trainer.classifier
    classifier_vars = classifier.trainable_variables
    adversary_vars = [v for net in adversary_networks(trainer) for v in net.trainable_variables]
    before_c, before_a = snapshot(classifier_vars), snapshot(adversary_vars)

    features = trainer.generator_inputs(x, y)
    with tf.GradientTape() as tape:
        sample = trainer.sample_adversary(x, features, seed, training=True)
        clean = classifier(x, training=True)
        adv_objective = beta * tf.reduce_mean(kl_divergence(clean, classifier(
            sample.x_adv, training=True))) + sample.regularizer
    grads_a = tape.gradient(adv_objective, adversary_vars)
    x_adv = tf.stop_gradient(sample.x_adv)
    with tf.GradientTape() as tape:
        clean = classifier(x, training=True)
        loss = mean_ce(clean, y) + beta * tf.reduce_mean(
            kl_divergence(clean, classifier(x_adv, training=True)))
    grads_c = tape.gradient(loss, classifier_vars)

    result = trainer.joint_step(x, y, seed=seed)
    np.testing.assert_allclose(result.loss, loss, rtol=1e-5)
    for v, old, g in zip(classifier_vars, before_c, grads_c):
        np.testing.assert_allclose(v.numpy(), old - lr_c * g.numpy(), rtol=1e-4, atol=1e-6)
    assert any(np.abs(g.numpy()).max() > 0 for g in grads_a)
    for v, old, g in zip(adversary_vars, before_a, grads_a):
        np.testing.assert_allclose(v.numpy(), old + lr_g * g.numpy(), rtol=1e-4, atol=1e-6)
    assert trainer.get_config()["outer_loss"] == "trades"
    assert cls.from_config(trainer.get_config()).trades_beta == beta


def test_unknown_outer_loss_is_rejected():
    with pytest.raises(ValueError, match="Unknown outer loss 'hinge'; known: ce, trades"):
        make_trainer(ADTExpAM, {}, outer_loss="hinge")
    with pytest.raises(ValueError, match="trades_beta must be a finite number >= 0, got -1"):
        make_trainer(ADTImpAM, {"z_dim": 8}, trades_beta=-1)
