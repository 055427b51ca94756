"""bench/overfitting_verdict.py: the robust-overfitting verdict in words, from finished runs'
summaries (with and without their per-input results), and the paired error it rests on."""

from __future__ import annotations

import numpy as np
import pytest

from bench import overfitting_verdict as ov
from bench.kit.stats import paired_se


def _summary(key, seed, ema, best_aa, last_aa, best_epoch=22):
    point = lambda aa: {"clean": 0.45, "pgd20": aa + 0.03, "autoattack": aa,  # noqa: E731
                        "num_examples": 500}
    return {"method": key, "seed": seed, "ema": ema, "history": [],
            "last": point(last_aa), "best": {"epoch": best_epoch, **point(best_aa)}}


def _bits(v):
    return "".join("1" if b else "0" for b in v)


def _run(key, seed, ema, best, last):
    """A summary whose accuracies are those of its per-input results."""
    return dict(_summary(key, seed, ema, best.mean(), last.mean()),
                robust={"best": _bits(best), "last": _bits(last)})


def _robust(*ranges):
    v = np.zeros(500, bool)
    for a, b in ranges:
        v[a:b] = True
    return v


def test_paired_error_is_the_error_of_the_per_input_differences_under_no_difference():
    """paired_se against sqrt(mean(D^2) / n) of explicit per-input differences, McNemar's
    sqrt(b + c) / n for one pair, and no error when both score the same inputs."""
    rng = np.random.default_rng(3)
    best = rng.random(500) < 0.25
    last = np.where(rng.random(500) < 0.8, best, rng.random(500) < 0.2)
    diff = best.astype(float) - last.astype(float)
    b, c = int(np.sum(best & ~last)), int(np.sum(~best & last))
    assert paired_se(diff) == pytest.approx(100 * np.sqrt(b + c) / 500, rel=1e-12)
    assert paired_se(diff) == pytest.approx(100 * np.sqrt(np.mean(diff**2) / 500), rel=1e-12)
    assert paired_se(np.zeros(500)) == 0.0


def test_the_seeds_shared_inputs_are_counted_not_assumed_independent():
    """Two seeds whose per-input gaps are the same carry no more information than one: the
    error of their mean is one run's (0.77 points for 15 inputs of 500), not 1/sqrt(2) of
    it; two seeds on disjoint inputs do halve the variance."""
    last = _robust((0, 100))
    best = _robust((0, 115))
    same = [_run("pgd_at", s, False, best, last) for s in (0, 1)]
    assert ov.gap_error(same) == pytest.approx(100 * np.sqrt(15) / 500, rel=1e-12)
    other = _run("pgd_at", 1, False, _robust((0, 100), (200, 215)), last)
    assert ov.gap_error([same[0], other]) == pytest.approx(
        100 * np.sqrt(30 * 0.25) / 500, rel=1e-12)
    # best_error: the same for two methods' best checkpoints
    lead = [_run("awp_at", s, False, best, best) for s in (0, 1)]
    base = [_run("pgd_at", s, False, last, last) for s in (0, 1)]
    assert ov.best_error(lead, base) == pytest.approx(100 * np.sqrt(15) / 500, rel=1e-12)
    # without a run's per-input results, or with results on other inputs: no paired error
    assert ov.best_error(lead, [_summary("pgd_at", 0, False, 0.2, 0.2)]) is None
    short = dict(base[0], robust={"best": "1" * 100, "last": "1" * 100})
    assert ov.best_error(lead, [short]) is None


def test_verdict_compares_each_method_with_at_pgd_without_per_input_results():
    found = {("pgd_at", s, False): _summary("pgd_at", s, False, 0.26, 0.255) for s in (0, 1)}
    found.update({("adt_exp", s, False): _summary("adt_exp", s, False, 0.25, 0.25)
                  for s in (0, 1)})
    found[("pgd_at", 0, True)] = _summary("pgd_at", 0, True, 0.24, 0.23)
    text = ov.verdict(found, ["pgd_at", "adt_exp"], 500)
    assert ("AT_PGD: best - last AutoAttack +0.5 points (seeds +0.5, +0.5): no robust "
            "overfitting beyond the seed spread and the sampling error (the test: every "
            "seed's gap above 0 and their mean above twice the error of a difference of two "
            "runs, 2 x 2.7 points, unpaired)") in text
    assert ("ADT_EXP against AT_PGD: the gap differs by -0.5 points, within the seed spread "
            "and twice the sampling error (2 x 2.7 points, unpaired).") in text
    assert "AT_PGD with EMA (seed 0): best - last +1.0 points; without it +0.5." in text
    assert "last checkpoint 23.0% with EMA against 25.5% without" in text
    assert ("Highest mean at its best checkpoint (none is shown best): AT_PGD, AutoAttack "
            "26.0% (seeds 26.0, 26.0), 1.0 points above ADT_EXP, within") in text
    assert len(text.splitlines()) == 5  # one line per statement


