"""Attacks under an L2 ball: every attack of `attacks_for("l2")` keeps ||delta||_2 <=
epsilon and [0, 1], is seeded, beats clean accuracy on a trained model, and PGD-L2 gains
from more steps; the L-infinity-only attacks refuse an L2 ball with a clear error, and an
amortised adversary fitted for one ball refuses to attack in another."""

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.attacks import ATTACKS, attacks_for
from adt_tf.threat import L2Ball
from tests.helpers import attack_settings, slow_cases, trained_tiny_classifier

EPS = 0.5


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False).numpy(), -1) == y))


@pytest.fixture(scope="module")
def source():
    return trained_tiny_classifier(seed=2)[0]


@pytest.fixture(scope="module")
def adversaries(trained):
    """EXP-AM and IMP-AM generators fitted under the L2 ball (briefly, as in
    test_attack_battery: the machinery is what is tested)."""
    from adt_tf.evaluation import fit_amortized_adversary

    model, x, y = trained
    return {kind: fit_amortized_adversary(model, x, y, L2Ball(EPS), kind=kind, train_steps=40,
                                          train_batch_size=32, generator_width=4,
                                          generator_blocks=1, generator_lr=1e-2, seed=1)
            for kind in ("exp_am", "imp_am")}


@pytest.mark.parametrize("name", slow_cases(sorted(attacks_for("l2")), {"transfer", "square"}))
def test_l2_attack_stays_in_the_ball_is_seeded_and_beats_clean(trained, source, adversaries,
                                                               name):
    model, x, y = trained
    x, y = x[:64], y[:64]
    ball = L2Ball(EPS)
    params = attack_settings(adversaries, source=source)[name]
    first = ATTACKS[name](model, x, y, ball, seed=3, **params).numpy()
    again = ATTACKS[name](model, x, y, ball, seed=3, **params).numpy()
    np.testing.assert_array_equal(first, again)
    norms = np.linalg.norm((first - x).reshape(len(x), -1), axis=1)
    assert norms.max() <= EPS * (1 + 1e-5) and first.min() >= 0 and first.max() <= 1
    # Robust accuracy (correct clean and attacked) below clean accuracy: the attack breaks
    # some correctly classified inputs. (Plain accuracy on the outputs can exceed the clean
    # one: a draw kept for a misclassified input may happen to be classified correctly.)
    clean_ok = np.argmax(model(x, training=False).numpy(), -1) == y
    adv_ok = np.argmax(model(first, training=False).numpy(), -1) == y
    assert np.mean(clean_ok & adv_ok) < np.mean(clean_ok), name


@pytest.mark.slow
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


@pytest.mark.parametrize("name", sorted(set(ATTACKS) - set(attacks_for("l2"))))
def test_linf_only_attacks_refuse_an_l2_ball(trained, name):
    model, x, y = trained
    params = dict(attack_settings()[name])
    params = {k: v for k, v in params.items() if k != "adversary"}
    if name in ("exp_am", "imp_am"):
        params["adversary"] = object()
    with pytest.raises(ValueError, match="has no l2 version: it is defined for the "
                                         "L-infinity ball only"):
        ATTACKS[name](model, x[:4], y[:4], L2Ball(EPS), seed=0, **params)


def test_an_amortised_adversary_attacks_only_in_the_ball_it_was_fitted_for(trained,
                                                                           adversaries):
    from adt_tf.attacks import exp_am, imp_am

    model, x, y = trained
    assert adversaries["imp_am"].norm == "l2" and adversaries["exp_am"].epsilon == EPS
    for attack, kind in ((exp_am, "exp_am"), (imp_am, "imp_am")):
        with pytest.raises(ValueError, match=r"trained for L2Ball\(epsilon=0.5\), the attack "
                                             r"is asked for LinfBall"):
            attack(model, x[:4], y[:4], 8 / 255, adversary=adversaries[kind])
        with pytest.raises(ValueError, match="L2Ball"):
            attack(model, x[:4], y[:4], L2Ball(0.25), adversary=adversaries[kind])


@pytest.mark.slow
def test_l2_evaluation_runs_the_l2_suite_and_refuses_linf_only_ones(trained):
    from adt_tf import data as data_lib
    from adt_tf.evaluation import EvaluationResult, evaluate

    model, x, y = trained
    x, y = x[:48], y[:48]
    result = evaluate(model, x, y, threat=L2Ball(EPS), suite="paper_l2", verbose=0,
                      overrides={"pgd100": {"steps": 10},
                                 "exp": {"steps": 3, "samples": 2, "check_samples": 2},
                                 **{kind: {"train_steps": 5, "generator_width": 4,
                                           "generator_blocks": 1, "check_samples": 2}
                                    for kind in ("exp_am", "imp_am")}})
    ran = [a for a in result.attacks if a.accuracy is not None]
    assert {a.name for a in ran} == {"fgsm", "pgd20", "pgd100", "mim20", "cw30", "exp",
                                     "exp_am", "imp_am"}
    assert result.robust_accuracy <= min(a.accuracy for a in ran) < result.clean_accuracy
    assert all(a.params["norm"] == "l2" for a in ran) and result.norm == "l2"
    assert "L2 epsilon = 0.5" in result.to_markdown()
    assert EvaluationResult.from_dict(result.to_dict()).norm == "l2"
    # The same PGD-20 as the attack called directly with the L2 ball, on what the evaluation
    # gives it: the clean-correct inputs, in one batch seeded [seed, first index] = [0, 0].
    from adt_tf.attacks import pgd

    clean = result.per_example["clean"]
    direct = pgd(model, x[clean], y[clean], L2Ball(EPS), steps=20,
                 seed=tf.constant([0, 0], tf.int32))
    survived = np.argmax(model(direct), -1) == y[clean]
    np.testing.assert_array_equal(result.per_example["pgd20"][clean], survived)
    assert not np.any(result.per_example["pgd20"][~clean])
    with pytest.raises(ValueError, match=r"'paper' has attacks without an l2 version "
                                         r"\(fea, spsa\)"):
        evaluate(model, x, y, threat=L2Ball(EPS), suite="paper", verbose=0)
    assert data_lib.dataset_info("cifar10").default_epsilon("l2") == 0.5
    with pytest.raises(ValueError, match="has no default l2 epsilon; give --epsilon"):
        data_lib.dataset_info("svhn_cropped").default_epsilon("l2")
