"""keras-tuner search over a training method's hyperparameters, for robust accuracy.

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
    >>> splits = data.load("cifar10_sample")
    >>> config = TrainConfig(workdir="", method="adt_exp", epochs=5)
    >>> hypermodel = MethodHyperModel(config, splits, val_examples=500)
    >>> tuner = build_tuner("grid", hypermodel, max_trials=5, directory="tuning",
    ...                     project_name="adt_exp_lambda")
    >>> tuner.search(epochs=5)
    >>> tuner.oracle.get_best_trials(1)[0].hyperparameters.values
    {'entropy_weight': 0.01}

Reference:
    Dong et al., "Adversarial Distributional Training for Robust Deep Learning",
    NeurIPS 2020, Sec. 5.3 (the effect of lambda).
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from adt_tf import data as data_lib
from adt_tf import validation
from adt_tf.attacks import pgd
from adt_tf.methods import get_method
from adt_tf.training import TrainConfig, _probe_classifier, build_trainer

OBJECTIVE_NAME = "val_robust_accuracy"
CLEAN_NAME = "val_clean_accuracy"
ENTROPY_NAME = "entropy"  # the epoch mean of the methods' own `entropy` tracker
PAPER_LAMBDAS = (0.0, 0.001, 0.01, 0.1, 1.0)  # Fig. 5 of the paper


def objective() -> kt.Objective:
    """The search objective: PGD-k robust accuracy on the validation split, maximised."""
    return kt.Objective(OBJECTIVE_NAME, direction="max")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The values of lambda (`entropy_weight`) a search may pick.

    The default is the paper's grid {0, 0.001, 0.01, 0.1, 1.0}: log-spaced from `lambda_min`
    to `lambda_max` with `points_per_decade` values per factor of 10, plus 0. A Choice over
    these ordered values serves every tuner: grid search enumerates them, random search draws
    one per decade as often as 0, and Bayesian optimisation models them by their rank, that
    is on a log scale.

    Args:
        lambda_min, lambda_max: the smallest and largest positive lambda (0 < min <= max).
        points_per_decade: values per factor of 10 (1 gives 0.001, 0.01, ...).
        include_zero: add lambda = 0 (no entropy term) as a choice.
        values: an explicit list of lambdas (each >= 0), used instead of the range.
    """

    lambda_min: float = 1e-3
    lambda_max: float = 1.0
    points_per_decade: int = 1
    include_zero: bool = True
    values: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.values is not None:
            if len(self.values) == 0:
                raise ValueError("values must list at least one lambda, got an empty list.")
            for v in self.values:
                validation.check_non_negative(v, "lambda values")
            return
        low = validation.check_positive(self.lambda_min, "lambda_min")
        high = validation.check_positive(self.lambda_max, "lambda_max")
        if high < low:
            raise ValueError(f"lambda_max must be >= lambda_min = {low!r}, got {high!r}.")
        validation.check_positive_int(self.points_per_decade, "points_per_decade")

    def lambdas(self) -> tuple[float, ...]:
        """The sorted distinct lambdas to choose from."""
        if self.values is not None:
            return tuple(sorted({float(v) for v in self.values}))
        low, high = math.log10(self.lambda_min), math.log10(self.lambda_max)
        n = max(1, round((high - low) * self.points_per_decade)) + 1 if high > low else 1
        grid = {float(f"{10 ** e:.3g}") for e in np.linspace(low, high, n)}
        return tuple(sorted(grid | ({0.0} if self.include_zero else set())))


