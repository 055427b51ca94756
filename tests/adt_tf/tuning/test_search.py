"""`adt_tf.tuning.search`: bad input, resumed searches, replicas, the L2 ball."""


import numpy as np
import pytest

from adt_tf import tuning
from adt_tf.training.callbacks import RobustAccuracyCallback
from tests.adt_tf.tuning.helpers import (
    PAPER,
    STARTS,
    CountTrainings,
    kt_hyperparameters,
    tiny_config,
    tiny_hypermodel,
    tiny_splits,
)


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
    (lambda: tuning.MethodHyperModel(tiny_config(validation_examples=128), tiny_splits(128)),
     r"--validation_examples must be between \d+ \(one per class\) and 112 \(a batch of "
     r"--batch_size=16 and an image of every class left to train on\) for these 128 "
     r"training images, got 128"),
    (lambda: tuning.MethodHyperModel(tiny_config(validation_examples=500), tiny_splits(128)),
     r"--validation_examples must be between .* got 500"),
    (lambda: tuning.MethodHyperModel(tiny_config(validation_examples=0), tiny_splits(128)),
     r"--validation_examples must be at least 1 for a search"),
    (lambda: tuning.knobs_to_search("adt_exp", ["generator_lr"]),
     r"Cannot tune 'generator_lr' for method 'adt_exp'; it can tune: entropy_weight"),
    (lambda: tuning.MethodHyperModel(tiny_config(method_params={"mc_samples": 0},
                                                 validation_examples=8), tiny_splits()),
     r"mc_samples must be an integer >= 1, got 0"),
])
def test_bad_input_is_a_value_error_naming_the_value(monkeypatch, tmp_path, make, match):
    monkeypatch.chdir(tmp_path)  # a tuner that wrongly got made would write here
    with pytest.raises(ValueError, match=match):
        make()


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


@pytest.mark.slow
def test_an_l2_search_trains_and_scores_under_the_l2_ball(tmp_path):
    """--norm=l2: the trials train the method under the L2 ball and the objective is PGD-L2
    (the scorer's threat model is the run's, with the dataset's L2 budget by default)."""
    from adt_tf.threat import L2Ball

    with pytest.raises(ValueError, match="'toy' has no default l2 epsilon; give --epsilon"):
        # The toy arrays as a dataset of files (npz:), whose budget comes from its data.
        tuning.MethodHyperModel(tiny_config(norm="l2", epsilon=None, dataset="npz:toy"),
                                tiny_splits())
    hypermodel = tuning.MethodHyperModel(tiny_config(norm="l2", epsilon=0.25), tiny_splits(),
                                         space=tuning.SearchSpace(values=(0.01,)))
    assert isinstance(hypermodel.threat, L2Ball) and hypermodel.threat.epsilon == 0.25
    trainer = hypermodel.build(kt_hyperparameters(hypermodel))
    assert trainer.norm == "l2" and trainer.epsilon == 0.25
    # The bundled sample's L2 default (0.5) when no --epsilon is given.
    config = tiny_config(norm="l2", epsilon=None, max_train_examples=200)
    result = tuning.tune(config, tuner_kind="grid", max_trials=1, executions_per_trial=1,
                         directory=str(tmp_path),
                         project_name="l2", overwrite=False,
                         space=tuning.SearchSpace(values=(0.01,)), tune_knobs=())
    assert [r["status"] for r in result["rows"]] == ["COMPLETED"]
    assert "(l2, epsilon 0.5, step epsilon/4" in result["best"]["objective"]
    scorer = RobustAccuracyCallback(np.zeros((2, 16, 16, 3), np.float32),
                                           np.zeros(2, np.int64), L2Ball(0.5), steps=1)
    assert scorer.threat.norm == "l2" and scorer.epsilon == 0.5
