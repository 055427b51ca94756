import csv
import dataclasses
import inspect
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from adt_tf import data as data_lib
from adt_tf import tuning
from adt_tf.methods import METHODS
from adt_tf.training import TrainConfig
from tests.helpers import ROOT, make_tiny_images, trained_tiny_classifier

PAPER = tuning.PAPER_LAMBDAS
TINY_MODEL = {"width": 4, "dense_units": 16, "dropout": 0.0}


def toy_images(n):
    """Synthetic 16x16 images of 4 classes (colour means plus noise): learnable in a few
    steps, so that trials differ in accuracy."""
    x, y = make_tiny_images(n, 16, num_classes=4)
    return np.round(x * 255).astype(np.uint8), y.astype(np.int64)


def tiny_splits(n=128):
    x, y = toy_images(n)
    return data_lib.Splits(x, y, x[:8], y[:8], data_lib.DatasetInfo("toy", 4, 0.03, "none"))


def tiny_config(**kwargs):
    params = dict(workdir="", method="adt_exp", epochs=1, batch_size=16, lr=0.05,
                  epsilon=0.03, model_params=TINY_MODEL,
                  method_params={"inner_steps": 2, "mc_samples": 1}, verbose=0)
    params.update(kwargs)
    return TrainConfig(**params)


def tiny_hypermodel(**kwargs):
    return tuning.MethodHyperModel(tiny_config(), tiny_splits(), val_examples=64,
                                   val_pgd_steps=2, **kwargs)


