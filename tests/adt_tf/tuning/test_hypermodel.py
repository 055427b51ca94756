"""`adt_tf.tuning.hypermodel`: the method built with searched and fixed values; the parallel grid
oracle."""

import inspect

import pytest

from adt_tf import tuning
from adt_tf.methods import METHODS
from tests.adt_tf.tuning.helpers import PAPER, tiny_config, tiny_hypermodel, tiny_splits
from tests.helpers import slow_cases


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


# Three in the fast set, every method in the slow one.
@pytest.mark.parametrize("method", slow_cases(sorted(METHODS),
                                              fast=("adt_exp", "adt_exp_am", "pgd_at")))
def test_every_registered_method_builds_with_its_searched_values(method):
    import keras_tuner as kt

    args = inspect.signature(METHODS[method].__init__).parameters
    small = {k: 4 for k in ("generator_width", "encoder_width") if k in args}
    config = tiny_config(method=method, method_params=small, validation_examples=8)
    primary, optional = tuning.searchable_knobs(method)
    hypermodel = tuning.MethodHyperModel(config, tiny_splits(), tune=optional)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert set(hp.values) == set(primary + optional)
    trainer = hypermodel.build(hp)
    assert isinstance(trainer, METHODS[method])
    for name, value in hp.values.items():
        assert trainer.get_config()[name] == value, name


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
