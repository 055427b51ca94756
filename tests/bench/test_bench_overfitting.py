"""bench/overfitting.py: its table, verdict and plot from finished runs (the runs themselves
need the offline CIFAR-10 copy and hours of CPU: bench/README.md)."""

from __future__ import annotations

import json
import os

import pytest

from bench import overfitting as bo
from bench.kit import recipes
from tests.helpers import npz_dataset


def _summary(key, seed, ema, best_aa, last_aa, best_epoch=22):
    history = [{"test_robust_accuracy": 0.2 + 0.01 * e, "val_robust_accuracy": 0.25}
               for e in range(40)]
    point = lambda aa: {"clean": 0.45, "pgd20": aa + 0.03, "autoattack": aa,  # noqa: E731
                        "num_examples": 500}
    return {"method": key, "seed": seed, "ema": ema, "history": history,
            "last": point(last_aa), "best": {"epoch": best_epoch, **point(best_aa)}}


def test_table_verdict_and_plot_from_finished_runs(tmp_path):
    recipe = recipes.OverfittingRecipe()
    workdir = tmp_path / "runs"
    values = {("pgd_at", 0, False): (0.26, 0.20), ("pgd_at", 1, False): (0.27, 0.21),
              ("adt_exp", 0, False): (0.25, 0.245)}
    for (key, seed, ema), (best, last) in values.items():
        d = workdir / recipes.run_name(key, seed, ema)
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_summary(key, seed, ema, best, last)))
    path = bo.build_table(recipe, str(workdir), [0, 1], ["pgd_at", "adt_exp"],
                          str(tmp_path / "out"), "python -m bench.overfitting", "/data")
    text = open(path).read()
    assert "**Partial table**: 3 of 6 runs" in text  # adt_exp seed 1 and both EMA runs
    assert "| AT_PGD | raw | 2 | 22, 22 |" in text
    assert "**6.0 ± 0.0**" in text  # best - last AutoAttack of AT_PGD
    assert "AT_PGD: best - last AutoAttack +6.0 points" in text
    assert "robust overfitting beyond the seed spread and the sampling error" in text
    assert "ADT_EXP: best - last AutoAttack +0.5 points" in text
    assert "no robust overfitting beyond" in text
    # the no-overfitting line states the threshold it applied (twice the error of a difference)
    assert "their mean above twice the error of a difference of two runs, 2 x " in text
    assert os.path.exists(tmp_path / "out" / "overfitting_cifar10_cpu.png")
    assert set(json.load(open(tmp_path / "out" / "overfitting_cifar10_cpu.json"))) == {
        "pgd_at-seed0", "pgd_at-seed1", "adt_exp-seed0"}


def test_each_run_is_a_training_config_with_its_protocol():
    recipe = recipes.OverfittingRecipe()
    config = bo.train_config(recipe, "adt_exp", 1, True, "/data", "/w")
    assert config.validation.examples == 1000 and config.validation.attack == "pgd20"
    assert config.validation.ema_decay == recipe.ema_decay
    # the recipe that overfits: 2,000 images of which 1,000 held out, 80 epochs, x0.1 at 41
    assert config.data.max_train_examples == 2000 and not config.data.normalize
    assert config.optim.lr_decay_epochs == (41,) and config.optim.epochs == 80
    assert config.validation.ema_warmup is None  # resolved: on, since EMA is on
    awp = bo.train_config(recipe, "awp_at", 0, False, "/d", "/w")
    assert awp.method.name == "awp_at" and awp.method.params == {}
    first = bo.train_config(recipes.OverfittingRecipe(name="overfitting_4000"), "pgd_at", 0,
                            False, "/d", "/w")
    assert first.data.max_train_examples == 5000 and first.optim.epochs == 40
    assert config.run.workdir == os.path.join("/w", "adt_exp-ema-seed1")
    assert (config.method.name, config.run.seed, config.data.dataset) == ("adt_exp", 1,
                                                                          "npz:/data")
    assert bo.train_config(recipe, "pgd_at", 0, False, "/d", "/w").validation.ema_decay is None


def test_curve_row_reads_the_peak_and_the_train_test_gaps():
    # test robust accuracy peaks at epoch 3 and falls; train robust keeps rising
    test = [0.10, 0.20, 0.30, 0.25, 0.22, 0.21]
    train = [0.10, 0.20, 0.32, 0.40, 0.50, 0.61]
    history = [{"test_robust_accuracy": a, "train_robust_accuracy": b}
               for a, b in zip(test, train)]
    row = bo.curve_row("pgd_at-seed0", history, decay_epoch=4)
    # peak 30.0 at epoch 3; last 21.0 test, 61.0 train; gap +40.0 last, +2.0 at epoch 3
    assert row == "| pgd_at-seed0 | 30.0 (3) | 21.0 | 61.0 | +40.0 | +2.0 |"