# How each constructor argument is searched: name -> function(hp, space) -> value.
# Discrete ordered choices around the reference defaults: every tuner (grid included) can
# use them, and the table of trials stays readable.
KNOBS: dict[str, Callable[[kt.HyperParameters, SearchSpace], Any]] = {
    "entropy_weight": lambda hp, s: hp.Choice("entropy_weight", list(s.lambdas())),
    "trades_beta": lambda hp, s: hp.Choice("trades_beta", [1.0, 3.0, 6.0, 9.0], default=6.0),
    "alp_weight": lambda hp, s: hp.Choice("alp_weight", [0.1, 0.3, 0.5, 1.0], default=0.5),
    "adv_weight": lambda hp, s: hp.Choice("adv_weight", [0.1, 0.3, 0.5, 0.7], default=0.3),
    "inner_lr": lambda hp, s: hp.Choice("inner_lr", [0.03, 0.1, 0.3, 1.0], default=0.3),
    "inner_steps": lambda hp, s: hp.Choice("inner_steps", [1, 3, 5, 7, 10], default=7),
    "mc_samples": lambda hp, s: hp.Choice("mc_samples", [1, 2, 5, 10], default=5),
    "attack_steps": lambda hp, s: hp.Choice("attack_steps", [3, 5, 7, 10], default=10),
    "generator_lr": lambda hp, s: hp.Choice("generator_lr", [5e-5, 2e-4, 1e-3], default=2e-4),
    "encoder_lr": lambda hp, s: hp.Choice("encoder_lr", [5e-5, 2e-4, 1e-3], default=2e-4),
    "tau": lambda hp, s: hp.Choice("tau", [0.0, 0.5, 0.9, 1.5], default=0.9),
}

# What each method searches: (always, on request). Arguments a method's constructor lacks
# (e.g. trades_beta of an adt_exp without the TRADES loss) are left out; names of methods
# not registered on this branch are ignored.
METHOD_KNOBS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "standard": ((), ()),
    "adt_exp": (("entropy_weight",), ("inner_lr", "inner_steps", "mc_samples", "trades_beta")),
    "adt_exp_am": (("entropy_weight",), ("generator_lr",)),
    "adt_imp_am": (("entropy_weight",), ("generator_lr", "encoder_lr", "tau")),
    "pgd_at": ((), ("attack_steps",)),
    "trades": (("trades_beta",), ("attack_steps",)),
    "alp": (("alp_weight",), ("attack_steps",)),
    "fgsm_at": (("adv_weight",), ()),
}


def _constructor_args(method: str) -> set[str]:
    return set(inspect.signature(get_method(method).__init__).parameters)


