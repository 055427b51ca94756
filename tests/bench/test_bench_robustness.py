"""bench/robustness.py: the worst case it tabulates, the seed statistics and the verdict."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from adt_tf.evaluation import staged
from adt_tf.evaluation.report import AttackResult, EvaluationResult
from bench import robustness as rb
from bench import robustness_table as rt
from bench.kit import recipes, stats
from tests.helpers import npz_dataset


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


def _fake_run(rng, n: int, m: int, norm: str = "linf"):
    """Random per-example outcomes of the three stages, run the way the script runs them;
    returns (main, stages, expected A_rob after stage 2, expected A_rob (all) on the first m)."""
    main_attacks, late_attacks, subset_attacks = staged.stage_attacks(norm)
    clean = rng.random(n) < 0.7
    main_pe = {"clean": clean}
    for name in main_attacks:
        main_pe[name] = clean & (rng.random(n) < 0.8)
    main = _result(main_pe, main_attacks, "all")
    # The independent reference: every attack's per-example AND.
    truth = clean.copy()
    for name in main_attacks:
        truth &= main_pe[name]
    robust, stages = main.per_example["robust"].copy(), {}
    for stem, names, limit in (("late", late_attacks, n), ("subset", subset_attacks, m)):
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
                                          summary["attacks"].items() if name in staged.MAIN_ATTACKS)
    assert set(summary["attacks"]) == set(staged.ALL_ATTACKS)
    assert summary["transfer_source_seed"] == 1
    # Wall time of each call (2 s) plus nothing cached.
    assert summary["eval_seconds"] == pytest.approx(2.0 * (1 + sum(
        r is not None for r, _, _ in stages.values())))


def test_eval_time_counts_attacks_taken_from_the_cache(tmp_path):
    rng = np.random.default_rng(3)
    main, stages, _, _ = _fake_run(rng, n=40, m=10)
    fresh = rb.summarize(main, stages, 10, "pgd_at", 0, None, str(tmp_path))["eval_seconds"]
    for a in main.attacks[:3]:  # resumed: three attacks came from the cache (1 s each)
        a.cached = True
    resumed = rb.summarize(main, stages, 10, "pgd_at", 0, None, str(tmp_path))["eval_seconds"]
    assert resumed == pytest.approx(fresh + 3.0)


def test_mean_spread_and_verdict():
    assert stats.mean_spread([0.40, 0.50]) == pytest.approx((45.0, 5.0))
    assert stats.mean_spread([0.3]) == pytest.approx((30.0, 0.0))

    def found(adt, pgd):
        return {("adt_exp", s): {"a_rob_subset": a} for s, a in enumerate(adt)} | \
            {("pgd_at", s): {"a_rob_subset": p} for s, p in enumerate(pgd)}

    assert rt.verdict(found([0.30, 0.32], [0.25, 0.26]), [0, 1], "adt_exp").startswith("beats")
    assert rt.verdict(found([0.20, 0.21], [0.25, 0.26]), [0, 1], "adt_exp").startswith(
        "is below")
    assert rt.verdict(found([0.24, 0.30], [0.25, 0.26]), [0, 1], "adt_exp").startswith(
        "does not differ")
    assert rt.verdict(found([0.3], [0.2]), [0], "adt_exp") == "not enough seeds to compare"
    # The verdict on another measure reads that measure only.
    both = {("adt_exp", s): {"a_rob_subset": 0.20, "a_rob_main": a} for s, a in
            enumerate([0.30, 0.31])} | {("pgd_at", s): {"a_rob_subset": 0.25, "a_rob_main": 0.2}
                                        for s in (0, 1)}
    assert rt.verdict(both, [0, 1], "adt_exp").startswith("is below")
    assert rt.verdict(both, [0, 1], "adt_exp", metric="a_rob_main").startswith("beats")


def test_in_short_names_the_variants_that_beat_at_pgd():
    found = {("pgd_at", s): {"a_rob_subset": 0.25, "a_rob_main": 0.20} for s in (0, 1)}
    found |= {("adt_exp", s): {"a_rob_subset": 0.30 + s / 100, "a_rob_main": 0.2}
              for s in (0, 1)}
    found |= {("adt_exp_am", s): {"a_rob_subset": 0.10, "a_rob_main": 0.1} for s in (0, 1)}
    text = rt.in_short(found, [0, 1], ["adt_exp", "adt_exp_am"])
    assert text == ("**In short:** at this scale, on A_rob (all attacks), ADT_EXP beats AT_PGD "
                    "beyond the seed spread; on A_rob after stage 2, no ADT variant beats "
                    "AT_PGD beyond the seed spread.")
    assert "no verdict" in rt.in_short(found, [0], ["adt_exp"])  # one seed


def test_family_line_compares_with_the_diagonal_and_asks_for_a_third_seed():
    def found(family, adt=(0.25, 0.27), pgd=(0.25, 0.27)):
        rows = {"adt_exp_lowrank": family, "adt_exp": adt, "pgd_at": pgd}
        return {(k, s): {"a_rob_subset": v[s], "a_rob_main": v[s]}
                for k, v in rows.items() for s in (0, 1)}

    # Within one spread (1 point) of both: compared, no third seed.
    line = rt.family_line(found((0.255, 0.275)), [0, 1], "adt_exp_lowrank", 50, 500)
    assert line.startswith("- ADT_EXP, low-rank Gaussian (R = 8) against the diagonal ADT_EXP")
    assert "does not differ from ADT_EXP beyond the seed spread (26.50 ± 1.00 vs 26.00" in line
    assert "no third seed asked" in line
    # 1.5 points above both with spreads of 1: overlapping intervals, yet a third seed.
    line = rt.family_line(found((0.265, 0.285)), [0, 1], "adt_exp_lowrank", 50, 500)
    assert "does not differ from ADT_EXP" in line and "asks for a third seed" in line
    assert "ADT_EXP on A_rob (all, first 50)" in line and "AT_PGD on A_rob after stage 2" in line
    # Only the AT_PGD baseline apart: the rule names it alone.
    line = rt.family_line(found((0.26, 0.26), adt=(0.26, 0.26), pgd=(0.30, 0.30)), [0, 1],
                          "adt_exp_lowrank", 50, 500)
    assert "from AT_PGD on A_rob (all, first 50), AT_PGD on A_rob after stage 2" in line
    assert "beats ADT_EXP" not in line and "is below ADT_EXP" not in line


def test_binomial_standard_error():
    assert stats.binomial_se(0.5, 100) == pytest.approx(5.0)
    assert stats.binomial_se(0.2, 500) == pytest.approx(100 * np.sqrt(0.16 / 500))
    assert stats.binomial_se(0.0, 50) == 0.0


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
            d = recipes.run_dir(str(workdir), key, seed)
            os.makedirs(d)
            summary = rb.summarize(main, stages, 20, key, seed, 1 - seed, d)
            with open(os.path.join(d, "summary.json"), "w") as f:
                json.dump(summary, f, default=str)
            expected[(key, seed)] = exp
    path = rt.build_table(recipes.RECIPES["cpu"], "cpu", str(workdir), [0, 1],
                          ["standard", "pgd_at", "adt_exp"], str(out), "python -m test")
    text = open(path).read()
    for key, label in (("pgd_at", "AT_PGD"), ("adt_exp", "ADT_EXP")):
        mean, spread = stats.mean_spread([expected[(key, 0)], expected[(key, 1)]])
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert f"**{mean:.2f} ± {spread:.2f}**" in row
    assert "standard-seed0, standard-seed1" in text  # listed as not finished
    assert "ADT_EXP: A_rob (all, first 20)" in text
    assert "A_rob after stage 2 (50 inputs)" in text
    assert "standard error of one run's A_rob" in text
    assert os.path.getsize(str(out / "robustness_cifar10_cpu.png")) > 1000
    data = json.load(open(out / "robustness_cifar10_cpu.json"))
    assert set(data) == {"pgd_at-seed0", "pgd_at-seed1", "adt_exp-seed0", "adt_exp-seed1"}


def test_a_further_seed_joins_its_row_only(tmp_path):
    """A third seed run for one row (the families' rule) is in that row's mean and spread;
    the other rows, with the table's two seeds, are not partial for lacking it."""
    rng = np.random.default_rng(2)
    workdir, out = tmp_path / "runs", tmp_path / "results"
    expected = {}
    for key, seeds in (("pgd_at", (0, 1)), ("adt_exp", (0, 1, 2))):
        for seed in seeds:
            main, stages, _, exp = _fake_run(rng, n=50, m=20)
            d = recipes.run_dir(str(workdir), key, seed)
            os.makedirs(d)
            with open(os.path.join(d, "summary.json"), "w") as f:
                json.dump(rb.summarize(main, stages, 20, key, seed, 0, d), f, default=str)
            expected[(key, seed)] = exp
    text = open(rt.build_table(recipes.RECIPES["cpu"], "cpu", str(workdir), [0, 1],
                               ["pgd_at", "adt_exp"], str(out), "cmd")).read()
    assert "Partial table" not in text and "not finished" not in text
    assert "- Seeds: 0, 1 (training and attacks); a further seed for ADT_EXP (seed 2" in text
    row = next(line for line in text.splitlines() if line.startswith("| ADT_EXP |"))
    mean, spread = stats.mean_spread([expected[("adt_exp", s)] for s in (0, 1, 2)])
    assert row.startswith("| ADT_EXP | 3 |") and f"**{mean:.2f} ± {spread:.2f}**" in row
    assert next(line for line in text.splitlines()
                if line.startswith("| AT_PGD |")).startswith("| AT_PGD | 2 |")


def test_l2_table_has_its_own_attacks_files_and_budget(tmp_path):
    main, late, subset = staged.stage_attacks("l2")
    assert "fea" not in main + late + subset and "spsa" not in main + late + subset
    assert {"apgd_ce", "apgd_t", "fab_t", "square"} <= set(main + late + subset)  # AutoAttack
    assert staged.stage_attacks("linf") == (staged.MAIN_ATTACKS, staged.LATE_ATTACKS,
                                            staged.SUBSET_ATTACKS)
    rng = np.random.default_rng(2)
    workdir, out = tmp_path / "runs", tmp_path / "results"
    for seed in (0, 1):
        run, stages, _, _ = _fake_run(rng, n=40, m=10, norm="l2")
        d = recipes.run_dir(str(workdir), "pgd_at", seed)
        os.makedirs(d)
        summary = rb.summarize(run, stages, 10, "pgd_at", seed, 1 - seed, d)
        summary["attack_code"] = staged.attack_code_versions("l2")
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump(summary, f, default=str)
    # A finished L2 evaluation is finished for L2, not for the L-infinity suite.
    assert rb.evaluation_finished(str(workdir), "pgd_at", 0, "l2")
    assert not rb.evaluation_finished(str(workdir), "pgd_at", 0, "linf")
    recipe = _with(recipes.RECIPES["cpu"], {"threat.norm": "l2"})
    assert recipe.norm == "l2"
    path = rt.build_table(recipe, "cpu", str(workdir), [0, 1], ["pgd_at"], str(out), "cmd")
    assert path.endswith("robustness_cifar10_cpu_l2.md")
    text = open(path).read()
    assert "L2 ball of radius 0.5" in text and "L2 epsilon 0.5" in text
    assert "8/255" not in text and "FeaAttack" not in text.split("## Attack settings")[1]
    assert "stage 3: square" in text.lower()  # the only stage-3 attack with an L2 version


def test_no_finished_run_gives_no_table(tmp_path):
    assert rt.build_table(recipes.RECIPES["cpu"], "cpu", str(tmp_path), [0], ["pgd_at"],
                          str(tmp_path / "out"), "cmd") is None


def _summary(key: str, seed: int, n: int = 500, m: int = 50, clean: float = 0.4) -> dict:
    attacks = {a: {"accuracy": 0.3} for a in staged.ALL_ATTACKS}
    return {"method": key, "seed": seed, "num_examples": n, "subset_examples": m,
            "clean": clean, "attacks": attacks, "attack_code": staged.attack_code_versions()}


def _write(path, data) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def test_restore_summaries_fills_only_missing_runs(tmp_path):
    workdir = str(tmp_path / "runs")
    results = str(tmp_path / "previous.json")
    _write(results, {"pgd_at-seed0": _summary("pgd_at", 0, clean=0.38),
                     "pgd_at-seed1": _summary("pgd_at", 1, clean=0.99),
                     "trades-seed0": _summary("trades", 0)})
    here = os.path.join(recipes.run_dir(workdir, "pgd_at", 1), "summary.json")
    _write(here, _summary("pgd_at", 1, clean=0.41))  # evaluated in this workdir: kept
    restored = rb.restore_summaries(results, recipes.RECIPES["cpu"], workdir, ["pgd_at"], [0, 1])
    assert restored == ["pgd_at-seed0"]  # trades is not among the methods asked for
    with open(os.path.join(recipes.run_dir(workdir, "pgd_at", 0), "summary.json")) as f:
        back = json.load(f)
    assert back["clean"] == 0.38 and back["restored_from"] == "previous.json"
    with open(here) as f:
        assert json.load(f)["clean"] == 0.41
    assert not os.path.exists(recipes.run_dir(workdir, "trades", 0))
    # Run again: nothing is left to restore.
    assert rb.restore_summaries(results, recipes.RECIPES["cpu"], workdir, ["pgd_at"], [0, 1]) == []


def test_restore_takes_a_rows_further_seed_too(tmp_path):
    """A third seed that some row of the committed JSON has (the families' rule) is restored
    with the table's seeds; another method's look-alike name is not."""
    workdir = str(tmp_path / "runs")
    results = str(tmp_path / "previous.json")
    _write(results, {f"{key}-seed{s}": _summary(key, s) for key, seeds in
                     (("adt_exp", (0, 1)), ("adt_exp_lowrank", (0, 1, 2))) for s in seeds})
    restored = rb.restore_summaries(results, recipes.RECIPES["cpu"], workdir, ["adt_exp"],
                                    [0, 1])
    assert restored == ["adt_exp-seed0", "adt_exp-seed1"]
    restored = rb.restore_summaries(results, recipes.RECIPES["cpu"], workdir,
                                    ["adt_exp_lowrank"], [0, 1])
    assert restored == ["adt_exp_lowrank-seed0", "adt_exp_lowrank-seed1",
                        "adt_exp_lowrank-seed2"]
    assert os.path.exists(os.path.join(recipes.run_dir(workdir, "adt_exp_lowrank", 2),
                                       "summary.json"))


def test_restore_refuses_another_number_of_inputs(tmp_path):
    results = str(tmp_path / "previous.json")
    _write(results, {"pgd_at-seed0": _summary("pgd_at", 0, n=2000, m=500)})
    with pytest.raises(ValueError, match="2000 inputs"):
        rb.restore_summaries(results, recipes.RECIPES["cpu"], str(tmp_path / "runs"), ["pgd_at"],
                             [0])



def _with(recipe, changes):
    """`recipe` with its training config's settings `changes` (dotted paths) replaced."""
    from adt_tf.training.config import override

    return dataclasses.replace(recipe, config=override(recipe.config, changes))


def _record(recipe, key, seed, data, workdir, changes=None) -> dict:
    """The record (config.json's dict) run_training writes for the recipe's run."""
    from adt_tf.training.config import override
    from adt_tf.training.resolve import resolve

    config = recipes.train_config(recipe, key, seed, data, workdir)
    return json.loads(json.dumps(resolve(override(config, changes or {})).to_dict()))


def test_restore_checks_the_recorded_training_configuration(tmp_path):
    """An entry that records its run's configuration is restored only into the recipe it was
    trained with (here: one made with the normalisation layer, the default of the records
    of version 1, restored into today's recipe without it; in today's record and in the flat one of
    earlier releases); one that records none is restored, and the table says it was not
    checked."""
    from tests.helpers import flat_record

    workdir, data = str(tmp_path / "runs"), npz_dataset(tmp_path / "cifar10", 40, 20)
    recipe = recipes.RECIPES["cpu"]
    recorded = _record(recipe, "pgd_at", 0, data, workdir)
    normalized = _record(recipe, "pgd_at", 0, data, workdir, {"data.normalize": True})
    results = str(tmp_path / "previous.json")
    for run_config in (normalized, flat_record(normalized)):
        _write(results, {"pgd_at-seed0": dict(_summary("pgd_at", 0), run_config=run_config)})
        with pytest.raises(ValueError, match="pgd_at-seed0 is another run than the one asked "
                                             r"for \(data\.normalize: True -> False\)"):
            rb.restore_summaries(results, recipe, workdir, ["pgd_at"], [0], data)
    rng = np.random.default_rng(2)
    full = []
    for seed in (0, 1):
        main, stages, _, _ = _fake_run(rng, n=500, m=50)
        full.append(json.loads(json.dumps(rb.summarize(main, stages, 50, "pgd_at", seed,
                                                       1 - seed, str(tmp_path)), default=str)))
    _write(results, {"pgd_at-seed0": dict(full[0], run_config=recorded),
                     "pgd_at-seed1": full[1]})
    assert rb.restore_summaries(results, recipe, workdir, ["pgd_at"], [0, 1], data) == [
        "pgd_at-seed0", "pgd_at-seed1"]
    with open(rt.build_table(recipe, "cpu", workdir, [0, 1], ["pgd_at"],
                             str(tmp_path / "out"), "cmd")) as f:
        text = f.read()
    assert "**Not checked against this recipe**: pgd_at-seed1 (written before" in text


def test_model_needed_for_own_or_dependent_evaluation(tmp_path):
    workdir = str(tmp_path)
    assert rb.model_needed(workdir, "pgd_at", 0, [0, 1])  # nothing evaluated yet
    _write(os.path.join(recipes.run_dir(workdir, "pgd_at", 0), "summary.json"),
           _summary("pgd_at", 0))
    # Seed 0 is evaluated, but it is the transfer source of seed 1, which is not.
    assert rb.model_needed(workdir, "pgd_at", 0, [0, 1])
    assert not rb.model_needed(workdir, "pgd_at", 0, [0])
    _write(os.path.join(recipes.run_dir(workdir, "pgd_at", 1), "summary.json"),
           _summary("pgd_at", 1))
    assert not rb.model_needed(workdir, "pgd_at", 0, [0, 1])
    assert not rb.model_needed(workdir, "pgd_at", 1, [0, 1])
    # A summary missing an attack of the suite is an unfinished evaluation.
    partial = _summary("pgd_at", 1)
    del partial["attacks"]["fab_t"]
    _write(os.path.join(recipes.run_dir(workdir, "pgd_at", 1), "summary.json"), partial)
    assert not rb.evaluation_finished(workdir, "pgd_at", 1)
    assert rb.model_needed(workdir, "pgd_at", 0, [0, 1])
    # So is one made with an attack whose code changed since (or with no record of it).
    stale = _summary("pgd_at", 1)
    stale["attack_code"]["apgd_ce"] = "an older version"
    _write(os.path.join(recipes.run_dir(workdir, "pgd_at", 1), "summary.json"), stale)
    assert not rb.evaluation_finished(workdir, "pgd_at", 1)
    del stale["attack_code"]
    _write(os.path.join(recipes.run_dir(workdir, "pgd_at", 1), "summary.json"), stale)
    assert not rb.evaluation_finished(workdir, "pgd_at", 1)


def test_restored_check_compares_clean_accuracy_of_the_retrained_model(tmp_path):
    workdir = str(tmp_path)
    found = {}
    for key, report_clean in (("pgd_at", 0.38), ("trades", 0.40)):
        found[(key, 0)] = dict(_summary(key, 0, clean=0.38), restored_from="x.json")
        _write(os.path.join(recipes.run_dir(workdir, key, 0), "report.json"),
               {"num_examples": 500, "clean_accuracy": report_clean})
    found[("standard", 0)] = dict(_summary("standard", 0), restored_from="x.json")  # no model
    text = rt.restored_check(workdir, found)
    assert "evaluated model on the same inputs: pgd_at-seed0." in text
    assert "differs from the evaluated model's" in text and text.endswith("trades-seed0.")
    assert "standard" not in text


def _finished_run(workdir, recipe, key, seed, data):
    """A finished run folder as run_training leaves it: config.json (the run's record),
    classifier, report."""
    d = recipes.run_dir(workdir, key, seed)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(_record(recipe, key, seed, data, workdir), f)
    for name in ("classifier.keras", "report.json"):
        open(os.path.join(d, name), "w").close()
    return d


def test_a_finished_run_of_other_settings_is_refused_not_kept(tmp_path, capsys):
    """--norm=l2 with an explicit --workdir holding the L-infinity run of the same method
    and seed: refused naming the field, never "finished earlier, kept"."""
    from bench.kit.runs import RunMismatchError

    workdir, data = str(tmp_path / "runs"), npz_dataset(tmp_path / "cifar10", 40, 20)
    other = npz_dataset(tmp_path / "other", 40, 20)
    linf = recipes.RECIPES["cpu"]
    _finished_run(workdir, linf, "pgd_at", 0, data)
    recipes.train(linf, "pgd_at", 0, data, workdir, verbose=0)  # the same run: kept
    assert "finished earlier, kept" in capsys.readouterr().out
    l2 = _with(linf, {"threat.norm": "l2"})
    with pytest.raises(RunMismatchError, match="threat.norm: 'linf' -> 'l2'"):
        recipes.train(l2, "pgd_at", 0, data, workdir, verbose=0)
    with pytest.raises(RunMismatchError, match="threat.norm: 'linf' -> 'l2'"):
        rb.evaluate_run(l2, "pgd_at", 0, [0], data, workdir, verbose=0, wait_minutes=0)
    with pytest.raises(RunMismatchError, match="compute.mixed_precision: False -> True"):
        recipes.train(linf, "pgd_at", 0, data, workdir, verbose=0, mixed_precision=True)
    with pytest.raises(RunMismatchError, match="optim.epochs: 6 -> 3"):
        recipes.train(_with(linf, {"optim.epochs": 3}), "pgd_at", 0, data, workdir, verbose=0)
    with pytest.raises(RunMismatchError, match=f"data.dataset: 'npz:{data}' -> 'npz:{other}'"):
        recipes.train(linf, "pgd_at", 0, other, workdir, verbose=0)


def test_a_run_of_the_earlier_algorithms_is_refused_too(tmp_path):
    from bench.kit.runs import RunMismatchError, check_recorded_run

    recipe = recipes.RECIPES["cpu"]
    data = npz_dataset(tmp_path / "d", 40, 20)
    d = _finished_run(str(tmp_path / "runs"), recipe, "trades", 1, data)
    with open(os.path.join(d, "config.json")) as f:
        recorded = json.load(f)
    recorded.pop("algorithm_version")  # a record of version 1
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(recorded, f)
    with pytest.raises(RunMismatchError, match="algorithm_version: 1 -> 2"):
        check_recorded_run(d, recipes.train_config(recipe, "trades", 1, data,
                                              str(tmp_path / "runs")), "bench.precision")
