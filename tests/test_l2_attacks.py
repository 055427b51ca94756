"""Attacks under an L2 ball (issue 18): every attack of `L2_ATTACKS` keeps ||delta||_2 <=
epsilon and [0, 1], is seeded, beats clean accuracy on a trained model, and PGD-L2 gains
from more steps; the L-infinity-only attacks refuse an L2 ball with a clear error."""

import numpy as np
import pytest

from adt_tf.attacks import ATTACKS, L2_ATTACKS
from adt_tf.threat import L2Ball
from tests.helpers import attack_settings, trained_tiny_classifier

EPS = 0.5


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False).numpy(), -1) == y))


@pytest.fixture(scope="module")
def trained():
    return trained_tiny_classifier()


@pytest.fixture(scope="module")
def source():
    return trained_tiny_classifier(seed=2)[0]


@pytest.mark.parametrize("name", sorted(L2_ATTACKS))
def test_l2_attack_stays_in_the_ball_is_seeded_and_beats_clean(trained, source, name):
    model, x, y = trained
    x, y = x[:64], y[:64]
    ball = L2Ball(EPS)
    params = attack_settings(source=source)[name]
    first = ATTACKS[name](model, x, y, ball, seed=3, **params).numpy()
    again = ATTACKS[name](model, x, y, ball, seed=3, **params).numpy()
    np.testing.assert_array_equal(first, again)
    norms = np.linalg.norm((first - x).reshape(len(x), -1), axis=1)
    assert norms.max() <= EPS * (1 + 1e-5) and first.min() >= 0 and first.max() <= 1
    assert accuracy(model, first, y) < accuracy(model, x, y)


def test_pgd_l2_gains_from_steps_and_is_weaker_at_a_smaller_radius(trained):
    from adt_tf.attacks import pgd

    model, x, y = trained
    acc = {(eps, steps): accuracy(model, pgd(model, x, y, L2Ball(eps), steps=steps,
                                             seed=0).numpy(), y)
           for eps in (0.25, 0.5) for steps in (2, 20)}
    assert acc[(0.5, 20)] <= acc[(0.5, 2)] and acc[(0.25, 20)] <= acc[(0.25, 2)]
    assert acc[(0.5, 20)] <= acc[(0.25, 20)]
    # the L2 ball of radius 0.5 holds perturbations the 8/255 L-infinity ball does not
    # (and vice versa): the attacks differ
    linf = pgd(model, x[:8], y[:8], 8 / 255, steps=5, seed=0).numpy()
    l2 = pgd(model, x[:8], y[:8], L2Ball(0.5), steps=5, seed=0).numpy()
    assert not np.allclose(linf, l2)


@pytest.mark.parametrize("name", sorted(set(ATTACKS) - L2_ATTACKS))
def test_linf_only_attacks_refuse_an_l2_ball(trained, name):
    model, x, y = trained
    params = dict(attack_settings()[name])
    params = {k: v for k, v in params.items() if k != "adversary"}
    if name in ("exp_am", "imp_am"):
        params["adversary"] = object()
    with pytest.raises(ValueError, match="has no l2 version: it is defined for the "
                                         "L-infinity ball only"):
        ATTACKS[name](model, x[:4], y[:4], L2Ball(EPS), seed=0, **params)