def test_restore_takes_a_committed_runs_summary_and_refuses_another_recipes(tmp_path):
    """--restore_from: a finished run of an earlier sitting is taken from the committed JSON
    (checked against the recipe), only where the workdir lacks it."""
    from adt_tf.training.resolve import resolve

    data = npz_dataset(tmp_path / "cifar10", 2000, 500)

    def record(seed):  # the record (config.json) run_training writes for the recipe's run
        config = bo.train_config(recipe, "pgd_at", seed, False, data, str(tmp_path / "old"))
        return json.loads(json.dumps(resolve(config).to_dict()))

    recipe = recipes.OverfittingRecipe()
    entry = dict(_summary("pgd_at", 0, False, 0.26, 0.2), run_config=record(0))
    results = tmp_path / "overfitting_cifar10_cpu.json"
    results.write_text(json.dumps({"pgd_at-seed0": entry}))
    workdir = tmp_path / "runs"
    restored = bo.restore_runs(str(results), recipe, str(workdir), ["pgd_at"], [0, 1], data)
    assert restored == ["pgd_at-seed0"]
    kept = json.loads((workdir / "pgd_at-seed0" / "summary.json").read_text())
    assert kept["restored_from"] == results.name and kept["last"]["autoattack"] == 0.2
    assert bo.restore_runs(str(results), recipe, str(workdir), ["pgd_at"], [0], data) == []
    table = open(bo.build_table(recipe, str(workdir), [0], ["pgd_at"], str(tmp_path / "out"),
                                "cmd", data)).read()
    assert "results JSON (`--restore_from`), checked against this recipe: pgd_at-seed0" in table
    # another seed's record under this name, or another count of test inputs: refused
    results.write_text(json.dumps({"pgd_at-seed0": dict(entry, run_config=record(1))}))
    with pytest.raises(ValueError, match=r"pgd_at-seed0 is another run .*run\.seed"):
        bo.restore_runs(str(results), recipe, str(tmp_path / "fresh"), ["pgd_at"], [0], data)
    entry["last"]["num_examples"] = 100
    results.write_text(json.dumps({"pgd_at-seed0": entry}))
    with pytest.raises(ValueError, match=r"evaluated on \[100, 500\] test inputs"):
        bo.restore_runs(str(results), recipe, str(tmp_path / "fresh"), ["pgd_at"], [0], data)


def test_verdict_uses_the_paired_error_of_the_per_example_results(tmp_path):
    """A 3-point gap that comes from 15 inputs robust at the best checkpoint only is robust
    overfitting by the paired error (both checkpoints scored on the same inputs), though
    within the unpaired bound (2 x 2.7 points); the per-input results reach the JSON."""
    import numpy as np

    recipe = recipes.OverfittingRecipe()
    workdir = tmp_path / "runs"
    for seed in (0, 1):
        d = workdir / recipes.run_name("pgd_at", seed, False)
        (d / "eval").mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_summary("pgd_at", seed, False, 0.23, 0.20)))
        last = np.zeros(500, bool)
        last[:100] = True
        best = last.copy()
        best[100:115] = True  # 115 robust at the best checkpoint, 100 at the last
        np.savez(d / "eval" / "best_per_example.npz", robust=best)
        np.savez(d / "eval" / "last_per_example.npz", robust=last)
    bo.build_table(recipe, str(workdir), [0, 1], ["pgd_at"], str(tmp_path / "out"), "cmd",
                   "/data")
    text = (tmp_path / "out" / "overfitting_cifar10_cpu.md").read_text()
    # the two seeds' per-input gaps are the same, so their mean's error is one run's:
    # sqrt(15) / 500 = 0.77 points
    assert "AT_PGD: best - last AutoAttack +3.0 points (seeds +3.0, +3.0): robust " \
           "overfitting beyond" in text
    assert "twice its paired sampling error, 2 x 0.8 points" in text
    saved = json.load(open(tmp_path / "out" / "overfitting_cifar10_cpu.json"))
    bits = saved["pgd_at-seed0"]["robust"]
    assert bits["best"] == "1" * 115 + "0" * 385 and bits["last"] == "1" * 100 + "0" * 400
    # without the per-example files the same gaps fall back to the unpaired bound
    for seed in (0, 1):
        for c in ("best", "last"):
            os.remove(workdir / recipes.run_name("pgd_at", seed, False) / "eval"
                      / f"{c}_per_example.npz")
    bo.build_table(recipe, str(workdir), [0, 1], ["pgd_at"], str(tmp_path / "out"), "cmd",
                   "/data")
    text = (tmp_path / "out" / "overfitting_cifar10_cpu.md").read_text()
    assert "+3.0, +3.0): no robust overfitting beyond" in text



