"""keras-tuner search over a training method's hyperparameters, for robust accuracy.

The package, one module per idea: `space` (what is searched), `callbacks` (the objective
scored after every epoch), `hypermodel` (the method built and trained per trial, and the
tuners), `search` (one search, start to end: what `adt-tune` runs), `report` (the table of
trials, the plot, the best trial) and `distributed` (keras-tuner's chief/worker mode, and
what adt-tune adds to it; docs/tuning.md).

The central knob is ADT's entropy weight lambda: robustness rises with lambda up to a point
and then falls (Dong et al., 2020, Sec. 5.3, Fig. 5). `MethodHyperModel` builds any
registered method (`adt_tf.methods.METHODS`) with the searched values and trains it on the
training set minus a held-out validation split; `RobustAccuracyCallback` scores every epoch
by PGD-k robust accuracy on that split, the objective `val_robust_accuracy` (maximised).

What is searched for each method is declared in one place: `KNOBS` says how one constructor
argument is searched (a function hp -> value), `METHOD_KNOBS` which arguments each method
searches always (its "primary" knobs, e.g. lambda) and which on request (e.g. the inner
learning rate). A method without an entry searches `entropy_weight` if it has one.

Example:
    >>> from adt_tf import data
    >>> from adt_tf.training.config import RunConfig, override
    >>> splits = data.load("cifar10_sample")
    >>> config = override(RunConfig(), {"optim.epochs": 5, "validation.examples": 500})
    >>> hypermodel = MethodHyperModel(config, splits)
    >>> tuner = build_tuner("grid", hypermodel, max_trials=5, directory="tuning",
    ...                     project_name="adt_exp_lambda")
    >>> tuner.search(epochs=5)
    >>> tuner.oracle.get_best_trials(1)[0].hyperparameters.values
    {'entropy_weight': 0.01}

Reference:
    Dong et al., "Adversarial Distributional Training for Robust Deep Learning",
    NeurIPS 2020, Sec. 5.3 (the effect of lambda).
"""

from adt_tf.tuning import distributed, report
from adt_tf.tuning.callbacks import (
    CLEAN_NAME,
    ENTROPY_NAME,
    OBJECTIVE_NAME,
    fail_on_non_finite_loss,
    objective,
)
from adt_tf.tuning.hypermodel import TUNERS, MethodHyperModel, build_tuner
from adt_tf.tuning.search import tune
from adt_tf.tuning.space import (
    KNOBS,
    METHOD_KNOBS,
    PAPER_LAMBDAS,
    SearchSpace,
    knobs_to_search,
    searchable_knobs,
)

__all__ = ["CLEAN_NAME", "ENTROPY_NAME", "KNOBS", "METHOD_KNOBS", "OBJECTIVE_NAME",
           "PAPER_LAMBDAS", "TUNERS", "MethodHyperModel", "SearchSpace", "build_tuner",
           "distributed", "fail_on_non_finite_loss", "knobs_to_search", "objective", "report",
           "searchable_knobs", "tune"]