def run_cli(*args, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "trainers.tune_lambda", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def trial_files(project):
    """{trial folder: contents of its trial.json}."""
    out = {}
    for name in sorted(os.listdir(project)):
        path = os.path.join(project, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                out[name] = f.read()
    return out


# ------------------------------------------------------------------ search space
def test_default_space_is_the_papers_lambdas_and_ranges_are_log_spaced():
    assert tuning.SearchSpace().lambdas() == tuning.PAPER_LAMBDAS
    fine = tuning.SearchSpace(lambda_min=1e-3, lambda_max=1e-1, points_per_decade=2).lambdas()
    assert fine == (0.0, 0.001, 0.00316, 0.01, 0.0316, 0.1)
    ratios = np.diff(np.log10(fine[1:]))
    np.testing.assert_allclose(ratios, 0.5, atol=0.01)  # equal steps on a log scale
    assert 0.0 not in tuning.SearchSpace(include_zero=False).lambdas()
    assert tuning.SearchSpace(values=(0.1, 0.0, 0.1)).lambdas() == (0.0, 0.1)


def test_knob_declarations_match_the_registered_methods():
    for method, (primary, optional) in tuning.METHOD_KNOBS.items():
        assert set(primary + optional) <= set(tuning.KNOBS), method
        if method in METHODS:  # a renamed primary argument must not be dropped silently
            args = inspect.signature(METHODS[method].__init__).parameters
            assert all(k in args for k in primary), (method, primary)
    assert tuning.knobs_to_search("adt_exp") == ("entropy_weight",)
    assert tuning.knobs_to_search("adt_exp", ["mc_samples", "inner_lr"]) == (
        "entropy_weight", "inner_lr", "mc_samples")
    assert tuning.knobs_to_search("standard") == ()


def test_hypermodel_builds_the_method_with_searched_and_fixed_values():
    import keras_tuner as kt

    hypermodel = tiny_hypermodel(tune=["inner_lr"])
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert set(hp.values) == {"entropy_weight", "inner_lr"}
    hp.values.update({"entropy_weight": 0.1, "inner_lr": 0.03})
    trainer = hypermodel.build(hp)
    assert isinstance(trainer, METHODS["adt_exp"])
    assert (trainer.entropy_weight, trainer.inner_lr) == (0.1, 0.03)
    assert (trainer.inner_steps, trainer.mc_samples) == (2, 1)  # fixed, from the config
    assert trainer.epsilon == pytest.approx(0.03)
    # The validation split is held out of the training set, not taken from the test split.
    assert len(hypermodel.splits.x_train) + len(hypermodel.splits.x_test) == 128
    assert len(hypermodel.splits.x_test) == 64


@pytest.mark.parametrize("method", [  # three in the fast set, every method in the slow one
    m if m in ("adt_exp", "adt_exp_am", "pgd_at") else pytest.param(m, marks=pytest.mark.slow)
    for m in sorted(METHODS)])
def test_every_registered_method_builds_with_its_searched_values(method):
    import keras_tuner as kt

    args = inspect.signature(METHODS[method].__init__).parameters
    small = {k: 4 for k in ("generator_width", "encoder_width") if k in args}
    config = tiny_config(method=method, method_params=small)
    primary, optional = tuning.searchable_knobs(method)
    hypermodel = tuning.MethodHyperModel(config, tiny_splits(), val_examples=8,
                                         tune=optional)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert set(hp.values) == set(primary + optional)
    trainer = hypermodel.build(hp)
    assert isinstance(trainer, METHODS[method])
    for name, value in hp.values.items():
        assert trainer.get_config()[name] == value, name


def test_robust_accuracy_callback_sets_the_objective():
    # A trained classifier: an untrained one can be constant (every ReLU dead), and then no
    # attack changes a prediction.
    classifier, x, y = trained_tiny_classifier()
    x, y = x[:32], y[:32]
    logs = {}
    weak = tuning.RobustAccuracyCallback(x, y, 1e-4, steps=2)
    weak.set_model(classifier)
    weak.on_epoch_end(0, logs)
    clean = float(np.mean(np.argmax(classifier.predict(x, verbose=0), -1) == y))
    assert logs["val_clean_accuracy"] == pytest.approx(clean)
    assert 0 <= logs["val_robust_accuracy"] <= logs["val_clean_accuracy"]
    strong = tuning.RobustAccuracyCallback(x, y, 1.0, steps=3)
    strong.set_model(classifier)
    strong_logs = {}
    strong.on_epoch_end(0, strong_logs)
    assert strong_logs["val_robust_accuracy"] < max(clean, 1e-9)  # eps = 1: PGD wins


def test_best_row_is_the_highest_robust_accuracy_with_deterministic_ties():
    def row(trial_id, robust, clean, status="COMPLETED"):
        return {"trial_id": trial_id, "status": status, "val_robust_accuracy": robust,
                "val_clean_accuracy": clean}

    rows = [row("0", 0.2, 0.9), row("1", 0.3, 0.4), row("2", 0.3, 0.6), row("3", 0.3, 0.6),
            row("4", None, None, "FAILED")]
    assert tuning.report.best_row(rows)["trial_id"] == "2"
    assert tuning.report.best_row([rows[4]]) is None
    table = tuning.report.markdown_table(rows)
    assert "| 2 | COMPLETED | 60.00% | 30.00% | n/a | n/a |" in table


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("make,match", [
    (lambda: tuning.SearchSpace(lambda_min=-0.1),
     r"lambda_min must be a finite number > 0, got -0.1"),
    (lambda: tuning.SearchSpace(lambda_min=0.1, lambda_max=-1.0),
     r"lambda_max must be a finite number > 0, got -1.0"),
    (lambda: tuning.SearchSpace(lambda_min=0.1, lambda_max=0.01),
     r"lambda_max must be >= lambda_min = 0.1, got 0.01"),
    (lambda: tuning.SearchSpace(values=(0.0, -0.5)), r"lambda values .* got -0.5"),
    (lambda: tuning.build_tuner("random", tiny_hypermodel(), max_trials=0),
     r"max_trials must be an integer >= 1, got 0"),
    (lambda: tuning.build_tuner("annealing", tiny_hypermodel()),
     r"Unknown tuner 'annealing'; known: bayesian, grid, hyperband, random"),
    (lambda: tuning.build_tuner("random", tiny_hypermodel(), executions_per_trial=0),
     r"executions_per_trial must be an integer >= 1, got 0"),
    (lambda: tuning.MethodHyperModel(tiny_config(), tiny_splits(128), val_examples=128),
     r"val_examples must be smaller than the training set \(128 examples\).*got 128"),
    (lambda: tuning.MethodHyperModel(tiny_config(), tiny_splits(128), val_examples=500),
     r"got 500"),
    (lambda: tuning.knobs_to_search("adt_exp", ["generator_lr"]),
     r"Cannot tune 'generator_lr' for method 'adt_exp'; it can tune: entropy_weight"),
    (lambda: tuning.MethodHyperModel(tiny_config(method_params={"mc_samples": 0}),
                                     tiny_splits(), val_examples=8),
     r"mc_samples must be an integer >= 1, got 0"),
])
def test_bad_input_is_a_value_error_naming_the_value(monkeypatch, tmp_path, make, match):
    monkeypatch.chdir(tmp_path)  # a tuner that wrongly got made would write here
    with pytest.raises(ValueError, match=match):
        make()


def test_cli_rejects_bad_input_before_training(tmp_path):
    proc = run_cli("--tuner=annealing", f"--directory={tmp_path}/t", "--epochs=1",
                   check=False)
    assert proc.returncode == 2
    assert "Unknown tuner 'annealing'; known: bayesian, grid, hyperband, random" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "t"))