def test_verdict_says_which_method_overfits_less_only_against_one_that_overfits():
    # AT_PGD overfits by 10 points on both seeds, AWP-AT by 1: less, beyond spread and error
    found = {("pgd_at", s, False): _summary("pgd_at", s, False, 0.30 + s / 100, 0.20 + s / 100)
             for s in (0, 1)}
    found.update({("awp_at", s, False): _summary("awp_at", s, False, 0.40, 0.39)
                  for s in (0, 1)})
    text = ov.verdict(found, ["pgd_at", "awp_at"], 500)
    assert "AT_PGD: best - last AutoAttack +10.0 points (seeds +10.0, +10.0): robust " \
           "overfitting beyond the seed spread" in text
    assert ("AWP-AT against AT_PGD: the gap differs by -9.0 points, so AWP-AT overfits less "
            "than AT_PGD beyond the seed spread and twice the sampling error") in text
    assert ("Best at its best checkpoint: AWP-AT, AutoAttack 40.0% (seeds 40.0, 40.0), 9.5 "
            "points above AT_PGD, beyond") in text
    assert "Order: AWP-AT 40.0% > AT_PGD 30.5%." in text
    # a gap below 0 beyond the error against an AT_PGD that does not overfit itself: no
    # "overfits less"; one seed: not compared at all
    found = {("pgd_at", s, False): _summary("pgd_at", s, False, 0.255, 0.25) for s in (0, 1)}
    found.update({("adt_exp", s, False): _summary("adt_exp", s, False, 0.20, 0.26)
                  for s in (0, 1)})
    text = ov.verdict(found, ["pgd_at", "adt_exp"], 500)
    assert ("ADT_EXP against AT_PGD: the gap differs by -6.5 points, beyond the seed spread "
            "and twice the sampling error (2 x 2.7 points, unpaired); but the larger gap, "
            "AT_PGD's, is not itself robust overfitting beyond its error, so this shows no "
            "difference in robust overfitting (ADT_EXP's best checkpoints score below its "
            "last).") in text
    assert "overfits less" not in text
    assert ("ADT_EXP: best - last AutoAttack -6.0 points (seeds -6.0, -6.0): no robust "
            "overfitting") in text
    assert ("its best checkpoint scores below its last beyond that error: the validation "
            "split chose epochs that AutoAttack rates lower") in text
    del found[("adt_exp", 1, False)]
    text = ov.verdict(found, ["pgd_at", "adt_exp"], 500)
    assert ("ADT_EXP against AT_PGD: the gap differs by -6.5 points; not enough seeds to "
            "compare (1 and 2: a comparison needs two each).") in text
    assert ("ADT_EXP: best - last AutoAttack -6.0 points (one seed, no spread yet): no "
            "robust overfitting beyond the sampling error (the test: its gap above twice the "
            "error of a difference of two runs") in text


def test_best_checkpoint_ranking_uses_the_paired_error():
    """A 3-point lead at the best checkpoint from 15 inputs robust only under the leader is
    beyond twice the paired error (0.77 points) though within the unpaired bound (2 x 2.7);
    with one seed of a method it is not yet compared; without per-input results, unpaired."""
    base, lead = _robust((0, 100)), _robust((0, 115))
    found = {("pgd_at", s, False): _run("pgd_at", s, False, base, base) for s in (0, 1)}
    found.update({("awp_at", s, False): _run("awp_at", s, False, lead, lead) for s in (0, 1)})
    text = ov.verdict(found, ["pgd_at", "awp_at"], 500)
    assert ("Best at its best checkpoint: AWP-AT, AutoAttack 23.0% (seeds 23.0, 23.0), "
            "3.0 points above AT_PGD, beyond the seed spread and twice the sampling error "
            "(2 x 0.8 points, paired)") in text
    one = {k: v for k, v in found.items() if k != ("pgd_at", 1, False)}
    text = ov.verdict(one, ["pgd_at", "awp_at"], 500)
    assert ("Highest so far at its best checkpoint: AWP-AT, AutoAttack 23.0% (seeds 23.0, "
            "23.0), 3.0 points above AT_PGD, not yet comparable (2 and 1 seeds: a comparison "
            "needs two each; sampling error 2 x 0.8 points, paired)") in text
    found[("pgd_at", 1, False)] = _summary("pgd_at", 1, False, 0.20, 0.20)  # no bits
    text = ov.verdict(found, ["pgd_at", "awp_at"], 500)
    assert ("Highest mean at its best checkpoint (none is shown best): AWP-AT, AutoAttack "
            "23.0% (seeds 23.0, 23.0), 3.0 points above AT_PGD, within the seed spread and "
            "twice the sampling error (2 x 2.7 points, unpaired)") in text


