"""Every registered attack: inside the ball and [0, 1], shape and dtype kept, seeded, graph
mode, and stronger than no attack on a trained model; orderings between attacks; the
pieces with a closed form (DLR, sample picking); APGD's and Square's schedules are in
test_autoattack_parity.py."""

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
from adt_tf.attacks.common import dlr_loss, targeted_dlr_loss
from adt_tf.attacks.distributional import pick_per_example
from adt_tf.evaluation import fit_amortized_adversary
from tests.helpers import attack_settings, trained_tiny_classifier

EPS = 8 / 255


@pytest.fixture(scope="module")
def trained():
    model, x, y = trained_tiny_classifier()
    return model, x[:64], y[:64]


@pytest.fixture(scope="module")
def adversaries():
    """EXP-AM and IMP-AM generators, briefly trained against the tiny classifier (15 steps:
    at a learning rate of 1e-2, since the reference's 2e-4 barely moves the reference's
    small-initialised output layer in 15 steps; the attacks' machinery is what is tested)."""
    model, x, y = trained_tiny_classifier()
    return {kind: fit_amortized_adversary(model, x, y, EPS, kind=kind, train_steps=15,
                                          train_batch_size=32, generator_width=4,
                                          generator_blocks=1, generator_lr=1e-2, seed=1)
            for kind in ("exp_am", "imp_am")}


def small_settings(model, adversaries=None):
    """`attack_settings` with an independently trained transfer source (another seed)."""
    return attack_settings(adversaries, source=trained_tiny_classifier(seed=2)[0])


RANDOMISED = ("pgd", "cw", "spsa", "square", "apgd", "apgd_t", "exp", "fea", "exp_am",
              "imp_am")


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False), -1) == y))


def test_every_registered_attack_has_a_test_setting(trained):
    assert set(small_settings(trained[0])) == set(ATTACKS)


def sign_noise_accuracy(model, x, y, draws: int = 5) -> float:
    """Accuracy under random +-epsilon sign noise (the mean over a few seeded draws): what an
    attack that does nothing clever would reach."""
    rng = np.random.default_rng(0)
    return float(np.mean([accuracy(model, np.clip(x + EPS * rng.choice([-1.0, 1.0], x.shape),
                                                  0, 1).astype(np.float32), y)
                          for _ in range(draws)]))


@pytest.fixture(scope="module")
def noise_accuracy(trained):
    return sign_noise_accuracy(*trained)


@pytest.mark.parametrize("name", sorted(ATTACKS))
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
    assert accuracy(model, a, y) < noise_accuracy, (name, accuracy(model, a, y), noise_accuracy)


# Five attacks (one per family of loops) in the fast set, every attack in the slow one.
FAST_FIVE = ("apgd", "exp", "fab_t", "pgd", "square")


@pytest.mark.parametrize("name", [n if n in FAST_FIVE else pytest.param(
    n, marks=pytest.mark.slow) for n in sorted(ATTACKS)])
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


def test_attacks_import_nothing_of_training():
    """Layering: no attack module imports the training methods (nor the evaluation)."""
    import subprocess
    import sys

    code = ("import sys, adt_tf.attacks; "
            "print(sorted(m for m in sys.modules if m.startswith(('adt_tf.methods', "
            "'adt_tf.training', 'adt_tf.evaluation'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "[]", out


@pytest.mark.parametrize("name", ["pgd20", "mim20", "cw30", "transfer_mim20"])
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
