"""Method-specific properties of the baselines, and their argument checks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.methods import ALP, FGSMAT, PGDAT, TRADES, ADTExp, FastAT, FeaScatter
from adt_tf.methods.feascatter import feature_scattering_perturbation
from adt_tf.methods.trades import trades_perturbation
from adt_tf.numerics.losses import (
    kl_divergence,
    logit_pairing_penalty,
    loss_and_grad,
    per_example_ce,
)
from adt_tf.numerics.optimal_transport import sinkhorn_distance
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier

EPS = 8 / 255


@pytest.fixture(scope="module")
def batch():
    x, y = make_tiny_images(32)
    return tf.constant(x), tf.constant(y)


def compiled(trainer):
    trainer.compile(optimizer="sgd", loss=ce_loss())
    return trainer


def in_ball(x_adv, x):
    return tf.reduce_max(tf.abs(x_adv - x)) <= EPS + 1e-6 and tf.reduce_min(x_adv) >= 0


def linf(a, b):
    return float(tf.reduce_max(tf.abs(a - b)))


def test_pgd_at_examples_lie_in_the_ball_and_raise_the_loss(batch):
    x, y = batch
    trainer = PGDAT(tiny_classifier(), epsilon=EPS, attack_steps=5, seed=0)
    x_adv, aux = trainer.perturb(x, y)
    assert aux == {}
    assert bool(trainer.threat.contains(x_adv, x))
    assert linf(x_adv, x) > EPS / 2  # it moved
    clean = per_example_ce(trainer.classifier(x), y)
    adv = per_example_ce(trainer.classifier(x_adv), y)
    assert float(tf.reduce_mean(adv)) > float(tf.reduce_mean(clean))
    assert float(tf.reduce_mean(tf.cast(adv >= clean, tf.float32))) > 0.9


def _oscillating_classifier(frequency):
    """Logits (cos(frequency * mean(x)), 0): along a signed step every pixel moves alike, so
    large steps overshoot the loss maximum and the PGD iterates oscillate."""
    import keras

    inputs = keras.Input((4, 4, 1))
    logits = keras.layers.Lambda(lambda x: tf.stack(
        [tf.cos(frequency * tf.reduce_mean(x, axis=[1, 2, 3])), tf.zeros(tf.shape(x)[:1])],
        axis=-1))(inputs)
    return keras.Model(inputs, logits)


@pytest.mark.parametrize("cls", [PGDAT, ALP])
def test_pgd_at_and_alp_train_on_the_last_pgd_iterate_not_the_best(cls):
    from adt_tf.attacks import pgd
    from adt_tf.core.noise import RecordedNoise

    steps, size = 6, 2 / 255
    frequency = 2.3 / size  # each step moves frequency * mean(x) by 2.3 rad: overshoots
    x = np.full((3, 4, 4, 1), 0.5, np.float32) + np.float32([0.0, 1e-3, -2e-3])[:, None,
                                                                              None, None]
    y = np.zeros(3, np.int32)
    start = np.float32([0.3, -0.7, 0.5])[:, None] * EPS * np.ones((3, 16), np.float32)
    classifier = _oscillating_classifier(frequency)
    trainer = cls(classifier, epsilon=EPS, attack_steps=steps, attack_step_size=size, seed=0)
    trainer.noise_source = RecordedNoise(uniform=start)
    x_train, _ = trainer.perturb(tf.constant(x), tf.constant(y))

    # Madry et al.'s LinfPGDAttack.perturb, written out: the last iterate is returned.
    expected = np.clip(x + start.reshape(x.shape), 0, 1)
    for _ in range(steps):
        m = expected.mean(axis=(1, 2, 3), keepdims=True)
        # d CE / d x_i = sigmoid(-z0) * sin(frequency m) * frequency / D: its sign
        expected = np.clip(expected + size * np.sign(np.sin(frequency * m)), x - EPS, x + EPS)
        expected = np.clip(expected, 0, 1)
    np.testing.assert_allclose(x_train.numpy(), expected, atol=1e-6)

    # The evaluation's PGD (per-example best iterate) picks other points on this case.
    best = pgd(classifier, x, y, EPS, steps=steps, step_size=size, seed=0,
               noise=RecordedNoise(uniform=start)).numpy()
    loss = lambda v: per_example_ce(classifier(v), y).numpy()  # noqa: E731
    assert np.all(loss(best) >= loss(expected) - 1e-6)
    assert np.any(loss(best) > loss(expected) + 1e-3)
    assert np.abs(best - expected).max() > 1e-3


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batchnorm"])
def test_fast_at_uses_a_random_start_and_a_step_of_one_and_a_quarter_eps(batch, batch_norm):
    """With BatchNorm, the FGSM gradient is the training-mode one (the batch's statistics),
    and its forward moves the running statistics, as train_fgsm.py's model.train() does."""
    x, y = batch
    trainer = FastAT(tiny_classifier(batch_norm=batch_norm), epsilon=EPS, seed=0)
    assert trainer.step_size == pytest.approx(1.25 * EPS)
    first, _ = trainer.perturb(x, y)
    second, _ = trainer.perturb(x, y)
    assert bool(trainer.threat.contains(first, x))
    assert linf(first, second) > 0  # fresh random start each step
    # From a recorded start: the step is x0 + 1.25 eps sign(grad at x0), projected (an
    # independent recomputation; a share of pixels on the border depended on how many
    # gradients the untrained model zeroes).
    from adt_tf.core.noise import RecordedNoise

    u = np.random.default_rng(7).uniform(-EPS, EPS, x.shape).astype(np.float32)
    trainer.noise_source = RecordedNoise(uniform=u)
    import keras

    norms = [layer for layer in trainer.classifier.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == (4 if batch_norm else 0)
    if batch_norm:
        bn1 = trainer.classifier.get_layer("bn1")
        before = bn1.moving_mean.numpy().copy()
    x_adv, _ = trainer.perturb(x, y)
    x0 = tf.clip_by_value(x + u, 0, 1)
    if batch_norm:  # one training-mode forward at x0: 0.99 moving + 0.01 batch mean
        stem = keras.Model(trainer.classifier.inputs, bn1.input)
        mean = np.mean(stem(x0, training=True).numpy(), axis=(0, 1, 2))
        np.testing.assert_allclose(bn1.moving_mean.numpy(), 0.99 * before + 0.01 * mean,
                                   rtol=1e-5, atol=1e-7)
    _, grad, _ = loss_and_grad(trainer.classifier, x0, y, per_example_ce, training=True)
    expected = tf.clip_by_value(x + tf.clip_by_value(x0 + 1.25 * EPS * tf.sign(grad) - x,
                                                     -EPS, EPS), 0, 1)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    moved = np.abs(grad.numpy()) > 0
    assert moved.mean() > 0.05  # the case tests the step, not only the start
    at_border = np.abs(np.abs(x_adv.numpy() - x.numpy()) - EPS) < 1e-6
    interior = (x.numpy() > EPS) & (x.numpy() < 1 - EPS)
    # a step of 1.25 eps from any start inside the ball ends outside it when the start lies
    # within 0.25 eps of the side it steps towards or beyond: those pixels end on the border
    beyond = interior & moved & (np.sign(grad.numpy()) * u > -0.25 * EPS + 1e-6)
    assert at_border[beyond].all()


def test_fgsm_at_replaces_the_first_half_by_least_likely_examples(batch):
    x, y = batch
    trainer = compiled(FGSMAT(tiny_classifier(), epsilon=EPS, seed=0))
    x_train, _ = trainer.perturb(x, y)
    half = x.shape[0] // 2
    np.testing.assert_array_equal(x_train[half:], x[half:])
    assert bool(trainer.threat.contains(x_train, x))
    # The step descends the least-likely class's loss: x - eps sign(grad), an independent
    # recomputation (a lower mean loss after the step held only to first order, and failed
    # for some untrained models).
    logits = trainer.classifier(x[:half])
    least = tf.argmin(logits, -1, output_type=tf.int32)
    with tf.GradientTape() as tape:
        clean = x[:half]
        tape.watch(clean)
        loss = tf.reduce_sum(per_example_ce(trainer.classifier(clean), least))
    grad = tape.gradient(loss, clean)
    expected = tf.clip_by_value(clean - EPS * tf.sign(grad), 0, 1)
    np.testing.assert_allclose(x_train[:half], expected, atol=1e-6)
    # Every example whose gradient reaches an interior pixel moves by the full eps there (an
    # untrained model can zero an example's whole gradient, and sign(0) = 0 leaves it where it
    # was: CI saw one such example in sixteen).
    interior = (clean > EPS) & (clean < 1 - EPS)
    reached = tf.reduce_any((tf.abs(grad) > 0) & interior, [1, 2, 3])
    assert float(tf.reduce_mean(tf.cast(reached, tf.float32))) > 0.5
    step = tf.reduce_max(tf.abs(x_train[:half] - x[:half]), [1, 2, 3])
    np.testing.assert_allclose(tf.boolean_mask(step, reached), EPS, rtol=1e-5)


def test_fgsm_at_weighs_clean_and_adversarial_parts_as_kurakin(batch):
    x, y = batch
    trainer = compiled(FGSMAT(tiny_classifier(), epsilon=EPS, adv_fraction=0.25,
                              adv_weight=0.3, seed=0))
    x_train, _ = trainer.perturb(x, y)
    loss, _ = trainer.outer_loss(x, x_train, y, None)
    ce = per_example_ce(trainer.classifier(x_train), y).numpy()
    m, k = len(ce), round(0.25 * len(ce))
    expected = (ce[k:].sum() + 0.3 * ce[:k].sum()) / ((m - k) + 0.3 * k)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_fgsm_at_random_epsilon_stays_within_the_budget(batch):
    x, y = batch
    trainer = FGSMAT(tiny_classifier(), epsilon=EPS, adv_fraction=1.0, random_epsilon=True,
                     seed=0)
    x_train, _ = trainer.perturb(x, y)
    sizes = tf.reduce_max(tf.abs(x_train - x), [1, 2, 3]).numpy()
    assert sizes.max() <= EPS + 1e-6
    assert len(np.unique(np.round(sizes, 6))) > len(sizes) // 2  # one eps per example


def test_alp_penalty_vanishes_when_logits_agree(batch):
    x, y = batch
    z = tf.random.stateless_normal([8, 10], seed=[1, 2])
    np.testing.assert_allclose(logit_pairing_penalty(z, z), 0.0)
    np.testing.assert_allclose(logit_pairing_penalty(z, z + 1.0), 1.0, rtol=1e-6)
    # Through the trainer: with x_adv = x the ALP loss is the clean cross-entropy alone.
    # (An untrained classifier's logits barely move between inputs: a large weight makes the
    # penalty a visible share of the loss.)
    trainer = compiled(ALP(tiny_classifier(), epsilon=EPS, alp_weight=1000.0, seed=0))
    loss, _ = trainer.outer_loss(x, x, y, None)
    ce = tf.reduce_mean(per_example_ce(trainer(x, training=True), y))
    np.testing.assert_allclose(float(loss), float(ce), rtol=1e-6)
    # With x_adv far from x (so that the penalty is not lost in rounding): the loss
    # recomputed from its formula, the penalty term included.
    x_adv = 1.0 - x
    shifted, _ = trainer.outer_loss(x, x_adv, y, None)
    clean, adv = trainer(x, training=True), trainer(x_adv, training=True)
    penalty = tf.reduce_mean(tf.reduce_mean(tf.square(clean - adv), axis=-1))
    want = (0.5 * tf.reduce_mean(per_example_ce(clean, y))
            + 0.5 * tf.reduce_mean(per_example_ce(adv, y)) + 1000.0 * penalty)
    assert 1000.0 * float(penalty) > 1e-3 * float(want)
    np.testing.assert_allclose(float(shifted), float(want), rtol=1e-6)


def test_alp_runs_one_joined_training_forward_as_the_reference(batch):
    """The ALP authors' train.py: logits = model_fn(concat([images, adv_examples]),
    is_training=True), split in two. BatchNorm normalises the 2B batch with its own
    statistics and its running mean moves once per step, towards the mixed batch's mean."""
    import keras

    from adt_tf.core.noise import RecordedNoise

    x, y = batch
    x, y = x[:8, :4, :4, :], y[:8]
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(inputs)  # BN sees pixels
    classifier = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    draw = np.random.default_rng(0).uniform(-EPS, EPS, (8, 48)).astype(np.float32)
    trainer = compiled(ALP(classifier, epsilon=EPS, attack_steps=2, alp_weight=0.5, seed=0))
    trainer.noise_source = RecordedNoise(uniform=draw)
    x_adv, _ = trainer.perturb(x, y)  # inference mode: the statistics do not move
    trainer.noise_source = RecordedNoise(uniform=draw)
    trainer.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    joined = tf.concat([x, x_adv], axis=0)
    expected = 0.1 * np.mean(joined.numpy(), axis=(0, 1, 2))  # 0.9 * 0 + 0.1 * batch mean
    np.testing.assert_allclose(classifier.get_layer("bn").moving_mean.numpy(), expected,
                               rtol=1e-5, atol=1e-7)
    # The loss: the split logits of the joined forward (BatchNorm on the 2B batch's
    # statistics; the two halves' own statistics give other logits).
    loss, adv_logits = trainer.outer_loss(x, x_adv, y, None)
    clean, adv = tf.split(classifier(joined, training=True), 2)
    want = (0.5 * tf.reduce_mean(per_example_ce(clean, y)) + 0.5 * tf.reduce_mean(
        per_example_ce(adv, y)) + 0.5 * tf.reduce_mean(logit_pairing_penalty(clean, adv)))
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
    np.testing.assert_allclose(adv_logits, adv, rtol=1e-6, atol=1e-6)
    separate = classifier(x_adv, training=True)
    assert np.abs(separate.numpy() - adv.numpy()).max() > 1e-3


def test_trades_inner_loop_raises_the_kl(batch):
    """Ascent: each step raises the KL, and the first step is start + size * sign(grad KL),
    the gradient taken independently here (comparing the KL after the steps along +sign and
    -sign held only to first order and failed for some untrained models)."""
    from adt_tf.core.noise import DEFAULT_NOISE, as_seed
    from adt_tf.threat import LinfBall

    x, _ = batch
    classifier = tiny_classifier()
    size = EPS / 16
    kls = [float(trades_perturbation(classifier, x, EPS, steps=k, step_size=size, seed=5)[1])
           for k in (1, 2, 3)]  # the KL at the start of the last step
    # the KL at the Gaussian start (sd 0.001) is ~1e-8 and can round below 0 in float32
    assert kls[0] > -1e-6 and kls[0] < kls[1] < kls[2]
    x_adv, _ = trades_perturbation(classifier, x, EPS, steps=5, step_size=EPS / 4, seed=5)
    assert bool(in_ball(x_adv, x))
    clean = classifier(x)
    start = x + 0.001 * DEFAULT_NOISE.normal(tf.shape(x), as_seed(5))
    with tf.GradientTape() as tape:
        tape.watch(start)
        kl = tf.reduce_sum(kl_divergence(clean, classifier(start)))
    grad = tape.gradient(kl, start)
    ball = LinfBall(EPS)
    up = ball.project(start + size * tf.sign(grad), x)
    down = ball.project(start - size * tf.sign(grad), x)
    one_step, _ = trades_perturbation(classifier, x, EPS, steps=1, step_size=size, seed=5)
    np.testing.assert_allclose(one_step, up, atol=1e-6)  # the step is the ascent step
    assert np.abs(up - down).max() > 0  # the gradient is not zero: the step is tested


def test_trades_moves_batchnorm_statistics_three_times_per_step_as_the_reference(batch):
    """trades.py's outer loss calls model(x_natural), model(x_adv), model(x_natural) in
    training mode: BatchNorm's running mean moves three times per step, in that order."""
    import keras

    from adt_tf.core.noise import RecordedNoise

    x, y = batch
    x = x[:8, :4, :4, :]
    y = y[:8]
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(inputs)  # BN sees pixels
    classifier = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
    draw = np.random.default_rng(0).standard_normal((8, 48)).astype(np.float32)
    x_adv, _ = trades_perturbation(classifier, x, EPS, steps=2, noise=RecordedNoise(normal=draw))
    trainer = compiled(TRADES(classifier, epsilon=EPS, attack_steps=2, seed=0))
    trainer.noise_source = RecordedNoise(normal=draw)
    trainer.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    mean_x = np.mean(x.numpy(), axis=(0, 1, 2))
    mean_adv = np.mean(x_adv.numpy(), axis=(0, 1, 2))
    expected = 0.0
    for batch_mean in (mean_x, mean_adv, mean_x):  # moving <- 0.9 moving + 0.1 batch mean
        expected = 0.9 * expected + 0.1 * batch_mean
    np.testing.assert_allclose(classifier.get_layer("bn").moving_mean.numpy(), expected,
                               rtol=1e-5, atol=1e-7)


def test_trades_first_gradient_is_taken_at_the_unclipped_gaussian_start(batch):
    """trades.py starts at x_natural + 0.001 * randn without clamping; only later iterates
    are clipped to [0, 1]."""
    import keras

    x, _ = batch
    x = x.numpy()[:4].copy()
    x[:, 0, 0, :] = 0.0
    seen = tf.Variable(1.0)

    class Lowest(keras.layers.Layer):
        def call(self, v):
            seen.assign(tf.minimum(seen, tf.reduce_min(v)))
            return v

    inner = tiny_classifier()
    inputs = keras.Input(x.shape[1:])
    classifier = keras.Model(inputs, inner(Lowest()(inputs)))
    x_adv, _ = trades_perturbation(classifier, x, EPS, steps=2, seed=3)
    assert float(seen.numpy()) < 0.0  # a pixel of the start below 0 reached the model
    assert float(tf.reduce_min(x_adv)) >= 0.0  # the iterates are clipped


@pytest.mark.slow
def test_feascatter_step_raises_the_transport_distance(batch):
    """The step ascends the transport distance: it is higher after the step than at the
    random start, and the step is start + size * sign(grad), the gradient taken independently
    here (comparing the steps along +sign and -sign held only to first order)."""
    from adt_tf.threat import LinfBall

    x, _ = batch
    classifier = tiny_classifier()
    seed, size = tf.constant([3, 4]), EPS / 8
    x_adv, at_start = feature_scattering_perturbation(
        classifier, x, EPS, step_size=size, seed=seed, sinkhorn_tolerance=0.0)
    clean = classifier(x)
    ball = LinfBall(EPS)
    start = ball.random_start(x, seed)
    with tf.GradientTape() as tape:
        tape.watch(start)
        d = sinkhorn_distance(clean, classifier(start), tolerance=0.0)
    grad = tape.gradient(d, start)
    up = ball.project(start + size * tf.sign(grad), x)
    down = ball.project(start - size * tf.sign(grad), x)
    np.testing.assert_allclose(x_adv, up, atol=1e-6)  # the step is the ascent step
    distance = lambda v: float(sinkhorn_distance(clean, classifier(v), tolerance=0.0))  # noqa
    assert bool(in_ball(x_adv, x))
    assert distance(x_adv) > float(at_start) > 0
    assert np.abs(up - down).max() > 0  # the gradient is not zero: the step is tested


def test_feascatter_outer_loss_uses_its_label_smoothing(batch):
    x, y = batch
    trainer = compiled(FeaScatter(tiny_classifier(), epsilon=EPS, label_smoothing=0.5,
                                  seed=0))
    loss, logits = trainer.outer_loss(x, x, y, None)
    log_p = tf.nn.log_softmax(logits).numpy()
    onehot = np.eye(10)[y.numpy()]
    target = 0.5 * onehot + 0.5 / 9 * (1 - onehot)
    np.testing.assert_allclose(float(loss), -(target * log_p).sum(1).mean(), rtol=1e-5)


BAD_INPUTS = [
    (TRADES, {"trades_beta": -1.0}, -1.0),
    (ADTExp, {"trades_beta": -0.5}, -0.5),
    (ADTExp, {"outer_loss": "hinge"}, "hinge"),
    (PGDAT, {"attack_steps": 0}, 0),
    (ALP, {"attack_steps": 0}, 0),
    (TRADES, {"attack_steps": 0}, 0),
    (FeaScatter, {"attack_steps": 0}, 0),
    (PGDAT, {"attack_step_size": 0.0}, 0.0),
    (ALP, {"attack_step_size": -0.01}, -0.01),
    (TRADES, {"attack_step_size": 0.0}, 0.0),
    (FastAT, {"attack_step_size": -1.0}, -1.0),
    (FeaScatter, {"attack_step_size": 0.0}, 0.0),
    (ALP, {"alp_weight": -2.0}, -2.0),
    (FGSMAT, {"adv_fraction": 1.5}, 1.5),
    (FGSMAT, {"adv_weight": -0.3}, -0.3),
    (FeaScatter, {"label_smoothing": 1.0}, 1.0),
    (FeaScatter, {"sinkhorn_reg": 0.0}, 0.0),
    (FeaScatter, {"sinkhorn_iterations": 0}, 0),
    (PGDAT, {"epsilon": 8.0}, 8.0),
]


@pytest.mark.parametrize(("cls", "kwargs", "value"), BAD_INPUTS,
                         ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in BAD_INPUTS])
def test_bad_input_is_a_value_error_naming_the_value(cls, kwargs, value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        cls(tiny_classifier(), **kwargs)


def test_check_method_arguments_raises_the_constructors_errors_without_a_model():
    from adt_tf.methods import METHODS, check_method_arguments

    names = {cls: name for name, cls in METHODS.items()}
    for cls, kwargs, value in BAD_INPUTS:
        with pytest.raises(ValueError, match=re.escape(repr(value))):
            check_method_arguments(names[cls], **{"epsilon": EPS, **kwargs})
    with pytest.raises(ValueError, match="epsilon"):
        check_method_arguments("adt_exp", epsilon=2.0)
    with pytest.raises(ValueError, match="Unknown method 'adt'"):
        check_method_arguments("adt", epsilon=EPS)
    for name in METHODS:  # the defaults pass, for every method and both norms
        check_method_arguments(name, epsilon=EPS, norm="linf", seed=0)
    check_method_arguments("adt_exp", epsilon=0.5, norm="l2", entropy_weight=0.1)


def test_none_step_size_means_the_documented_default():
    assert PGDAT(tiny_classifier(), attack_step_size=None).attack_step_size == 2 / 255
    assert TRADES(tiny_classifier(), attack_step_size=None).attack_step_size == 0.007