def test_verdict_says_whether_ema_removes_reduces_or_keeps_a_gap():
    """AT_PGD overfits (a 6-point gap from 30 inputs robust only at the best checkpoint, two
    seeds). An EMA run with no gap removes it; one with half of it reduces it; one with all
    of it does not remove it; a raw method without a gap has none to remove."""
    last, best = _robust((0, 100)), _robust((0, 130))
    found = {("pgd_at", s, False): _run("pgd_at", s, False, best, last) for s in (0, 1)}
    assert ov.gap_error([found[("pgd_at", 0, False)]]) == pytest.approx(
        100 * np.sqrt(30) / 500)  # 1.1 points
    found[("pgd_at", 0, True)] = _run("pgd_at", 0, True, best, best)
    text = ov.verdict(found, ["pgd_at"], 500)
    assert "AT_PGD: best - last AutoAttack +6.0 points (seeds +6.0, +6.0): robust " \
           "overfitting" in text
    assert ("AT_PGD with EMA (seed 0): best - last +0.0 points, within twice its paired "
            "error (2 x 0.0); without it +6.0.") in text
    assert ("(the last checkpoints differ by +6.0 points, beyond twice their paired error, "
            "2 x 1.1). EMA's gap is smaller than the raw run's beyond twice their paired "
            "error (2 x 1.1), and not above its own: EMA removes the gap here.") in text
    found[("pgd_at", 0, True)] = _run("pgd_at", 0, True, _robust((0, 115)), last)
    text = ov.verdict(found, ["pgd_at"], 500)
    assert "best - last +3.0 points, above twice its paired error (2 x 0.8)" in text
    assert "though still above its own: EMA reduces the gap here." in text
    found[("pgd_at", 0, True)] = _run("pgd_at", 0, True, best, last)
    text = ov.verdict(found, ["pgd_at"], 500)
    assert "best - last +6.0 points, above twice its paired error (2 x 1.1)" in text
    assert ("EMA's gap is not smaller than the raw run's beyond twice their paired error "
            "(2 x 0.0): EMA does not remove the gap here.") in text
    found[("pgd_at", 0, True)] = _run("pgd_at", 0, True, last, best)  # -6: below, not within
    text = ov.verdict(found, ["pgd_at"], 500)
    assert "best - last -6.0 points, below twice its paired error (2 x 1.1)" in text
    found = {("pgd_at", s, False): _run("pgd_at", s, False, last, last) for s in (0, 1)}
    found[("pgd_at", 0, True)] = _run("pgd_at", 0, True, last, last)
    text = ov.verdict(found, ["pgd_at"], 500)
    assert ("The raw runs show no robust overfitting beyond their error: no gap for EMA to "
            "remove.") in text


def test_an_ema_run_on_another_trajectory_than_its_raw_run_gives_no_conclusion_on_ema():
    """EMA does not change training, so an EMA run's training accuracy is its raw run's at
    every epoch when both ran on one machine; where it differs (another machine rounds the
    same seed differently) the two runs are two trajectories, and the verdict says so rather
    than crediting EMA with their difference."""
    last, best = _robust((0, 100)), _robust((0, 130))
    found = {("pgd_at", s, False): _run("pgd_at", s, False, best, last) for s in (0, 1)}
    raw_history = [{"accuracy": a} for a in (0.1, 0.2, 0.3)]
    for s in (0, 1):
        found[("pgd_at", s, False)]["history"] = raw_history
    found[("pgd_at", 0, True)] = dict(_run("pgd_at", 0, True, best, best),
                                      history=[{"accuracy": a} for a in (0.1, 0.2, 0.3)])
    assert ov.diverged_at(found[("pgd_at", 0, True)], found[("pgd_at", 0, False)]) is None
    assert "EMA removes the gap here." in ov.verdict(found, ["pgd_at"], 500)
    found[("pgd_at", 0, True)]["history"] = [{"accuracy": a} for a in (0.1, 0.21, 0.3)]
    assert ov.diverged_at(found[("pgd_at", 0, True)], found[("pgd_at", 0, False)]) == 2
    text = ov.verdict(found, ["pgd_at"], 500)
    assert "EMA removes" not in text and "remove the gap" not in text
    assert ("But its training left the raw seed-0 run's path at epoch 2" in text
            and "no conclusion on EMA from the raw seed-0 run (the raw seeds' last "
                "checkpoints: 20.0-20.0%)." in text)
    # Its own raw weights at the last epoch (same trajectory): 100 robust where EMA has 130.
    e = found[("pgd_at", 0, True)]
    e["raw_last"] = {"autoattack": 0.2, "num_examples": 500}
    e["robust"]["raw_last"] = _bits(last)
    text = ov.verdict(found, ["pgd_at"], 500)
    assert ("against its own raw weights at the last epoch (the trajectory it averaged, 20.0%) "
            "EMA's last differs by +6.0 points, beyond twice their paired error (2 x 1.1)"
            in text)
    assert "the comparison with its own raw weights is on one trajectory." in text
    # EMA weights that overfit themselves (+6 on their own trajectory) do not remove the gap,
    # whichever path the raw run took.
    e.update(_run("pgd_at", 0, True, best, last), history=e["history"],
             raw_last={"autoattack": 0.2, "num_examples": 500})
    e["robust"]["raw_last"] = _bits(last)
    text = ov.verdict(found, ["pgd_at"], 500)
    assert ("on one trajectory. Its own gap is above twice its paired error: the averaged "
            "weights overfit robustly themselves, so EMA does not remove the gap here." in text)
