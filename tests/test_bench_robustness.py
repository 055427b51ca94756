"""bench/robustness.py: the worst case it tabulates, the seed statistics and the verdict."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from adt_tf.eval_report import AttackResult, EvaluationResult
from bench import robustness as rb


def _result(per_example: dict[str, np.ndarray], names, mode: str) -> EvaluationResult:
    clean = per_example["clean"]
    robust = clean.copy()
    attacks = []
    for name in names:
        correct = per_example[name]
        robust &= correct
        attacks.append(AttackResult(
            name=name, label=name.upper(), attack=name, kind="white-box",
            params={"steps": 3}, evaluated_on="clean_correct" if mode == "all" else
            "still_robust", num_attacked=int(clean.sum()), num_broken=int((clean & ~correct)
                                                                          .sum()),
            accuracy=float(correct.mean()) if mode == "all" else None,
            robust_after=float(robust.mean()), seconds=1.0))
    return EvaluationResult(
        model="m", dataset="d", num_examples=len(clean), epsilon=8 / 255, suite="s",
        per_attack=mode, seed=0, batch_size=10, clean_accuracy=float(clean.mean()),
        robust_accuracy=float(robust.mean()), attacks=attacks, seconds=2.0,
        environment={"cpu": "test cpu", "cpu_count": 2}, per_example=dict(per_example,
                                                                         robust=robust))


def _fake_run(rng, n: int, m: int):
    """Random per-example outcomes of the three stages, run the way the script runs them;
    returns (main, stages, expected A_rob after stage 2, expected A_rob (all) on the first m)."""
    clean = rng.random(n) < 0.7
    main_pe = {"clean": clean}
    for name in rb.MAIN_ATTACKS:
        main_pe[name] = clean & (rng.random(n) < 0.8)
    main = _result(main_pe, rb.MAIN_ATTACKS, "all")
    # The independent reference: every attack's per-example AND.
    truth = clean.copy()
    for name in rb.MAIN_ATTACKS:
        truth &= main_pe[name]
    robust, stages = main.per_example["robust"].copy(), {}
    for stem, names, limit in (("late", rb.LATE_ATTACKS, n), ("subset", rb.SUBSET_ATTACKS, m)):
        idx = np.flatnonzero(robust[:limit])
        pe, alive = {"clean": np.ones(len(idx), bool)}, np.ones(len(idx), bool)
        for name in names:
            pe[name] = rng.random(len(idx)) < 0.7
            alive &= pe[name]
        truth[idx] &= alive
        robust[idx] &= alive
        result = _result(pe, names, "remaining") if len(idx) else None  # as the script
        stages[stem] = (result, names, idx)
        if stem == "late":
            after_late = truth.copy()
    return main, stages, after_late.mean(), truth[:m].mean()


def test_summary_worst_case_is_the_per_example_and(tmp_path):
    rng = np.random.default_rng(0)
    main, stages, after_late, expected = _fake_run(rng, n=60, m=20)
    summary = rb.summarize(main, stages, 20, "adt_exp", 0, 1, str(tmp_path))
    assert summary["a_rob_subset"] == pytest.approx(expected)
    assert summary["a_rob_main"] == pytest.approx(after_late)
    assert summary["a_rob_stage1"] == pytest.approx(main.robust_accuracy)
    assert summary["a_rob_subset"] <= summary["a_rob_main_on_subset"] <= 1.0
    assert summary["a_rob_main"] < summary["a_rob_stage1"]  # stage 2 broke some inputs
    assert summary["a_rob_stage1"] <= min(a["accuracy"] for name, a in
                                          summary["attacks"].items() if name in rb.MAIN_ATTACKS)
    assert set(summary["attacks"]) == set(rb.ALL_ATTACKS)
    assert summary["transfer_source_seed"] == 1


def test_mean_spread_and_verdict():
    assert rb.mean_spread([0.40, 0.50]) == pytest.approx((45.0, 5.0))
    assert rb.mean_spread([0.3]) == pytest.approx((30.0, 0.0))

    def found(adt, pgd):
        return {("adt_exp", s): {"a_rob_subset": a} for s, a in enumerate(adt)} | \
            {("pgd_at", s): {"a_rob_subset": p} for s, p in enumerate(pgd)}

    assert rb.verdict(found([0.30, 0.32], [0.25, 0.26]), [0, 1], "adt_exp").startswith("beats")
    assert rb.verdict(found([0.20, 0.21], [0.25, 0.26]), [0, 1], "adt_exp").startswith(
        "is below")
    assert rb.verdict(found([0.24, 0.30], [0.25, 0.26]), [0, 1], "adt_exp").startswith(
        "does not differ")
    assert rb.verdict(found([0.3], [0.2]), [0], "adt_exp") == "not enough seeds to compare"


def test_transfer_source_is_the_next_seed():
    assert rb._source_seed(0, [0, 1]) == 1
    assert rb._source_seed(1, [0, 1]) == 0
    assert rb._source_seed(0, [0]) is None
    assert rb._source_seed(5, [0, 1]) is None


def test_table_from_finished_runs(tmp_path):
    rng = np.random.default_rng(1)
    workdir, out = tmp_path / "runs", tmp_path / "results"
    expected = {}
    for key in ("pgd_at", "adt_exp"):
        for seed in (0, 1):
            main, stages, _, exp = _fake_run(rng, n=50, m=20)
            d = rb.run_dir(str(workdir), key, seed)
            os.makedirs(d)
            summary = rb.summarize(main, stages, 20, key, seed, 1 - seed, d)
            with open(os.path.join(d, "summary.json"), "w") as f:
                json.dump(summary, f, default=str)
            expected[(key, seed)] = exp
    path = rb.build_table(rb.RECIPES["cpu"], "cpu", str(workdir), [0, 1],
                          ["standard", "pgd_at", "adt_exp"], str(out), "python -m test")
    text = open(path).read()
    for key, label in (("pgd_at", "AT_PGD"), ("adt_exp", "ADT_EXP")):
        mean, spread = rb.mean_spread([expected[(key, 0)], expected[(key, 1)]])
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert f"**{mean:.2f} ± {spread:.2f}**" in row
    assert "standard-seed0, standard-seed1" in text  # listed as not finished
    assert "ADT_EXP: A_rob (all)" in text
    assert os.path.getsize(str(out / "robustness_cifar10_cpu.png")) > 1000
    data = json.load(open(out / "robustness_cifar10_cpu.json"))
    assert set(data) == {"pgd_at-seed0", "pgd_at-seed1", "adt_exp-seed0", "adt_exp-seed1"}


def test_no_finished_run_gives_no_table(tmp_path):
    assert rb.build_table(rb.RECIPES["cpu"], "cpu", str(tmp_path), [0], ["pgd_at"],
                          str(tmp_path / "out"), "cmd") is None