def searchable_knobs(method: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(primary, optional) knobs of a registered method that its constructor accepts."""
    args = _constructor_args(method)  # ValueError for an unknown method
    default = (("entropy_weight",) if "entropy_weight" in args else (), ())
    primary, optional = METHOD_KNOBS.get(method, default)
    return (tuple(k for k in primary if k in args), tuple(k for k in optional if k in args))


def knobs_to_search(method: str, tune: Sequence[str] = ()) -> tuple[str, ...]:
    """The knobs a search over `method` uses: its primary ones plus those asked for."""
    primary, optional = searchable_knobs(method)
    for name in tune:
        if name not in optional and name not in primary:
            raise ValueError(f"Cannot tune {name!r} for method {method!r}; it can tune: "
                             f"{', '.join(primary + optional) or 'nothing'}.")
    return primary + tuple(k for k in optional if k in tune and k not in primary)


def split_validation(splits: data_lib.Splits, val_examples: int, seed: int = 0
                     ) -> data_lib.Splits:
    """Holds out `val_examples` random training examples as the validation split.

    Returns a `Splits` whose train arrays are the rest of the training set and whose test
    arrays are the held-out examples (the real test split is not used by a search).
    """
    n = len(splits.x_train)
    val_examples = validation.check_positive_int(val_examples, "val_examples")
    if val_examples >= n:
        raise ValueError(f"val_examples must be smaller than the training set ({n} examples) "
                         f"so that some are left to train on, got {val_examples}.")
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:val_examples]), np.sort(order[val_examples:])
    return data_lib.Splits(splits.x_train[train], splits.y_train[train],
                           splits.x_train[val], splits.y_train[val], splits.info)


class RobustAccuracyCallback(keras.callbacks.Callback):
    """Sets `logs['val_robust_accuracy']` and `logs['val_clean_accuracy']` every epoch.

    Robust accuracy is the fraction of the fixed validation inputs classified correctly both
    clean and under PGD-k (L-inf, step epsilon/4, uniform random start, a fixed seed), on
    `model.classifier` (the bare classifier of a method; the model itself otherwise). Put it
    before the callbacks that read these logs (keras-tuner's, History).

    Mathematical details:
        A_rob = (1/N) sum_i 1[f(x_i) = y_i and f(PGD_k(x_i)) = y_i], with PGD_k the
        per-example best of k steps x <- Proj_{B(x_i, eps) cap [0,1]}(x + eps/4 sign grad L)
        from a uniform random start (`adt_tf.attacks.pgd`). A search maximises A_rob of the
        best epoch of each trial: lambda* = argmax_lambda A_rob(theta_lambda).

    Example:
        >>> scorer = RobustAccuracyCallback(x_val, y_val, epsilon=8 / 255, steps=10)
        >>> trainer.fit(train_ds, epochs=5, callbacks=[scorer])  # logs val_robust_accuracy

    Args:
        x, y: validation images (uint8 or float in [0, 1]) and labels.
        epsilon: the L-inf budget.
        steps: PGD iterations k (10).
        batch_size: inputs per evaluation batch.
        seed: seed of the random start (the same every epoch).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, epsilon: float, steps: int = 10,
                 batch_size: int = 256, seed: int = 0):
        super().__init__()
        self.x, self.y = x, y
        self.epsilon = validation.check_epsilon(epsilon)
        self.steps = validation.check_positive_int(steps, "steps")
        self.batch_size = validation.check_positive_int(batch_size, "batch_size")
        self.seed = int(seed)

    def on_train_begin(self, logs=None):
        # Traced once per training (not once per epoch): the classifier is fixed during fit.
        classifier = getattr(self.model, "classifier", self.model)

        def predict(x, y):
            clean = tf.argmax(classifier(x, training=False), -1, output_type=tf.int32)
            x_adv = pgd(classifier, x, y, self.epsilon, steps=self.steps,
                        step_size=self.epsilon / 4, random_start=True, seed=self.seed)
            adv = tf.argmax(classifier(x_adv, training=False), -1, output_type=tf.int32)
            return clean, adv

        self._predict = tf.function(predict, reduce_retracing=True)

    def evaluate(self) -> tuple[float, float]:
        """(clean accuracy, robust accuracy) of the current model on the validation inputs."""
        if getattr(self, "_predict", None) is None:
            self.on_train_begin()
        clean_ok = robust_ok = 0
        for start in range(0, len(self.x), self.batch_size):
            x = self.x[start:start + self.batch_size]
            x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
            y = np.asarray(self.y[start:start + self.batch_size], np.int32)
            clean, adv = (p.numpy() for p in self._predict(tf.constant(x), tf.constant(y)))
            clean_ok += int(np.sum(clean == y))
            robust_ok += int(np.sum((clean == y) & (adv == y)))
        return clean_ok / len(self.x), robust_ok / len(self.x)

    def on_epoch_end(self, epoch, logs=None):
        clean, robust = self.evaluate()
        if logs is not None:
            logs[CLEAN_NAME] = clean
            logs[OBJECTIVE_NAME] = robust


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Fails the trial (keras-tuner goes on with the next) at the first NaN or inf loss."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise kt.errors.FailedTrialError(
                f"The training loss became {float(loss)} at step {batch + 1}; trial failed.")