# ------------------------------------------------------------------ searches
def test_cli_search_writes_table_plot_best_and_resumes_without_retraining(tmp_path):
    import matplotlib.image

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    x, y = toy_images(176)
    np.savez(data_dir / "train.npz", x=x[:160], y=y[:160])
    np.savez(data_dir / "test.npz", x=x[160:], y=y[160:])
    args = [f"--dataset=npz:{data_dir}", "--method=adt_exp", "--tuner=grid",
            "--lambda_values=1,0", "--max_trials=3", "--epochs=1", "--val_examples=64",
            "--val_pgd_steps=2", "--epsilon=0.03", "--model_width=4", "--batch_size=8",
            "--lr=0.05", "--method_params=inner_steps=2,mc_samples=1", "--verbose=0",
            f"--directory={tmp_path}/tune", "--project_name=lam"]
    out = run_cli(*args).stdout
    project = tmp_path / "tune" / "lam"
    assert "2 trial(s), 2 trained by this run" in out
    assert "| trial | status | lambda | clean acc | robust acc | mean entropy | epoch |" in out

    rows = json.load(open(project / "trials.json"))
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    lambdas = [r["entropy_weight"] for r in rows]
    assert lambdas == [0.0, 1.0]  # the grid, in increasing order
    for r in rows:
        assert 0 <= r["val_robust_accuracy"] <= r["val_clean_accuracy"] <= 1
        assert math.isfinite(r["entropy"])
    with open(project / "trials.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["val_robust_accuracy"]) for r in csv_rows] == [
        r["val_robust_accuracy"] for r in rows]
    assert (project / "trials.md").read_text().startswith("| trial | status | lambda |")

    image = matplotlib.image.imread(project / "search.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # something was drawn

    best = json.load(open(project / "best_hyperparameters.json"))
    top = max(r["val_robust_accuracy"] for r in rows)
    assert best["val_robust_accuracy"] == top
    assert best["trial_id"] in [r["trial_id"] for r in rows if r["val_robust_accuracy"] == top]
    if rows[0]["val_robust_accuracy"] != rows[1]["val_robust_accuracy"]:  # no tie to break
        assert best["trial_id"] == max(rows, key=lambda r: r["val_robust_accuracy"])["trial_id"]
    best_row = next(r for r in rows if r["trial_id"] == best["trial_id"])
    assert best["method_params"]["entropy_weight"] == best_row["entropy_weight"]
    assert best["method_params"]["inner_steps"] == 2  # the fixed flags are kept
    assert f"Best trial {best['trial_id']}" in out

    # Resume in this process (a second interpreter start costs more than the search).


    before = trial_files(project)
    assert len(before) == 2
    config = TrainConfig(**{**json.load(open(project / "search_config.json"))["train_config"],
                            "workdir": "", "verbose": 0})
    saved = json.load(open(project / "search_config.json"))
    kwargs = dict(tuner_kind="grid", max_trials=3, executions_per_trial=1, val_examples=64,
                  val_pgd_steps=2, directory=str(tmp_path / "tune"), project_name="lam",
                  overwrite=False, space=tuning.SearchSpace(**saved["space"]), tune_knobs=())
    result = tuning.tune(config, **kwargs)
    assert result["trained"] == []
    assert trial_files(project) == before  # no trial folder added or rewritten
    assert result["best"]["trial_id"] == best["trial_id"]

    with pytest.raises(ValueError, match=r"other settings \(train_config: .*'seed': 0"):
        tuning.tune(dataclasses.replace(config, seed=3), **kwargs)


STARTS = []


class CountTrainings(keras.callbacks.Callback):
    """Counts fits in a module-level list (keras-tuner deep-copies the callbacks)."""

    def on_train_begin(self, logs=None):
        STARTS.append(1)


@pytest.mark.slow  # the CLI test resumes a search in the fast set
@pytest.mark.parametrize("kind", ["random", "grid"])
def test_resumed_search_keeps_finished_trials_and_only_adds_new_ones(tmp_path, kind):
    """A grid search too: keras-tuner's grid oracle saves no place in the grid, and a
    reloaded one would propose nothing new (`tuning.hypermodel.restore_grid_order`)."""
    def search(max_trials):
        STARTS.clear()
        tuner = tuning.build_tuner(kind, tiny_hypermodel(), max_trials=max_trials,
                                   directory=str(tmp_path), project_name="p")
        tuner.search(epochs=1, verbose=0, callbacks=[CountTrainings()])
        return tuner, len(STARTS)

    tuner, trained = search(1)
    assert trained == 1
    first = {t: (s.hyperparameters.values, s.score) for t, s in tuner.oracle.trials.items()}
    assert len(first) == 1 and list(first.values())[0][1] is not None

    tuner, trained = search(1)
    assert trained == 0  # the finished trial was loaded, not trained again
    assert {t: (s.hyperparameters.values, s.score)
            for t, s in tuner.oracle.trials.items()} == first

    tuner, trained = search(2)
    assert trained == 1 and len(tuner.oracle.trials) == 2
    if kind == "grid":  # the next point of the grid, not a repeat of the first
        assert len({t.hyperparameters.values["entropy_weight"]
                    for t in tuner.oracle.trials.values()}) == 2
        tuner, trained = search(5)  # the whole grid of 5 lambdas, 3 more
        assert trained == 3 and sorted(t.hyperparameters.values["entropy_weight"] for t in
                                       tuner.oracle.trials.values()) == list(PAPER)
    for trial_id, values in first.items():
        trial = tuner.oracle.trials[trial_id]
        assert (trial.hyperparameters.values, trial.score) == values
    rows = tuning.report.trial_rows(tuner.oracle)
    # In the order the trials were created (a reloaded oracle's dict follows the files' order).
    assert [r["trial_id"] for r in rows] == tuner.oracle.start_order
    assert sorted(tuner.oracle.start_order) == sorted(tuner.oracle.trials)
    assert tuning.report.best_row(rows)["val_robust_accuracy"] == (
        tuner.oracle.get_best_trials(1)[0].score)


@pytest.mark.slow
def test_search_under_a_mirrored_strategy(tmp_path, two_device_strategy):
    tuner = tuning.build_tuner("grid", tiny_hypermodel(space=tuning.SearchSpace(values=(0.01,))),
                               max_trials=3, directory=str(tmp_path), project_name="m",
                               strategy=two_device_strategy)
    assert tuner.distribution_strategy is two_device_strategy
    tuner.search(epochs=1, verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 1  # the grid had a single point
    assert trials[0].status == "COMPLETED"
    assert 0 <= trials[0].score <= 1


def test_grid_oracle_proposes_the_next_point_while_trials_run(tmp_path):
    """Three workers asking at once get three grid points (keras-tuner's grid oracle answers
    the third IDLE until a trial ends); the points are the grid's first three, in order."""
    tuner = tuning.build_tuner("grid", tiny_hypermodel(), max_trials=5,
                               directory=str(tmp_path), project_name="g")
    assert isinstance(tuner.oracle, tuning.hypermodel.ParallelGridOracle)
    trials = [tuner.oracle.create_trial(f"worker-{i}") for i in range(3)]
    assert [t.status for t in trials] == ["RUNNING"] * 3
    assert [t.hyperparameters.values["entropy_weight"] for t in trials] == list(PAPER[:3])
    # The same request to the same worker returns its running trial, as keras-tuner's.
    assert tuner.oracle.create_trial("worker-0").trial_id == trials[0].trial_id


def test_an_l2_search_trains_and_scores_under_the_l2_ball(tmp_path):
    """--norm=l2: the trials train the method under the L2 ball and the objective is PGD-L2
    (the scorer's threat model is the run's, with the dataset's L2 budget by default)."""
    from adt_tf.threat import L2Ball

    with pytest.raises(ValueError, match="'toy' has no default l2 epsilon; give --epsilon"):
        tuning.MethodHyperModel(tiny_config(norm="l2", epsilon=None), tiny_splits(),
                                val_examples=64)
    hypermodel = tuning.MethodHyperModel(tiny_config(norm="l2", epsilon=0.25), tiny_splits(),
                                         val_examples=64, val_pgd_steps=2,
                                         space=tuning.SearchSpace(values=(0.01,)))
    assert isinstance(hypermodel.threat, L2Ball) and hypermodel.threat.epsilon == 0.25
    trainer = hypermodel.build(kt_hyperparameters(hypermodel))
    assert trainer.norm == "l2" and trainer.epsilon == 0.25
    # The bundled sample's L2 default (0.5) when no --epsilon is given.
    config = tiny_config(norm="l2", epsilon=None, max_train_examples=200)
    result = tuning.tune(config, tuner_kind="grid", max_trials=1, executions_per_trial=1,
                         val_examples=64, val_pgd_steps=2, directory=str(tmp_path),
                         project_name="l2", overwrite=False,
                         space=tuning.SearchSpace(values=(0.01,)), tune_knobs=())
    assert [r["status"] for r in result["rows"]] == ["COMPLETED"]
    assert "(l2, epsilon 0.5, step epsilon/4" in result["best"]["objective"]
    scorer = tuning.RobustAccuracyCallback(np.zeros((2, 16, 16, 3), np.float32),
                                           np.zeros(2, np.int64), L2Ball(0.5), steps=1)
    assert scorer.threat.norm == "l2" and scorer.epsilon == 0.5


def kt_hyperparameters(hypermodel):
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    return hp