def test_table_adds_the_record_an_older_summary_lacks_without_rewriting_it(tmp_path):
    """A run finished by an older sitting has a summary.json without `run_config`: the table's
    JSON takes it from the run's config.json (what a later --restore_from checks against),
    and the run's own summary.json is left as it was."""
    from adt_tf.training.record import write_record
    from adt_tf.training.resolve import resolve

    data = npz_dataset(tmp_path / "cifar10", 2000, 500)
    recipe = recipes.OverfittingRecipe()
    workdir = tmp_path / "runs"
    d = workdir / recipes.run_name("pgd_at", 0, False)
    d.mkdir(parents=True)
    summary = json.dumps(_summary("pgd_at", 0, False, 0.26, 0.2))
    (d / "summary.json").write_text(summary)
    config = bo.train_config(recipe, "pgd_at", 0, False, data, str(workdir))
    write_record(resolve(config), str(d))
    bo.build_table(recipe, str(workdir), [0], ["pgd_at"], str(tmp_path / "out"), "cmd", data)
    saved = json.load(open(tmp_path / "out" / "overfitting_cifar10_cpu.json"))
    assert saved["pgd_at-seed0"]["run_config"]["run"]["seed"] == 0
    assert saved["pgd_at-seed0"]["run_config"]["method"]["name"] == "pgd_at"
    assert (d / "summary.json").read_text() == summary


def test_table_refuses_per_input_results_that_are_not_the_runs_accuracy(tmp_path):
    """Per-input results whose count or share of robust inputs is not the run's AutoAttack
    accuracy would pair the wrong inputs: the table names the run and stops."""
    import numpy as np

    recipe = recipes.OverfittingRecipe()
    workdir = tmp_path / "runs"
    d = workdir / recipes.run_name("pgd_at", 0, False)
    (d / "eval").mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(_summary("pgd_at", 0, False, 0.20, 0.20)))
    robust = np.zeros(500, bool)
    robust[:100] = True  # 20%: the summary's accuracy
    np.savez(d / "eval" / "last_per_example.npz", robust=robust)
    robust[100] = True  # 20.2%, not the best checkpoint's 20%
    np.savez(d / "eval" / "best_per_example.npz", robust=robust)
    with pytest.raises(ValueError, match=r"pgd_at-seed0: its per-input results at the best "
                                         r"checkpoint \(500 inputs, 101 robust\)"):
        bo.build_table(recipe, str(workdir), [0], ["pgd_at"], str(tmp_path / "out"), "cmd",
                       "/data")


def test_an_ema_runs_raw_last_weights_are_kept_scored_and_added_once(tmp_path, monkeypatch):
    """`--raw_of_ema`: a finished EMA run gains raw_last (its backup's raw weights, kept as
    raw_last.keras and scored as the other checkpoints); a run that has it is left alone."""
    import numpy as np

    from adt_tf.artifacts.loading import load_backup_classifier, load_classifier
    from adt_tf.training.config import RunConfig
    from adt_tf.training.run import run_training
    from tests.helpers import tiny_run

    recipe = recipes.OverfittingRecipe()
    workdir = tmp_path / "runs"
    d = str(workdir / recipes.run_name("pgd_at", 0, True))
    run_training(RunConfig.from_flags(workdir=d, epochs=2, validation_examples=40,
                                      ema_decay=0.9, **tiny_run(max_train_examples=192,
                                                                batch_size=32, eval_examples=32,
                                                                lr=0.05)))
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(dict(_summary("pgd_at", 0, True, 0.2, 0.2), robust={"last": "0"}), f)
    scored = []

    def fake_autoattack(run_dir, checkpoint, recipe_, seed, data):
        path = os.path.join(run_dir, bo.CHECKPOINT_FILES[checkpoint])
        scored.append((checkpoint, path))
        return {"autoattack": 0.125, "num_examples": 8, "file": path}

    monkeypatch.setattr(bo, "autoattack", fake_autoattack)
    assert bo.add_raw_of_ema(recipe, str(workdir), ["pgd_at", "adt_exp"], "/data") == [
        "pgd_at-ema-seed0"]
    summary = json.load(open(os.path.join(d, "summary.json")))
    assert summary["raw_last"]["autoattack"] == 0.125 and "robust" not in summary
    assert scored == [("raw_last", os.path.join(d, "raw_last.keras"))]
    kept, backup = load_classifier(os.path.join(d, "raw_last.keras")), load_backup_classifier(d)[0]
    average = load_classifier(os.path.join(d, "classifier.keras"))
    for a, b, c in zip(kept.trainable_weights, backup.trainable_weights,
                       average.trainable_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert not np.array_equal(a.numpy(), c.numpy())
    assert bo.add_raw_of_ema(recipe, str(workdir), ["pgd_at"], "/data") == []
    assert len(scored) == 1
    restored = workdir / recipes.run_name("adt_exp", 0, True)  # a summary and no weights
    restored.mkdir()
    (restored / "summary.json").write_text(json.dumps(_summary("adt_exp", 0, True, 0.2, 0.2)))
    assert bo.add_raw_of_ema(recipe, str(workdir), ["adt_exp"], "/data") == []
    assert len(scored) == 1
