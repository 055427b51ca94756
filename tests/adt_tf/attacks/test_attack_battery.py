"""Every registered attack: inside the ball and [0, 1], shape and dtype kept, seeded, graph
mode, and stronger than no attack on a trained model; orderings between attacks; the
pieces with a closed form (DLR, sample picking); APGD's and Square's schedules are in
test_autoattack_parity.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.attacks import (
    ATTACKS,
    apgd,
    exp_am,
    fea_attack,
    fgsm,
    pgd,
    square,
)
from adt_tf.attacks.exp import pick_per_example
from adt_tf.evaluation import fit_amortized_adversary
from adt_tf.numerics.losses import dlr_loss, targeted_dlr_loss
from tests.helpers import attack_settings, run_python, slow_cases, trained_tiny_classifier

EPS = 8 / 255


#: The images of the `trained` fixture (conftest.py) these tests attack.
TRAINED_EXAMPLES = 64


@pytest.fixture(scope="module")
def adversaries():
    """EXP-AM and IMP-AM generators trained against the tiny classifier (100 steps at a
    learning rate of 1e-2, since the reference's 2e-4 barely moves the reference's
    small-initialised output layer in so few steps; the attacks' machinery is what is
    tested). Seeded here: a module fixture is built before the per-test seeding, so it would
    otherwise depend on whatever test ran before it in the process."""
    keras.utils.set_random_seed(0)
    model, x, y = trained_tiny_classifier()
    return {kind: fit_amortized_adversary(model, x, y, EPS, kind=kind, train_steps=100,
                                          train_batch_size=32, generator_width=8,
                                          generator_blocks=1, generator_lr=1e-2, seed=1)
            for kind in ("exp_am", "imp_am")}


def small_settings(model, adversaries=None):
    """`attack_settings` with an independently trained transfer source (another seed)."""
    return attack_settings(adversaries, source=trained_tiny_classifier(seed=2)[0])


RANDOMISED = ("pgd", "cw", "spsa", "square", "apgd", "apgd_t", "exp", "fea", "exp_am",
              "imp_am")


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False), -1) == y))


def robust_accuracy(model, x_adv, x, y):
    """Inputs classified correctly both clean and attacked: an attack can only lower it
    (a kept draw of a misclassified input may be classified correctly, which can raise
    plain accuracy)."""
    correct = lambda v: np.argmax(model(v, training=False), -1) == y  # noqa: E731
    return float(np.mean(correct(x) & correct(x_adv)))


def test_every_registered_attack_has_a_test_setting(trained):
    assert set(small_settings(trained[0])) == set(ATTACKS)


def sign_noise_accuracy(model, x, y, draws: int = 5) -> float:
    """Robust accuracy under random +-epsilon sign noise (the mean over a few seeded draws): what an
    attack that does nothing clever would reach."""
    rng = np.random.default_rng(0)
    return float(np.mean([robust_accuracy(
        model, np.clip(x + EPS * rng.choice([-1.0, 1.0], x.shape), 0, 1).astype(np.float32),
        x, y) for _ in range(draws)]))


@pytest.fixture(scope="module")
def noise_accuracy(trained):
    return sign_noise_accuracy(*trained)


@pytest.mark.parametrize("name", slow_cases(sorted(ATTACKS), {"spsa", "fab_t", "fea", "imp_am",
                                                            "apgd", "apgd_t"}))
def test_attack_in_ball_seeded_and_beats_random_sign_noise(trained, adversaries, noise_accuracy,
                                                           name):
    model, x, y = trained
    kwargs = small_settings(model, adversaries)[name]
    run = tf.function(lambda xb, yb, s: ATTACKS[name](model, xb, yb, EPS, seed=s, **kwargs))
    seed = tf.constant([7, 0], tf.int32)
    a = run(tf.constant(x), tf.constant(y), seed)
    assert a.shape == x.shape and a.dtype == tf.float32
    a = a.numpy()
    assert np.abs(a - x).max() <= EPS + 1e-6, name
    assert a.min() >= 0.0 and a.max() <= 1.0
    b = run(tf.constant(x), tf.constant(y), seed).numpy()
    np.testing.assert_array_equal(a, b)  # same seed, same result
    if name in RANDOMISED:
        c = run(tf.constant(x), tf.constant(y), tf.constant([8, 0], tf.int32)).numpy()
        assert np.abs(a - c).max() > 0, f"{name} ignores its seed"
    # Below what random sign noise of the same epsilon leaves (not merely below clean).
    attacked = robust_accuracy(model, a, x, y)
    assert attacked < noise_accuracy, (name, attacked, noise_accuracy)


# Four attacks (one per family of loops) in the fast set, every attack in the slow one.
FAST_FOUR = ("exp", "fab_t", "pgd", "square")


@pytest.mark.parametrize("name", slow_cases(sorted(ATTACKS), fast=FAST_FOUR))
def test_attack_on_a_batch_of_one(trained, adversaries, name):
    """A batch of one input traced with its static shape (what the evaluation does when one
    input is left for an attack: the robustness benchmark's stage 3 met it): loops whose
    tensors broadcast against the batch of 1 must keep the static shape."""
    model, x, y = trained
    kwargs = small_settings(model, adversaries)[name]
    run = tf.function(lambda xb, yb, s: ATTACKS[name](model, xb, yb, EPS, seed=s, **kwargs))
    a = run(tf.constant(x[:1]), tf.constant(y[:1]), tf.constant([3, 0], tf.int32)).numpy()
    assert a.shape == x[:1].shape
    assert np.all(np.abs(a - x[:1]) <= EPS + 1e-6) and a.min() >= 0.0 and a.max() <= 1.0


def test_margin_pgd_reaches_the_closed_form_minimal_distance_of_a_linear_model():
    """Two classes, logits W x + b: the smallest L-infinity perturbation that flips an input
    is d = (z_y - z_o) / ||w_y - w_o||_1 (inputs far from the pixel bounds). C&W's margin PGD
    must flip every input at 1.02 d and none at 0.98 d (nothing can)."""
    from adt_tf.attacks import cw

    rng = np.random.default_rng(0)
    dim = 4 * 4 * 3
    w = rng.normal(0, 1, (dim, 2))
    x = rng.uniform(0.45, 0.55, (8, 4, 4, 3)).astype(np.float32)
    b = np.array([-0.5 * (w[:, 0] - w[:, 1]).sum(), 0.0])  # the boundary passes through 0.5
    z = x.reshape(8, -1).astype(np.float64) @ w + b
    y = np.argmax(z, 1).astype(np.int32)

    def linear(images, training=False):
        flat = tf.reshape(images, [tf.shape(images)[0], -1])
        return flat @ tf.constant(w, tf.float32) + tf.constant(b, tf.float32)

    distance = np.abs(z[:, 0] - z[:, 1]) / np.abs(w[:, 0] - w[:, 1]).sum()
    assert 1e-3 < distance.min() and distance.max() < 0.05  # the pixel bounds never bind
    for i in range(len(x)):
        for factor, flipped in ((1.02, True), (0.98, False)):
            x_adv = cw(linear, x[i:i + 1], y[i:i + 1], float(factor * distance[i]), steps=30,
                       seed=i)
            assert (np.argmax(linear(x_adv).numpy(), 1)[0] != y[i]) == flipped, (i, factor)


@pytest.mark.slow
def test_pgd100_at_most_pgd20_at_most_fgsm(trained):
    model, x, y = trained
    broken = {}
    for steps in (20, 100):
        x_adv = pgd(model, x, y, EPS, steps=steps, seed=3)
        broken[steps] = np.argmax(model(x_adv), -1) != y
    broken["fgsm"] = np.argmax(model(fgsm(model, x, y, EPS)), -1) != y
    # Same seed: PGD-100's first 20 iterates are PGD-20's, and the best one is kept.
    assert np.all(broken[100][broken[20]])
    assert broken[100].mean() >= broken[20].mean() >= broken["fgsm"].mean()


def test_apgd_ce_at_least_as_strong_as_pgd20(trained):
    model, x, y = trained
    pgd_acc = accuracy(model, pgd(model, x, y, EPS, steps=20, seed=1), y)
    apgd_acc = accuracy(model, apgd(model, x, y, EPS, steps=100, seed=1), y)
    assert apgd_acc <= pgd_acc, (apgd_acc, pgd_acc)


def test_dlr_losses_match_numpy():
    z = np.array([[3.0, 1.0, 2.0, 0.5], [0.0, 4.0, 1.0, -1.0]], np.float32)
    y = np.array([0, 2])
    target = np.array([2, 1])
    ranked = -np.sort(-z, axis=1)
    other = np.array([2.0, 4.0])
    expected = -(z[[0, 1], y] - other) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
    np.testing.assert_allclose(dlr_loss(z, y), expected, rtol=1e-6)
    expected_t = -(z[[0, 1], y] - z[[0, 1], target]) / (
        ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12)
    np.testing.assert_allclose(targeted_dlr_loss(z, y, target), expected_t, rtol=1e-6)
    # Invariant to shifting and scaling the logits (why AutoAttack uses it).
    np.testing.assert_allclose(dlr_loss(10 * z + 3, y), expected, rtol=1e-5)


def test_pick_per_example_prefers_any_fooling_sample():
    # Two examples (labels 0, 1), three candidates each; row k * 2 + b.
    logits = tf.constant([[5.0, 0.0], [0.0, 5.0],    # candidate 0: both correct
                          [0.0, 1.0], [0.0, 9.0],    # candidate 1: example 0 fooled
                          [4.0, 0.0], [0.0, 0.1]])   # candidate 2: example 1 has high loss
    candidates = tf.reshape(tf.range(6, dtype=tf.float32), [6, 1])
    picked = pick_per_example(candidates, logits, tf.constant([0, 1]), 3).numpy().ravel()
    np.testing.assert_array_equal(picked, [2.0, 5.0])


@pytest.mark.slow
def test_fea_more_targets_never_break_fewer(trained):
    model, x, y = trained
    hit = {}
    for n in (1, 3):
        x_adv = fea_attack(model, x, y, EPS, steps=10, num_targets=n, seed=2)
        hit[n] = np.argmax(model(x_adv), -1) != y
    # The targets' order depends on the seed only: 3 targets start with the 1-target run.
    assert np.all(hit[3][hit[1]]) and hit[3].sum() >= hit[1].sum()


def test_fea_without_other_classes_returns_the_input(trained):
    model, x, y = trained
    same = y == y[0]
    out = fea_attack(model, x[same], y[same], EPS, steps=3, num_targets=5)
    np.testing.assert_array_equal(out, x[same])


def test_fea_targets_are_drawn_as_the_reference_draws_them():
    """With replacement (the reference's `random_(0, num_other_label_img)`): each round an
    independent uniform draw among the input's other-class pool images; without: distinct
    ones. Same-class images are never targets."""
    from adt_tf.attacks.fea import round_target, target_order

    y = tf.constant([0, 1])
    pool_y = tf.constant([0, 1, 2, 0, 3, 1, 2])
    order, available = target_order(y, pool_y, tf.constant([3, 4]))
    np.testing.assert_array_equal(available, [5, 5])
    seed = tf.constant([5, 6])
    draws = np.stack([round_target(order, available, t, True, seed).numpy()
                      for t in range(2000)])
    for b, label in enumerate((0, 1)):
        others = np.flatnonzero(pool_y.numpy() != label)
        assert set(draws[:, b]) == set(others)
        counts = np.bincount(draws[:, b], minlength=7)[others]
        assert np.all(np.abs(counts - 400) < 5 * np.sqrt(400 * 0.8))  # uniform over 5
    distinct = np.stack([round_target(order, available, t, False, seed).numpy()
                         for t in range(5)])
    for b, label in enumerate((0, 1)):
        assert sorted(distinct[:, b]) == sorted(np.flatnonzero(pool_y.numpy() != label))


def _zero_gradient_feature_model(clean):
    """Features with no gradient (so steps never move x) and logits that flip the class as
    soon as the input leaves the clean point by more than 1/1000: only a random start can
    break it."""
    import keras

    inputs = keras.Input(clean.shape[1:])
    flat = keras.layers.Flatten()(inputs)
    feats = keras.layers.Lambda(tf.stop_gradient, name="penultimate")(flat)
    reference = tf.constant(clean.reshape(len(clean), -1))
    logits = keras.layers.Lambda(lambda f: tf.stack(
        [1.0 - 1000.0 * tf.reduce_max(tf.abs(f - reference[:1]), -1), tf.zeros_like(f[:, 0])],
        -1))(feats)
    return keras.Model(inputs, logits)


def test_fea_random_start_is_the_references_and_is_checked(trained):
    _, x, _ = trained
    clean = x[:1]
    model = _zero_gradient_feature_model(clean)
    y = np.zeros(1, np.int32)
    pool, pool_y = x[1:4], np.ones(3, np.int32)
    kwargs = dict(steps=3, num_targets=2, target_images=pool, target_labels=pool_y, seed=1)
    assert np.argmax(model(clean), -1)[0] == 0
    from_x = fea_attack(model, clean, y, EPS, random_start=False, **kwargs)
    np.testing.assert_array_equal(from_x, clean)  # no gradient: never moves, never broken
    started = fea_attack(model, clean, y, EPS, **kwargs)  # the default: the reference's
    assert np.argmax(model(started), -1)[0] == 1  # the random start itself broke it
    assert 0 < np.abs(started - clean).max() <= EPS + 1e-6


def test_spsa_defaults_are_the_references_queries_and_start(trained):
    """spsa.py: samples_per_draw=256 evaluations per estimate (128 +- pairs), the start at
    the clean input, query points not clipped to [0, 1]."""
    import keras

    model, x, y = trained
    rows = tf.Variable(0, dtype=tf.int64)
    lowest = tf.Variable(1.0)

    class Counting(keras.layers.Layer):
        def call(self, v):
            rows.assign_add(tf.cast(tf.shape(v)[0], tf.int64))
            lowest.assign(tf.minimum(lowest, tf.reduce_min(v)))
            return v

    inputs = keras.Input(x.shape[1:])
    counted = keras.Model(inputs, model(Counting()(inputs)))
    xb = x[:2].copy()
    xb[:, 0, 0, 0] = 0.0  # a pixel at 0: an unclipped query goes below it
    out = ATTACKS["spsa"](counted, xb, y[:2], EPS, steps=1, lr=1e-9, early_stop=False,
                          sample_chunk=32)
    # one estimate of 2 x 128 queries per input, plus the checks at the start and after it
    assert int(rows.numpy()) == 2 * 128 * 2 + 2 + 2
    np.testing.assert_allclose(out, xb, atol=1e-6)  # a 1e-9 step from the clean input
    assert float(lowest.numpy()) < 0.0
    moved = ATTACKS["spsa"](model, xb, y[:2], EPS, steps=1, lr=1e-9, early_stop=False,
                            random_start=True)
    assert np.abs(moved - xb).max() > EPS / 2  # the variant's uniform start


@pytest.mark.parametrize(("name", "clipped"), [("spsa", False), ("spsa512", True)])
def test_suite_spsa_clips_its_queries_as_documented(trained, name, clipped):
    """The paper suite's SPSA queries x' +- 0.001 v unclipped, as the authors' spsa.py
    (`eval_points = xs_adv + sigma * pert`); full's spsa512 clips them to [0, 1]."""
    import keras

    from adt_tf.evaluation.suites import resolve_suite

    model, x, y = trained
    lowest, highest = tf.Variable(1.0), tf.Variable(0.0)

    class Range(keras.layers.Layer):
        def call(self, v):
            lowest.assign(tf.minimum(lowest, tf.reduce_min(v)))
            highest.assign(tf.maximum(highest, tf.reduce_max(v)))
            return v

    inputs = keras.Input(x.shape[1:])
    seen = keras.Model(inputs, model(Range()(inputs)))
    xb = x[:2].copy()
    xb[:, 0, 0, 0], xb[:, 0, 0, 1] = 0.0, 1.0  # pixels at both ends of the range
    spec = resolve_suite(name, {name: {"steps": 1, "lr": 1e-9}})[0]
    ATTACKS[spec.attack](seen, xb, y[:2], EPS, seed=0, **dict(spec.params, early_stop=False))
    low, high = float(lowest.numpy()), float(highest.numpy())
    if clipped:
        assert low >= 0.0 and high <= 1.0, (name, low, high)
    else:
        assert low < 0.0 and high > 1.0, (name, low, high)


@pytest.mark.slow
def test_square_works_under_xla(trained):
    model, x, y = trained
    out = tf.function(lambda a, b: square(model, a, b, EPS, num_queries=5, seed=1),
                      jit_compile=True)(x[:8], y[:8]).numpy()
    assert np.abs(out - x[:8]).max() <= EPS + 1e-6


def test_bad_attack_arguments(trained):
    model, x, y = trained
    for fn, kwargs, match in [
        (apgd, {"steps": 0}, "steps"), (square, {"num_queries": 0}, "num_queries"),
        (ATTACKS["spsa"], {"samples": 0}, "samples"), (fea_attack, {"num_targets": 0},
                                                      "num_targets"),
        (ATTACKS["exp"], {"steps": 0}, "steps"), (ATTACKS["apgd_t"], {"num_targets": 0},
                                                   "num_targets"),
    ]:
        with pytest.raises(ValueError, match=match):
            fn(model, x[:2], y[:2], EPS, **kwargs)
    for eps in (0.0, -0.1, 8.0):
        with pytest.raises(ValueError, match="epsilon"):
            square(model, x[:2], y[:2], eps)
    with pytest.raises(ValueError, match="source"):
        ATTACKS["transfer"](model, x[:2], y[:2], EPS, source=None)


def test_amortized_attacks_sample_a_generator_fitted_above_them(trained):
    """The attacks only sample; fitting (training a method's generator) is the evaluation's."""
    model, x, y = trained
    adversary = fit_amortized_adversary(model, x[:16], y[:16], EPS, kind="exp_am",
                                        train_steps=2, train_batch_size=8, generator_width=2,
                                        generator_blocks=0)
    x_adv = exp_am(model, x[:16], y[:16], EPS, adversary=adversary, check_samples=2)
    assert np.abs(x_adv.numpy() - x[:16]).max() <= EPS + 1e-6
    with pytest.raises(ValueError, match="adt_tf.evaluation.fit_amortized_adversary"):
        exp_am(model, x[:2], y[:2], EPS)
    with pytest.raises(ValueError, match="train_steps"):
        fit_amortized_adversary(model, x[:2], y[:2], EPS, train_steps=0)


@pytest.mark.slow
def test_attacks_import_nothing_of_training():
    """Layering: no attack module imports the training methods (nor the evaluation)."""

    code = ("import sys, adt_tf.attacks; "
            "print(sorted(m for m in sys.modules if m.startswith(('adt_tf.methods', "
            "'adt_tf.training', 'adt_tf.evaluation'))))")
    out = run_python(code, check=True).stdout.strip().splitlines()[-1]
    assert out == "[]", out


@pytest.mark.parametrize("name", slow_cases(["pgd20", "mim20", "cw30", "transfer_mim20"],
                                            {"mim20", "cw30", "transfer_mim20"}))
def test_paper_battery_starts_at_random_points_as_the_authors(trained, name):
    """The authors' evaluation starts PGD, MIM and C&W from a uniform point of the ball: two
    seeds must give two different adversarial batches."""
    from adt_tf.evaluation.suites import CATALOGUE

    model, x, y = trained
    spec = CATALOGUE[name]
    extra = {"source": model} if "source_model" in spec.needs else {}
    fn = ATTACKS[spec.attack]
    a = fn(model, x[:8], y[:8], EPS, seed=1, **spec.params, **extra).numpy()
    b = fn(model, x[:8], y[:8], EPS, seed=2, **spec.params, **extra).numpy()
    assert np.abs(a - b).max() > 0, name
