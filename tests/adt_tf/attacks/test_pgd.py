"""PGD and FGSM (adt_tf.attacks.pgd, adt_tf.attacks.fgsm) on the trained tiny classifier."""

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.attacks import fgsm, get_attack, pgd
from adt_tf.numerics.losses import per_example_ce

EPS = 8 / 255


#: The images of the `trained` fixture (conftest.py) these tests attack.
TRAINED_EXAMPLES = 128


def mean_loss(model, x, y):
    return float(tf.reduce_mean(per_example_ce(model(x, training=False), y)))


def test_pgd_inside_ball_and_stronger_than_clean_and_fgsm(trained):
    model, x, y = trained
    x_pgd = pgd(model, x, y, EPS, steps=10, seed=3)
    x_fgsm = fgsm(model, x, y, EPS)
    for x_adv in (x_pgd, x_fgsm):
        assert x_adv.shape == x.shape and x_adv.dtype == tf.float32
        assert np.abs(x_adv.numpy() - x).max() <= EPS + 1e-6
        assert x_adv.numpy().min() >= 0 and x_adv.numpy().max() <= 1
    clean, l_fgsm, l_pgd = (mean_loss(model, a, y) for a in (x, x_fgsm, x_pgd))
    assert l_pgd >= clean and l_pgd >= l_fgsm - 1e-4, (clean, l_fgsm, l_pgd)
    acc = [np.mean(np.argmax(model(a), -1) == y) for a in (x, x_fgsm, x_pgd)]
    assert acc[2] <= acc[1] <= acc[0] and acc[2] < acc[0]


def test_pgd_keeps_per_example_best_over_restarts(trained):
    model, x, y = trained
    one = pgd(model, x, y, EPS, steps=5, restarts=1, seed=4)
    three = pgd(model, x, y, EPS, steps=5, restarts=3, seed=4)  # restart 0 is `one`'s run
    hit = lambda a: np.argmax(model(a), -1) != y  # noqa: E731
    assert np.all(hit(three)[hit(one)])  # never loses an adversarial example


def test_pgd_is_seeded_and_graph_compatible(trained):
    model, x, y = trained
    a = pgd(model, x[:16], y[:16], EPS, steps=3, seed=5)
    b = tf.function(lambda xb, yb: pgd(model, xb, yb, EPS, steps=3, seed=5))(x[:16], y[:16])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_margin_loss_and_targeted_and_momentum_run(trained):
    model, x, y = trained
    target = (y + 1) % 10
    x_t = pgd(model, x, target, EPS, steps=10, targeted=True, seed=1)

    def target_log_prob(a):
        return float(tf.reduce_mean(-per_example_ce(model(a), target)))

    assert target_log_prob(x_t) > target_log_prob(x) + 0.1  # moved towards the targets
    for kwargs in ({"loss": "margin"}, {"momentum": 1.0}):
        x_adv = pgd(model, x, y, EPS, steps=5, **kwargs)
        assert np.abs(x_adv.numpy() - x).max() <= EPS + 1e-6


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        pgd(None, tf.zeros([1, 4, 4, 1]), tf.zeros([1], tf.int32), EPS, steps=0)
    with pytest.raises(ValueError, match="did you mean"):
        fgsm(None, tf.zeros([1, 4, 4, 1]), tf.zeros([1], tf.int32), 8)
    with pytest.raises(ValueError, match="Unknown attack 'deepfool'; known: apgd, apgd_t, cw"):
        get_attack("deepfool")
    with pytest.raises(ValueError, match="attack loss"):
        pgd(None, tf.zeros([1, 4, 4, 1]), tf.zeros([1], tf.int32), EPS, loss="hinge")


@pytest.mark.parametrize("attack", ["pgd", "mim", "cw"])
def test_transfer_uses_the_last_iterate_on_the_source(attack):
    """The ADT authors' evaluate_attacks.py (`_pgd_blackbox`, `_mim_blackbox`, `_cw_blackbox`)
    evaluates the target on the last iterate of the attack on the source. On a source whose
    iterates oscillate, the best iterate against the source is another point."""
    from tests.adt_tf.methods.test_baseline_properties import _oscillating_classifier

    eps, size, steps = 8 / 255, 2 / 255, 6
    source = _oscillating_classifier(2.3 / size)
    target = _oscillating_classifier(1.0)
    x = np.full((3, 4, 4, 1), 0.5, np.float32) + np.float32([0.0, 1e-3, -2e-3])[:, None,
                                                                              None, None]
    y = np.zeros(3, np.int32)
    settings = dict(steps=steps, step_size=size, seed=3)
    out = get_attack("transfer")(target, x, y, eps, source=source, attack=attack, **settings)
    last = get_attack(attack)(source, x, y, eps, best_iterate=False, **settings)
    best = get_attack(attack)(source, x, y, eps, **settings)  # the white-box default
    np.testing.assert_array_equal(out.numpy(), last.numpy())
    assert np.abs(best.numpy() - last.numpy()).max() > 1e-3  # the case tells them apart
    # The best iterate stays a named variant.
    again = get_attack("transfer")(target, x, y, eps, source=source, attack=attack,
                                   best_iterate=True, **settings)
    np.testing.assert_array_equal(again.numpy(), best.numpy())


def test_mim_starts_at_a_random_point_by_default_as_the_authors(trained):
    """evaluate_attacks.py's `--random` defaults to True: `_mim_whitebox` starts at
    X + U(-eps, eps)."""
    model, x, y = trained
    x, y = x[:8], y[:8]
    mim = get_attack("mim")
    default = mim(model, x, y, EPS, steps=1, seed=4).numpy()
    np.testing.assert_array_equal(default, mim(model, x, y, EPS, steps=1, seed=4,
                                               random_start=True).numpy())
    assert np.abs(default - mim(model, x, y, EPS, steps=1, seed=4,
                                random_start=False).numpy()).max() > 0
