"""The hypermodel (any registered method, built as adt-train builds it, trained on the
training set minus the validation split) and the keras-tuner tuners that search it."""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import keras
import keras_tuner as kt
import tensorflow as tf

from adt_tf import data as data_lib
from adt_tf.core import checks
from adt_tf.training.callbacks import RobustAccuracyCallback
from adt_tf.training.config import RunConfig, override, validation_pgd_steps
from adt_tf.training.record import RunRecord, write_record
from adt_tf.training.resolve import resolve
from adt_tf.training.run import build_trainer, hold_out_validation
from adt_tf.tuning import distributed
from adt_tf.tuning.callbacks import fail_on_non_finite_loss, objective
from adt_tf.tuning.space import KNOBS, SearchSpace, knobs_to_search


class MethodHyperModel(kt.HyperModel):
    """Builds and trains a registered method with searched hyperparameters.

    The run is described as `adt-train` describes it: `config` (a `RunConfig`) is resolved
    once against the data (`adt_tf.training.resolve`), with the same validation split
    (`config.validation`: a seeded, class-stratified draw of the training images, recorded),
    the same classifier, optimiser and schedule (`adt_tf.training.run.build_trainer`) and
    the same validation attack. The method's fixed arguments come from
    `config.method.params`; the searched ones (see `knobs_to_search`) override them. Each
    trial trains on the training set minus the validation split, on which
    `RobustAccuracyCallback` computes the objective after every epoch; `trial_record(hp)` is
    the record adt-train would write for the trial's settings.

    Every trial starts from the same seed (the same initial weights, data order and noise:
    common random numbers, so trials differ by their hyperparameters only); the e-th execution
    of a trial (`executions_per_trial`) uses seed `config.run.seed + e`.

    Args:
        config: the run's settings; `config.optim.epochs` is the default epochs per trial,
            `config.validation.examples` (>= 1) the validation split.
        splits: the dataset, loaded with `config.data.max_train_examples`; its test arrays
            are not used.
        space: the lambda values to choose from.
        tune: optional knobs to search besides the method's primary ones.
    """

    def __init__(self, config: RunConfig, splits: data_lib.Splits,
                 space: SearchSpace | None = None, tune: Sequence[str] = (),
                 name: str | None = None):
        super().__init__(name=name, tunable=True)
        config.validate()
        if config.validation.examples < 1:
            raise ValueError("--validation_examples must be at least 1 for a search: its "
                             "objective is the robust accuracy on those held-out images.")
        if config.validation.every != 1:
            raise ValueError(f"--validation_every must be 1 for a search (the objective is "
                             f"read after every epoch), got {config.validation.every}.")
        self.space = space if space is not None else SearchSpace()
        self.knobs = knobs_to_search(config.method.name, tune)
        fixed = {k: v for k, v in config.method.params.items() if k not in self.knobs}
        # Resolved once, as adt-train resolves a run: every value explicit, the same
        # validation split, and the method's own checks of the fixed arguments.
        self.record = resolve(override(config, {"method.params": fixed}), splits)
        self.threat = self.record.threat
        self.config = self.record.config
        self.val_pgd_steps = validation_pgd_steps(self.config.validation.attack)
        training, (x_val, y_val) = hold_out_validation(self.record, splits)
        # The searched arrays: train on the rest, score on the validation split.
        self.splits = data_lib.Splits(training.x_train, training.y_train, x_val, y_val,
                                      splits.info)
        self.execution = 0  # set by the tuner before each execution of a trial
        self.fixed_params = {k: v for k, v in self.config.method.params.items()
                             if k not in self.knobs}

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        self.searched_params(hp)

    def searched_params(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """The searched constructor arguments, declaring them in `hp` the first time."""
        return {name: KNOBS[name](hp, self.space) for name in self.knobs}

    def method_params(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """All constructor arguments of the method for these hyperparameters."""
        return {**self.fixed_params, **self.searched_params(hp)}

    @property
    def seed(self) -> int:
        return self.config.run.seed + self.execution

    def trial_record(self, hp: kt.HyperParameters) -> RunRecord:
        """The record of a trial's run (the first execution's): what `adt-train` records for
        the same settings, the searched arguments included."""
        config = override(self.config, {"method.params": self.method_params(hp)})
        return dataclasses.replace(self.record, config=config)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        keras.utils.set_random_seed(self.seed)
        config = override(self.config, {"run.seed": self.seed,
                                        "method.params": self.method_params(hp)})
        steps = math.ceil(len(self.splits.x_train) / config.optim.batch_size)
        return build_trainer(config, self.splits, steps, self.threat)

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        if args:
            raise TypeError("MethodHyperModel trains on the data it was given; pass no "
                            f"positional arguments to search(), got {len(args)}.")
        kwargs.setdefault("epochs", self.config.optim.epochs)
        first_epoch = kwargs.get("initial_epoch", 0)  # Hyperband continues trials
        train_ds = data_lib.make_dataset(
            self.splits.x_train, self.splits.y_train, self.config.optim.batch_size,
            training=True,
            augment=self.splits.info.augment, seed=self.seed, first_epoch=first_epoch,
            num_epochs=max(kwargs["epochs"] - first_epoch, 1))
        kwargs.setdefault("steps_per_epoch",
                          math.ceil(len(self.splits.x_train) / self.config.optim.batch_size))
        scorer = RobustAccuracyCallback(
            self.splits.x_test, self.splits.y_test, self.threat,
            steps=self.val_pgd_steps, batch_size=self.config.report.eval_batch_size,
            seed=self.config.run.seed)
        kwargs.setdefault("verbose", self.config.run.verbose)
        # The scorer goes first, so that keras-tuner's callbacks and History see its logs.
        callbacks = ([fail_on_non_finite_loss(), *model.training_callbacks(), scorer]
                     + list(callbacks or []))
        return model.fit(train_ds, callbacks=callbacks, shuffle=False, **kwargs)


def restore_grid_order(oracle) -> None:
    """Gives a reloaded grid search back its place in the grid.

    keras-tuner's `GridSearchOracle` keeps the tried points in an ordered linked list and a
    queue of trials whose next grid point is still to be proposed, and saves neither
    (keras-tuner 1.4): a reloaded grid search proposes nothing new (it stops at once, or
    fails on the next finished trial in a distributed search). Both are rebuilt from the
    trials: the list is every trial sorted by its values in the oracle's own grid order
    (`_compare`), and every trial is queued, the oracle skipping the points already tried.
    """
    if not isinstance(oracle, kt.oracles.GridSearchOracle) or not oracle.trials:
        return
    ids = [t for t in oracle.start_order if t in oracle.trials]
    values = {t: oracle.trials[t].hyperparameters.values for t in ids}
    ids.sort(key=functools.cmp_to_key(lambda a, b: oracle._compare(values[a], values[b])))
    ordered = type(oracle._ordered_ids)()
    for trial_id in ids:
        ordered.insert(trial_id)
    oracle._ordered_ids = ordered
    oracle._populate_next = list(ids)


class ParallelGridOracle(kt.oracles.GridSearchOracle):
    """keras-tuner's grid oracle, proposing the next grid point as soon as a trial starts.

    keras-tuner's proposes a point's successor once that point's trial has ended (except for
    the first trial), so a distributed grid search runs one trial at a time after the first
    two, the other workers waiting. Here every started trial is queued at once, as keras-tuner
    does for the first; the order of the grid, and what a single process runs, are unchanged
    (a trial's successor is proposed once, however often the trial is queued).
    """

    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        if (response["status"] == kt.engine.trial.TrialStatus.RUNNING
                and trial_id not in self._populate_next):
            self._populate_next.append(trial_id)
        return response


def _pause_when_idle(create_trial, seconds: float = 1.0):
    """A worker's create_trial that waits `seconds` after an IDLE answer (the oracle has no
    trial to give yet): keras-tuner's search loop asks again at once, and a worker spinning
    on the chief takes the CPU of the one training."""

    def create(tuner_id):
        trial = create_trial(tuner_id)
        if trial.status == kt.engine.trial.TrialStatus.IDLE:
            time.sleep(seconds)
        return trial

    return create


class _SearchTuner:
    """Tuner mixin: tells the hypermodel which execution of a trial is about to run, records
    which process started each trial, keeps a restarted chief's running trials with their
    workers (`adt_tf.tuning.distributed`), lets a grid run its trials in parallel
    (`ParallelGridOracle`) and keeps a waiting worker from spinning."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if type(self.oracle) is kt.oracles.GridSearchOracle:
            self.oracle.__class__ = ParallelGridOracle  # same state, one method more
        if distributed.current_role().is_worker:
            self.oracle.create_trial = _pause_when_idle(self.oracle.create_trial)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        counts = self.__dict__.setdefault("_executions_started", collections.Counter())
        self.hypermodel.execution = counts[trial.trial_id]
        counts[trial.trial_id] += 1
        return super()._build_and_fit_model(trial, *args, **kwargs)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        distributed.record_trial_start(self.project_dir, self.tuner_id, trial.trial_id)
        # The trial's run, recorded as adt-train records one (config.json in its folder).
        write_record(self.hypermodel.trial_record(trial.hyperparameters),
                     self.get_trial_dir(trial.trial_id))

    def reload(self):
        super().reload()
        role = distributed.current_role()
        if not role.is_worker:  # this process holds the oracle
            restore_grid_order(self.oracle)
        if role.kind == "chief":
            kept = distributed.keep_running_trials(self.oracle)
            if kept:
                print(f"Chief: trial(s) {', '.join(kept)} stay with the workers running them.")


TUNERS: dict[str, type[kt.Tuner]] = {
    name: type(f"Seeded{cls.__name__}", (_SearchTuner, cls), {})
    for name, cls in (("random", kt.RandomSearch), ("bayesian", kt.BayesianOptimization),
                      ("hyperband", kt.Hyperband), ("grid", kt.GridSearch))
}


def build_tuner(kind: str, hypermodel: MethodHyperModel, *, max_trials: int = 10,
                executions_per_trial: int = 1, directory: str = "tuning",
                project_name: str = "adt", overwrite: bool = False,
                max_epochs: int | None = None, hyperband_factor: int = 3,
                strategy: tf.distribute.Strategy | None = None, seed: int | None = None
                ) -> kt.Tuner:
    """A keras-tuner tuner maximising `val_robust_accuracy`.

    A tuner made with the `directory` and `project_name` of an earlier search reloads it
    (unless `overwrite`): finished trials are kept, a trial that was interrupted is run
    again, and `search` goes on until `max_trials` trials exist in all.

    Args:
        kind: "random", "bayesian", "hyperband" or "grid".
        hypermodel: the `MethodHyperModel`.
        max_trials: trials in all (grid search stops earlier when its grid is done; hyperband
            runs its brackets up to `max_epochs` and stops after at most this many trials).
        executions_per_trial: trainings per trial; the objective is their mean.
        directory, project_name: where the search is kept.
        overwrite: start afresh instead of resuming.
        max_epochs: hyperband's largest budget per trial (default: the config's epochs).
        hyperband_factor: hyperband's reduction factor.
        strategy: a `tf.distribute.Strategy` to train each trial under.
        seed: the tuner's own seed (default: the config's seed).
    """
    checks.check_choice(kind, "tuner", TUNERS)
    max_trials = checks.check_positive_int(max_trials, "max_trials")
    executions = checks.check_positive_int(executions_per_trial, "executions_per_trial")
    common = dict(
        objective=objective(), executions_per_trial=executions, directory=directory,
        project_name=project_name, overwrite=overwrite, distribution_strategy=strategy,
        seed=hypermodel.config.run.seed if seed is None else seed)
    if kind == "hyperband":
        epochs = hypermodel.config.optim.epochs if max_epochs is None else max_epochs
        tuner = TUNERS[kind](hypermodel, max_epochs=checks.check_positive_int(
            epochs, "max_epochs"), factor=checks.check_positive_int(
            hyperband_factor, "hyperband_factor", minimum=2), **common)
        tuner.oracle.max_trials = max_trials  # its oracle takes none; it honours the attribute
        return tuner
    return TUNERS[kind](hypermodel, max_trials=max_trials, **common)


__all__ = ["TUNERS", "MethodHyperModel", "ParallelGridOracle", "build_tuner",
           "restore_grid_order"]