class MethodHyperModel(kt.HyperModel):
    """Builds and trains a registered method with searched hyperparameters.

    The classifier, optimiser and schedule come from `config` (as `adt-train` builds them,
    through `adt_tf.training.build_trainer`); `config.method_params` holds the method's fixed
    arguments, and the searched ones (see `knobs_to_search`) override them. Training uses the
    training set minus a held-out validation split, on which `RobustAccuracyCallback` computes
    the objective after every epoch.

    Every trial starts from the same seed (the same initial weights, data order and noise:
    common random numbers, so trials differ by their hyperparameters only); the e-th execution
    of a trial (`executions_per_trial`) uses seed `config.seed + e`.

    Args:
        config: the training settings; `config.epochs` is the default epochs per trial.
        splits: the dataset; its test arrays are not used.
        space: the lambda values to choose from.
        tune: optional knobs to search besides the method's primary ones.
        val_examples: size of the validation split held out of the training set.
        val_pgd_steps: k of the PGD-k objective.
    """

    def __init__(self, config: TrainConfig, splits: data_lib.Splits,
                 space: SearchSpace | None = None, tune: Sequence[str] = (),
                 val_examples: int = 512, val_pgd_steps: int = 10, name: str | None = None):
        super().__init__(name=name, tunable=True)
        config.validate()
        if config.norm != "linf":
            raise ValueError(f"The lambda search runs under --norm=linf only (its validation "
                             f"PGD is L-infinity), got --norm={config.norm}.")
        epsilon = (validation.check_epsilon(config.epsilon) if config.epsilon is not None
                   else splits.info.epsilon)
        self.config = dataclasses.replace(config, epsilon=epsilon)
        self.space = space if space is not None else SearchSpace()
        self.knobs = knobs_to_search(config.method, tune)
        self.val_pgd_steps = validation.check_positive_int(val_pgd_steps, "val_pgd_steps")
        self.splits = split_validation(splits, val_examples, config.seed)
        self.execution = 0  # set by the tuner before each execution of a trial
        self.fixed_params = {k: v for k, v in config.method_params.items()
                             if k not in self.knobs}
        # The fixed arguments fail here, not in the first trial (the probe is adt-train's).
        get_method(config.method)(_probe_classifier(), epsilon=epsilon, **self.fixed_params)

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
        return self.config.seed + self.execution

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        keras.utils.set_random_seed(self.seed)
        config = dataclasses.replace(self.config, seed=self.seed,
                                     method_params=self.method_params(hp))
        steps = math.ceil(len(self.splits.x_train) / config.batch_size)
        return build_trainer(config, self.splits, steps)

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        if args:
            raise TypeError("MethodHyperModel trains on the data it was given; pass no "
                            f"positional arguments to search(), got {len(args)}.")
        kwargs.setdefault("epochs", self.config.epochs)
        first_epoch = kwargs.get("initial_epoch", 0)  # Hyperband continues trials
        train_ds = data_lib.make_dataset(
            self.splits.x_train, self.splits.y_train, self.config.batch_size, training=True,
            augment=self.splits.info.augment, seed=self.seed, first_epoch=first_epoch,
            num_epochs=max(kwargs["epochs"] - first_epoch, 1))
        kwargs.setdefault("steps_per_epoch",
                          math.ceil(len(self.splits.x_train) / self.config.batch_size))
        scorer = RobustAccuracyCallback(
            self.splits.x_test, self.splits.y_test, self.config.epsilon,
            steps=self.val_pgd_steps, batch_size=self.config.eval_batch_size,
            seed=self.config.seed)
        kwargs.setdefault("verbose", self.config.verbose)
        # The scorer goes first, so that keras-tuner's callbacks and History see its logs.
        callbacks = [FailOnNonFiniteLoss(), scorer] + list(callbacks or [])
        return model.fit(train_ds, callbacks=callbacks, shuffle=False, **kwargs)


class _ExecutionSeeds:
    """Tuner mixin: tells the hypermodel which execution of a trial is about to run."""

    def _build_and_fit_model(self, trial, *args, **kwargs):
        counts = self.__dict__.setdefault("_executions_started", collections.Counter())
        self.hypermodel.execution = counts[trial.trial_id]
        counts[trial.trial_id] += 1
        return super()._build_and_fit_model(trial, *args, **kwargs)


TUNERS: dict[str, type[kt.Tuner]] = {
    name: type(f"Seeded{cls.__name__}", (_ExecutionSeeds, cls), {})
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
    validation.check_choice(kind, "tuner", TUNERS)
    max_trials = validation.check_positive_int(max_trials, "max_trials")
    executions = validation.check_positive_int(executions_per_trial, "executions_per_trial")
    common = dict(
        objective=objective(), executions_per_trial=executions, directory=directory,
        project_name=project_name, overwrite=overwrite, distribution_strategy=strategy,
        seed=hypermodel.config.seed if seed is None else seed)
    if kind == "hyperband":
        epochs = hypermodel.config.epochs if max_epochs is None else max_epochs
        tuner = TUNERS[kind](hypermodel, max_epochs=validation.check_positive_int(
            epochs, "max_epochs"), factor=validation.check_positive_int(
            hyperband_factor, "hyperband_factor", minimum=2), **common)
        tuner.oracle.max_trials = max_trials  # its oracle takes none; it honours the attribute
        return tuner
    return TUNERS[kind](hypermodel, max_trials=max_trials, **common)


__all__ = ["KNOBS", "METHOD_KNOBS", "OBJECTIVE_NAME", "PAPER_LAMBDAS", "TUNERS",
           "MethodHyperModel", "RobustAccuracyCallback", "SearchSpace", "build_tuner",
           "knobs_to_search", "objective", "searchable_knobs", "split_validation"]
