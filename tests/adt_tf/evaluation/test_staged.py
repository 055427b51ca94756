"""The staged evaluation's bookkeeping (adt_tf.evaluation.staged): the stages under each norm,
and when a stored summary is still current. Its numbers on a model are checked through
bench.robustness (tests/bench/test_bench_robustness.py)."""

from __future__ import annotations

from types import SimpleNamespace

from adt_tf.evaluation import staged


def test_the_stages_partition_the_suite_and_l2_keeps_the_attacks_with_an_l2_version():
    main, late, subset = staged.stage_attacks("linf")
    assert main + late + subset == staged.ALL_ATTACKS
    assert len(set(staged.ALL_ATTACKS)) == len(staged.ALL_ATTACKS)
    l2 = staged.all_attacks("l2")
    assert set(l2) < set(staged.ALL_ATTACKS)
    assert not {"fea", "fea_distinct", "spsa", "spsa512"} & set(l2)
    assert {"pgd20", "apgd_ce", "apgd_t", "fab_t", "square"} <= set(l2)


def test_a_summary_is_current_only_with_every_attack_at_its_present_code():
    code = staged.attack_code_versions("linf")
    summary = {"attacks": {name: {} for name in staged.ALL_ATTACKS}, "attack_code": code}
    assert staged.summary_is_current(summary, "linf")
    assert not staged.summary_is_current(None, "linf")
    missing = dict(summary, attacks={n: {} for n in staged.ALL_ATTACKS[:-1]})
    assert not staged.summary_is_current(missing, "linf")
    changed = dict(summary, attack_code=dict(code, pgd20="another version"))
    assert not staged.summary_is_current(changed, "linf")
    # An L-infinity summary holds every L2 attack, but with the L2 stages' code list it is
    # another record: it is current under L2 only if it was made under L2.
    assert not staged.summary_is_current(summary, "l2")


def test_wall_seconds_adds_the_time_the_cached_attacks_took_when_they_ran():
    assert staged.wall_seconds(SimpleNamespace(seconds=2.5, cached_seconds=40.0)) == 42.5
