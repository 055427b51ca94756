"""bench/precision.py: the comparison it draws and the table it writes from finished runs."""

from __future__ import annotations

import json
import os

from bench import precision as bp
from bench.kit import recipes, stats


def test_holds_compares_the_seed_ranges():
    assert stats.holds([0.30, 0.32], [0.31, 0.35]) == "holds"
    assert stats.holds([0.30, 0.32], [0.25, 0.29]) == "lower"
    assert stats.holds([0.30, 0.32], [0.33, 0.34]) == "higher"
    assert stats.holds([0.30], [0.31, 0.33]) == "not enough seeds"


def _summary(key, seed, clean, pgd, aa):
    return {"method": key, "seed": seed, "model_id": "x", "num_examples": 500, "clean": clean,
            "pgd20": pgd, "autoattack": aa, "train_seconds": 60.0, "eval_seconds": 30.0,
            "attacks": {"apgd_ce": {"broken": 3}, "apgd_t": {"broken": 1},
                        "fab_t": {"broken": 0}, "square": {"broken": 0}},
            "environment": {"cpu": "test cpu", "cpu_count": 2}}


def test_table_marks_missing_runs_and_draws_the_verdict(tmp_path):
    workdir, out = str(tmp_path / "runs"), str(tmp_path / "out")
    values = {("float32", 0): (0.40, 0.25, 0.22), ("float32", 1): (0.41, 0.26, 0.23),
              ("mixed", 0): (0.40, 0.24, 0.225), ("mixed", 1): (0.42, 0.20, 0.18)}
    for (precision, seed), v in values.items():
        d = recipes.run_dir(bp.precision_dir(workdir, precision), "pgd_at", seed)
        os.makedirs(d)
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump(_summary("pgd_at", seed, *v), f)
    path = bp.build_table(recipes.RECIPES["cpu"], "cpu", workdir, ["pgd_at", "adt_exp"],
                          ["float32", "mixed"], [0, 1], out, "python -m bench.precision",
                          "native (test)")
    text = open(path).read()
    assert "**Partial table**: 4 of 8 runs" in text
    assert "| AT_PGD | float32 | 2 | 40.50 ± 0.50 | 25.50 ± 0.50 | 22.50 ± 0.50 |" in text
    # clean and AutoAttack: the ranges overlap; PGD-20: mixed [20, 24] lies below [25, 26].
    assert "AT_PGD, clean: mixed within the seed spread" in text
    assert "AT_PGD, PGD-20: mixed below float32 beyond the seed spread" in text
    assert "AT_PGD, AutoAttack: mixed within the seed spread" in text  # 0.225 in [0.22, 0.23]
    assert "ADT_EXP, AutoAttack: mixed not enough seeds" in text
    with open(os.path.join(out, "precision_cifar10_cpu.json")) as f:
        assert set(json.load(f)) == {f"{p}/pgd_at-seed{s}" for p, s in values}
